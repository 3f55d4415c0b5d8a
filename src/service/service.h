/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox service: the one owner of every sandbox of a process, under
 * every front end (CLI, MCP, the HTTP API of `luminaguard serve`).
 *
 *   front ends (cmd_run, mcp/, serve/) -> service (registry, admission,
 *   warm pools, snapshots, the VMM watcher) -> sandbox (VM + agent + its
 *   egress) -> hv backend
 *
 * A registered sandbox ("entry") has an id ("sb-" and 12 hex digits, from
 * getrandom), an owner, a state, and the VM.  Front ends take an entry with
 * lg_service_get(), which serializes agent requests on it (one at a time)
 * and keeps it alive, and give it back with lg_service_put().
 *
 * Owners: an entry created with a non-NULL `owner` key (an MCP session) is
 * seen only through that key; lookups with owner NULL (the control socket
 * and the API, which act for the user who runs the service) see every
 * entry.  Pooled sandboxes are in no registry until claimed, and a claimed
 * one never goes back to a pool.
 *
 * Every VM, pooled ones included, is counted in the service's admission
 * budget.  A VMM that exits under a live entry (crash, seccomp kill, OOM)
 * is noticed by the watcher through the backend's exit_fd within a second:
 * the entry becomes "lost" with the reason, and stays listed until it is
 * destroyed.
 */
#ifndef LG_SERVICE_SERVICE_H
#define LG_SERVICE_SERVICE_H

#include "common/err.h"
#include "common/metrics.h"
#include "host/admission.h"
#include "host/sandbox.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct lg_service;
struct lg_entry;

/* `--pool IMAGE[:CPUS:MIB]=N`: keep N sandboxes of this shape booted and ready. */
struct lg_pool_spec {
	char image[64];
	unsigned cpus;	     /* 0 in the text: 1 */
	uint64_t memory_mib; /* 0 in the text: LG_DEFAULT_MEMORY_MIB */
	unsigned size;	     /* 1..LG_POOL_MAX_SIZE */
};
#define LG_POOL_MAX_SIZE 64u
#define LG_POOL_MAX	 8u /* pools per service */

/* Parses one --pool value; -EINVAL with a one-line *err. */
int lg_pool_spec_parse(const char *text, struct lg_pool_spec *out, struct lg_err **err);

/*
 * What the service does with VMs.  NULL in the options means the real one
 * (lg_sandbox_create and friends); unit tests pass a fake so that the
 * registry, admission, pools and the watcher run without VMs.
 */
struct lg_service_vm_ops {
	int (*create)(const struct lg_sandbox_opts *o, struct lg_sandbox **out,
		      struct lg_err **err);
	void (*destroy)(struct lg_sandbox *sb);
	int (*kill)(struct lg_sandbox *sb);
	/* Polls readable once the VMM has exited; -1 if it cannot tell. */
	int (*exit_fd)(const struct lg_sandbox *sb);
	/*
	 * Makes a pooled or restored sandbox the claimer's: a fresh RNG seed,
	 * the clock stepped to now, its own hostname.  May be NULL.
	 */
	int (*adopt)(struct lg_sandbox *sb, const char *hostname, struct lg_err **err);
	/*
	 * A valid snapshot directory for sandboxes made with o, built when
	 * missing or stale (*dir: new string).  NULL: this backend cannot.
	 */
	int (*snapshot)(const struct lg_sandbox_opts *o, char **dir, struct lg_err **err);
	/*
	 * Runs a first command in a new pooled VM before it waits in the
	 * pool, so that the claimer's first command does not pay for the
	 * guest's cold caches (under TCG: translating the exec path afresh).
	 * May be NULL.
	 */
	int (*warm)(struct lg_sandbox *sb, struct lg_err **err);
	/*
	 * Gives a sandbox started with net_port its claimer's network (NULL:
	 * none, the port closed for good).  May be NULL (fakes).
	 */
	int (*set_net)(struct lg_sandbox *sb, const struct lg_sandbox_net *net,
		       struct lg_err **err);
	/* The VMM's pid, for listings; may be NULL. */
	pid_t (*pid)(const struct lg_sandbox *sb);
};

struct lg_service_opts {
	const char *default_image; /* NULL: "default" */
	const char *backend;	   /* NULL: the default backend */
	enum hv_accel accel;
	const struct jail_opts *jail; /* NULL: jailed, seccomp strict; borrowed */
	struct lg_admission_limits limits;
	unsigned idle_timeout_s; /* entries nobody used this long are destroyed; 0 = never */
	const struct lg_pool_spec *pools; /* copied */
	size_t n_pools;
	/* Restore pool refills (and cold creates) from snapshots where the backend can. */
	bool snapshots;
	const struct lg_service_vm_ops *vm_ops; /* NULL: real VMs */
	/* A pool grown by misses shrinks back one VM per this long without one; 0: 30 s. */
	unsigned pool_decay_ms;
};

int lg_service_new(const struct lg_service_opts *o, struct lg_service **out, struct lg_err **err);
/* Destroys every entry and pooled sandbox, then frees the service. */
void lg_service_free(struct lg_service *s);

/* The service's registry, with the standard families registered (docs/metrics.md). */
struct lg_metrics *lg_service_metrics(struct lg_service *s);
const struct lg_metrics_standard *lg_service_std(struct lg_service *s);
/* The metrics as text format 0.0.4 with the gauges brought up to date.  New string. */
char *lg_service_metrics_render(struct lg_service *s);

