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

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

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
	 * Network.  NULL and !net_port: the VM gets no network port at all.
	 * net: the port, and egress through an allowlist from the start.
	 * net_port without net: the port, with every guest connection refused
	 * until lg_sandbox_set_net() (a pooled or snapshot VM, whose claimer's
	 * allowlist is not known yet).  Copied; the sandbox owns its egress.
	 */
	const struct lg_sandbox_net *net;
	bool net_port;
	/*
	 * The budget this VM is counted in (borrowed, must outlive the
	 * sandbox), or NULL for none: a create over it fails before anything
	 * boots, and destroy gives the VM's share back.
	 */
	struct lg_admission *admission;
	/* Called once with a note about the accelerator choice (e.g. PVM -> TCG). */
	void (*on_note)(const char *note);
	/*
	 * A snapshot directory from lg_snapshot_ensure() (host/snapshot.h) for
	 * these same options: restore from it instead of booting.  It must
	 * match them (image, kernel, cpus, memory, layer, accel, backend,
	 * VMM): a restore checks first and fails with -ESTALE and a one-line
	 * error, never half-loads.  A snapshot's VM has the network port
	 * (with nothing attached), so a restore may take net or net_port.
	 */
	const char *snapshot;
	/*
	 * The guest's hostname (lg_hostname_valid), set with ADOPT once the
	 * agent answers.  NULL: a restore gets "lg-" and 8 random hex digits,
	 * a boot keeps the image's ("luminaguard") and sends no ADOPT.
	 */
	const char *hostname;
};

/* Opaque: front ends and the service use the functions below. */
struct lg_sandbox;

/*
 * A sandbox's egress (net/egress.h): the allowlist, and who decides about
 * and hears of the guest's connections.  ask and log are lg_egress's
 * callbacks (for front ends: approval/gate_net.h's lg_gate_net_ask and
 * lg_gate_net_log); ask NULL refuses what is not on the allowlist.
 * ctx must outlive the sandbox (or be closed first, see
 * lg_gate_net_close): the proxy's threads are joined in destroy.
 */
struct lg_sandbox_net {
	const char *allow; /* allowlist text (lg_allowlist_parse); "" or NULL: empty */
	bool (*ask)(void *ctx, const char *host, uint16_t port);
	void (*log)(void *ctx, const struct lg_egress_event *ev);
	void *ctx;
};

#define LG_DEFAULT_MEMORY_MIB 256u
#define LG_DEFAULT_DISK_MIB   256u

int lg_sandbox_create(const struct lg_sandbox_opts *o, struct lg_sandbox **out,
		      struct lg_err **err);

/*
 * Makes a pooled or restored sandbox its claimer's before any command of
 * theirs runs (lg_agent_adopt): a fresh RNG seed reseeded into the guest's
 * CRNG, its clock stepped to the host's, the hostname (NULL: "lg-" and 8
 * random hex digits) and a new /etc/machine-id where the root is writable.
 * -EOPNOTSUPP with a one-line error naming the image's rebuild command
 * when its agent predates protocol 4.
 */
int lg_sandbox_adopt(struct lg_sandbox *sb, const char *hostname, struct lg_err **err);

/*
 * Gives a sandbox booted with net_port and no net yet its network, once,
 * before any command of its claimer runs: net non-NULL attaches egress
 * with that allowlist; NULL closes the port for good (the guest's
 * forwarder exits; the sandbox has no way out).  -EINVAL (bad allowlist,
 * already set, no port) with a one-line error.
 */
int lg_sandbox_set_net(struct lg_sandbox *sb, const struct lg_sandbox_net *net,
		       struct lg_err **err);

/* Read-only facts about a sandbox. */
pid_t lg_sandbox_pid(const struct lg_sandbox *sb);	  /* the VMM's, 0 once gone */
int lg_sandbox_exit_fd(const struct lg_sandbox *sb);	  /* readable once the VMM exits; -1 */
uint64_t lg_sandbox_boot_ms(const struct lg_sandbox *sb); /* spawn to ready */
bool lg_sandbox_restored(const struct lg_sandbox *sb);
bool lg_sandbox_has_net(const struct lg_sandbox *sb); /* egress attached */
enum hv_accel lg_sandbox_accel(const struct lg_sandbox *sb);
const char *lg_sandbox_image_name(const struct lg_sandbox *sb);
struct lg_agent *lg_sandbox_agent(struct lg_sandbox *sb);

/*
 * What lg_sandbox_create would start for o, resolved (backend, accelerator,
 * image, VM configuration), for host/snapshot.c's key and builder.
 */
struct lg_sandbox_plan {
	const struct hv_backend *backend;
	enum hv_accel accel;
	struct lg_image *image;
	struct vm_config cfg; /* points into image */
};
int lg_sandbox_plan(const struct lg_sandbox_opts *o, struct lg_sandbox_plan *p,
		    struct lg_err **err);
void lg_sandbox_plan_free(struct lg_sandbox_plan *p);

/*
 * For host/snapshot.c: boots like lg_sandbox_create (o->snapshot, o->net
 * and o->egress must be NULL) with guest RAM written into ram_file
 * (share=on), a new file of the VM's RAM size, and always with the
 * network port (mux running, nothing attached), as net_port.
 */
int lg_sandbox_create_shared_ram(const struct lg_sandbox_opts *o, const char *ram_file,
				 struct lg_sandbox **out, struct lg_err **err);
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
 * none; with egress attached, the proxy variables (http_proxy, ...) too,
 * under the image's.
 */
int lg_sandbox_exec(struct lg_sandbox *sb, const struct lg_exec_opts *o, struct lg_exec_result *res,
		    struct lg_err **err);

#endif
