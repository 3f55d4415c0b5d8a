/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The jailer: every VMM process starts through it.  Modelled on
 * Firecracker's jailer and bubblewrap.  The VM boundary is the first wall;
 * the jail is the wall behind it, for the day a guest breaks out of the VMM.
 *
 * A jailed process runs:
 *   - in new mount, PID, IPC, UTS and network namespaces (plus a user
 *     namespace when luminaguard is not root);
 *   - under pivot_root into a tmpfs that holds only the program, its
 *     libraries, the files named in the spec (read-only, at their host
 *     paths), /dev/null, /dev/urandom, /dev/kvm and /dev/fd when asked for,
 *     and one small writable directory (JAIL_RUN_DIR);
 *   - in a cgroup of its own with memory, pids and CPU limits (v1 or v2);
 *   - with rlimits, no capabilities, no_new_privs, a cleared environment, its
 *     own session, only the fds the spec names, as an unprivileged uid/gid
 *     of its own (one per VM when luminaguard is root);
 *   - with a fresh, empty session keyring of its own;
 *   - under the jail's seccomp floor (no vsock, no user namespaces, no
 *     mounts, no keyrings: at every level, --seccomp off included) and the
 *     seccomp allowlist of its VMM kind, installed right before exec.
 * Once privileges start dropping, any failure kills the child: nothing ever
 * runs half-jailed.  The parent reports the failing step in one line.
 */
#ifndef LG_JAIL_JAIL_H
#define LG_JAIL_JAIL_H

#include "common/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum lg_seccomp_level {
	LG_SECCOMP_STRICT = 0, /* default: a syscall outside the list kills the VMM */
	LG_SECCOMP_LOG,	       /* outside the list is allowed and logged (building the list) */
	LG_SECCOMP_OFF,	       /* no filter (debugging; warns) */
};

/* What the user chose.  The zero value is the default: jailed, strict. */
struct jail_opts {
	bool disabled; /* --no-jail: debugging only; callers warn */
	enum lg_seccomp_level seccomp;
	/* Per-VM uids when root: [uid_first, uid_last]; 0/0 = the default range. */
	uid_t uid_first, uid_last;
};

#define JAIL_DEFAULT_UID_FIRST 2100000000u /* far above any distribution's users */
#define JAIL_DEFAULT_UID_LAST  2100065535u
#define JAIL_RUN_DIR	       "/run/vm" /* the jail's one writable directory */
#define JAIL_MAX_FDS	       8

struct jail_spec {
	const char *name;     /* short, [a-zA-Z0-9._-]: cgroup and log name */
	const char *vmm_kind; /* seccomp profile: "qemu", or "none" for tests */
	const char *binary;   /* host path of the program; it and its libraries are mounted */
	char *const *argv;    /* argv[0] included; paths in it are jail paths = host paths */
	const char *const
	    *files; /* extra host files, read-only at the same path; NULL-terminated */
	/*
	 * Host files bound writable at the same path (NULL-terminated; NULL =
	 * none): the RAM file a snapshot's own VM writes (share=on) while it
	 * is made.  A restore's RAM never is one (see dev_fd).
	 */
	const char *const *rw_files;
	/*
	 * Shared objects the program dlopen()s (QEMU's accel-tcg module):
	 * mounted like files but executable, and their libraries too.
	 * NULL-terminated; NULL = none.
	 */
	const char *const *modules;
	bool dev_kvm; /* expose /dev/kvm (accelerator KVM) */
	/*
	 * Expose the program's own fds at /dev/fd (so pass_fds[i] is
	 * /dev/fd/<3 + i>), for a program that only takes a path where we
	 * hand it an fd: QEMU 7.2's memory-backend-file opens mem-path
	 * O_RDWR, and a restore gives it a sealed memfd (docs/snapshots.md).
	 * The jail has no /proc, and a memfd cannot itself be bound into
	 * the new root (it lives on the kernel's internal shm mount, which
	 * mount(MS_BIND) and open_tree refuse with EINVAL), so the child
	 * binds its own /proc/self/fd directory there: nothing of /proc
	 * but the process's own fd table, whose entries reopen with the
	 * permissions of their inodes and the flags of their mounts.
	 * Ignored unjailed, where /dev/fd is the host's.
	 */
	bool dev_fd;
	/* Passed fds: pass_fds[i] becomes fd 3 + i in the jailed program. */
	const int *pass_fds;
	size_t n_pass_fds;
	int stderr_fd; /* becomes fd 2; -1 = /dev/null.  fds 0 and 1 are /dev/null. */
	/* Limits (0 = none). */
	uint64_t memory_bytes;	      /* cgroup memory limit */
	unsigned pids_max;	      /* cgroup pids limit */
	unsigned cpus;		      /* CPU quota in whole CPUs */
	uint64_t fsize_bytes;	      /* RLIMIT_FSIZE */
	unsigned nofile;	      /* RLIMIT_NOFILE; 0 = 1024 */
	const struct jail_opts *opts; /* NULL = defaults */
};

struct jail;

/*
 * Starts spec->argv jailed (or unjailed if opts->disabled: then only fds,
 * environment, rlimits and seccomp apply).  Forks on the keeper thread, so
 * PDEATHSIG means "luminaguard died".  Returns 0 once the program is
 * exec'd, or <0 with a one-line error naming the failing step; on failure
 * nothing is left behind (process, cgroup, uid).
 */
int jail_spawn(const struct jail_spec *spec, struct jail **out, struct lg_err **err);

/* The jailed process as the host sees it (the caller waits for it). */
pid_t jail_pid(const struct jail *j);

/*
 * Why the process died, from its wait status: "VMM killed by seccomp:
 * syscall NAME", "VMM killed: out of memory (cgroup limit N MiB)", or NULL
 * when there is nothing more to say than the status.  New string.  Call
 * after the process was reaped and before jail_release().
 */
char *jail_explain_exit(struct jail *j, int wait_status);

/*
 * After the process was reaped: kills whatever is left in its cgroup,
 * removes the cgroup, gives the uid back.  NULL ok.
 */
void jail_release(struct jail *j);

/*
 * What the jail can do here, one line per fact ("jail: ..."), for
 * `luminaguard doctor`; runs /bin/true jailed to prove it.  *usable: can a
 * VMM start jailed here?  New string.
 */
char *jail_describe_host(bool *usable);

int lg_seccomp_level_parse(const char *s, enum lg_seccomp_level *out);
const char *lg_seccomp_level_name(enum lg_seccomp_level l);

#endif