struct lg_create_req {
	const char *image; /* NULL: the service's default */
	unsigned cpus;	   /* 0: 1 */
	uint64_t memory_mib;
	uint64_t disk_mib;
	const void *owner;	 /* NULL: owned by the user (API, CLI); else e.g. an MCP session */
	const char *owner_name;	 /* shown in listings: "api", "cli", "mcp" */
	const char *request_id;	 /* for log lines; may be NULL */
	unsigned idle_timeout_s; /* 0: the service's; LG_IDLE_NEVER: never reaped */
	/*
	 * The sandbox's network (allowlist and who decides), or NULL for none.
	 * Copied; net->ctx is borrowed until on_free runs (close it in
	 * on_close: lg_gate_net_close).  Pooled and restored VMs start with
	 * the network port and nothing behind it: the claimer's allowlist is
	 * attached when it claims, so a create with network takes a pooled
	 * sandbox like any other.  A bad allowlist is -EINVAL before anything
	 * is taken or booted.
	 */
	const struct lg_sandbox_net *net;
	/*
	 * Front-end data kept with the entry: on_close when it is going away,
	 * on_free after; on_lost once, when its VM is found gone (from the
	 * watcher's thread or the one whose request found it), while the
	 * entry is still held, so front stays valid through it.
	 */
	void *front;
	void (*on_close)(void *front);
	void (*on_free)(void *front);
	void (*on_lost)(void *front, const char *id, const char *why);
	int cancel_fd; /* readable = give up the boot; -1 */
};

#define LG_IDLE_NEVER (~0u)

/* The path a sandbox came by; also the spawn_seconds label. */
enum lg_spawn_path { LG_PATH_POOL, LG_PATH_RESTORE, LG_PATH_BOOT };
const char *lg_spawn_path_name(enum lg_spawn_path p);

/*
 * Creates and registers a sandbox: a pooled one if one of the same shape is
 * ready, else a restore or a boot.  On success *out is held (as by
 * lg_service_get) and must be given back with lg_service_put.  On failure
 * req->on_free has run.  -EAGAIN: over the admission budget.
 */
int lg_service_create(struct lg_service *s, const struct lg_create_req *req, struct lg_entry **out,
		      struct lg_err **err);

/* Takes an entry (owner NULL: any) and its op lock; NULL if there is none. */
struct lg_entry *lg_service_get(struct lg_service *s, const char *id, const void *owner);
void lg_service_put(struct lg_service *s, struct lg_entry *e);

/* On a held entry: */
const char *lg_entry_id(const struct lg_entry *e);
/* The VM, or NULL once lost. */
struct lg_sandbox *lg_entry_sandbox(struct lg_entry *e);
void *lg_entry_front(struct lg_entry *e);
enum lg_spawn_path lg_entry_path(const struct lg_entry *e);
uint64_t lg_entry_spawn_ms(const struct lg_entry *e);
void lg_entry_mark_dirty(struct lg_service *s, struct lg_entry *e);
/*
 * Records that e's VM is gone (the first reason wins) and destroys the VM;
 * the entry stays, "lost", until lg_service_destroy.
 */
void lg_entry_mark_lost(struct lg_service *s, struct lg_entry *e, const char *why);
/* A copy of why e's VM is gone, or NULL while it runs. */
char *lg_entry_lost(struct lg_service *s, struct lg_entry *e);

/*
 * lg_sandbox_exec on a held entry, timed into luminaguard_exec_seconds; when
 * the agent fails (its VM is gone) the entry is marked lost.  o->request_id
 * reaches the command as LUMINAGUARD_REQUEST_ID.
 */
int lg_entry_exec(struct lg_service *s, struct lg_entry *e, const struct lg_exec_opts *o,
		  struct lg_exec_result *res, struct lg_err **err);

/* What the policy knows of an entry (-1 if none): unsaved work, a lost VM. */
int lg_service_facts(struct lg_service *s, const char *id, const void *owner, bool *dirty,
		     bool *lost);
/* Unregisters and destroys; -ENOENT if there is no such entry for owner. */
int lg_service_destroy(struct lg_service *s, const char *id, const void *owner);
/* Destroys every entry of owner (a closing MCP session); owner NULL: every entry. */
void lg_service_destroy_owned(struct lg_service *s, const void *owner);
/* Kills the VMs of owner's entries with an operation in flight (its client is gone). */
void lg_service_kill_busy(struct lg_service *s, const void *owner);
/* Kills the VM of entry id now (`luminaguard kill`): it is then lost. */
int lg_service_kill(struct lg_service *s, const char *id, const void *owner);

/*
 * The entries owner may see, as a JSON array of objects: id, state
 * ("ready", "busy", "lost"), image, cpus, memory_mib, disk_mib, owner
 * (owner_name), created_ms (realtime), age_s, idle_s, dirty, spawn_path,
 * spawn_ms, pid (of the VMM), and lost_reason when lost.  New reference.
 */
json_t *lg_service_list(struct lg_service *s, const void *owner);
/* One entry as in the list, or NULL. */
json_t *lg_service_describe(struct lg_service *s, const char *id, const void *owner);

/* The pools: one object per key (key, image, cpus, memory_mib, size, ready, booting, hits, misses).
 */
json_t *lg_service_pools(struct lg_service *s);

#endif
