/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A sandbox: one VM booted from an image, with its guest agent connected.
 * The unit the CLI (and later the MCP server) works with.
 */
#ifndef LG_HOST_SANDBOX_H
#define LG_HOST_SANDBOX_H

#include "common/err.h"
#include "host/admission.h"
#include "host/agent_client.h"
#include "hv/hv.h"
#include "net/egress.h"

struct lg_image;

struct lg_sandbox_opts {
	const char *image;   /* NULL: "default" */
	const char *backend; /* NULL: the default backend */
	enum hv_accel accel; /* AUTO resolves per host */
	unsigned cpus;	     /* 0: 1 */
	uint64_t memory_mib; /* 0: 256 */
	/*
	 * A root file system image's writable layer in MiB (0: 256).  It is a
	 * tmpfs in the guest, so it adds to the VM's RAM, its cgroup limit and
	 * its admission cost; initramfs images have no layer and ignore it.
	 */
	uint64_t disk_mib;
	int cancel_fd;	     /* readable = give up (signal pipe), or -1 */
	int console_fd;	     /* mirror the guest console here, or -1 */
	int boot_timeout_ms; /* 0: $LUMINAGUARD_BOOT_TIMEOUT seconds, else 120 s */
	/* How to jail the VMM; NULL = the defaults (jailed, seccomp strict). */
	const struct jail_opts *jail;
	/*
	 * Egress: NULL = the guest has no network.  Otherwise the guest gets the
	 * in-guest proxy and its connections are served by this (owned by the
	 * caller, must outlive the sandbox).
	 */
	struct lg_egress *egress;
	/*
	 * The budget this VM is counted in (borrowed, must outlive the
	 * sandbox), or NULL for none: a create over it fails before anything
	 * boots, and destroy gives the VM's share back.
	 */
	struct lg_admission *admission;
	/* Called once with a note about the accelerator choice (e.g. PVM -> TCG). */
	void (*on_note)(const char *note);
};

struct lg_sandbox {
	const struct hv_backend *backend;
	struct vm *vm;
	struct lg_agent *agent;
	enum hv_accel accel;
	uint64_t boot_ms;		/* spawn to agent HELLO */
	struct lg_netmux *net;		/* NULL without network */
	struct lg_admission *admission; /* holds .cost while non-NULL */
	struct lg_admission_cost cost;
	/* The image it booted; its "defaults" (env, workdir, user) apply to every exec. */
	struct lg_image *image;
};

#define LG_DEFAULT_MEMORY_MIB 256u
#define LG_DEFAULT_DISK_MIB   256u

int lg_sandbox_create(const struct lg_sandbox_opts *o, struct lg_sandbox **out,
		      struct lg_err **err);
/*
 * Powers the guest off through the agent if it still answers, then lets the
 * backend end the VMM; nothing of the sandbox remains afterwards.  NULL ok.
 */
void lg_sandbox_destroy(struct lg_sandbox *sb);

/*
 * Kills the sandbox's VMM now (the backend's kill op: through its pidfd,
 * never a bare pid).  For ending a command that must not finish, e.g. when
 * its client is gone: the call running in it then fails at once.  Callable
 * from any thread while the sandbox is not being destroyed; destroy still
 * has to run.  0, or -ESRCH when the VMM is gone already.
 */
int lg_sandbox_kill(struct lg_sandbox *sb);

/*
 * lg_agent_exec() with the image's defaults filled in: its environment
 * under o->env (o->env wins), its working directory and user when o has
 * none.
 */
int lg_sandbox_exec(struct lg_sandbox *sb, const struct lg_exec_opts *o, struct lg_exec_result *res,
		    struct lg_err **err);

#endif
