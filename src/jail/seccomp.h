/* SPDX-License-Identifier: Apache-2.0 */
/*
 * seccomp allowlists for VMM processes.  One reviewed file per VMM kind
 * (seccomp_qemu.c) lists the syscalls, grouped, each group saying where
 * it comes from.  The filter is compiled with libseccomp in the parent
 * (libseccomp allocates, which a child between fork and exec must not) and
 * installed by the jailed child with one async-signal-safe syscall.
 */
#ifndef LG_JAIL_SECCOMP_H
#define LG_JAIL_SECCOMP_H

#include "common/err.h"
#include "jail/jail.h"

#include <linux/filter.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * One entry of an allowlist.  Several entries may name the same syscall
 * with different conditions: any one that matches applies.
 */
struct lg_sc_rule {
	const char *name; /* as libseccomp knows it */
	/* 0: allow.  >0: the call fails with this errno (it does not kill). */
	int err;
	/* -1: any arguments.  0..5: only when (args[arg] & mask) == value. */
	int arg;
	unsigned long long mask, value;
};

struct lg_sc_profile {
	const char *vmm_kind;
	const struct lg_sc_rule *rules;
	size_t n_rules;
};

extern const struct lg_sc_profile lg_sc_profile_qemu;

/* The profile of a VMM kind, or NULL.  "none" has no profile. */
const struct lg_sc_profile *lg_sc_profile_find(const char *vmm_kind);

/*
 * Compiles the profile at `level` to a BPF program (prog->filter is
 * malloc'd; free with lg_seccomp_prog_free).  LG_SECCOMP_OFF gives an
 * empty program (len 0).  The default action is KILL_PROCESS (strict) or
 * LOG (log).  The program also allows execve, for the jail's own exec.
 */
int lg_seccomp_compile(const struct lg_sc_profile *p, enum lg_seccomp_level level,
		       struct sock_fprog *prog, struct lg_err **err);
void lg_seccomp_prog_free(struct sock_fprog *prog);

/*
 * The jail's floor: a small filter every jailed process gets, at every
 * level, --seccomp off included (that option turns off a VMM kind's
 * allowlist, not the jail).  It allows everything except what no VMM
 * needs and a jail must refuse regardless, which fails with EPERM:
 * socket(AF_VSOCK) (vsock is not namespaced: it would reach the host's
 * and other VMs' vsock services), unshare and clone with CLONE_NEWUSER
 * (a user namespace gives back every capability inside it, and with them
 * mount and the rest of the kernel's namespaced attack surface), mount,
 * umount2, pivot_root and the new mount API, keyctl, add_key and
 * request_key (the kernel keyrings are shared with the host, by uid and
 * by session).  clone3 fails with ENOSYS (its flags are in memory, where
 * BPF cannot look; libc falls back to clone).  Another ABI (i386, x32)
 * kills, as in the allowlists: the floor is written for x86_64 numbers.
 */
int lg_seccomp_compile_floor(struct sock_fprog *prog, struct lg_err **err);

/* In the child, right before exec: async-signal-safe.  0 or -errno.  len 0 = nothing. */
int lg_seccomp_install(const struct sock_fprog *prog);

/*
 * The kernel's audit records (/dev/kmsg) name the syscall that seccomp
 * killed or logged.  Open a watch before the process starts; after it
 * died, lg_seccomp_watch_killer() finds the record for its pid.
 */
struct lg_seccomp_watch;
/* NULL when /dev/kmsg cannot be read (non-root with dmesg_restrict): then no names. */
struct lg_seccomp_watch *lg_seccomp_watch_open(void);
/* The syscall name that killed pid ("ptrace"), or "#NR"; NULL if no record.  New string. */
char *lg_seccomp_watch_killer(struct lg_seccomp_watch *w, pid_t pid);
/* Names of the syscalls logged (level log) for pid, ", "-joined; NULL if none.  New string. */
char *lg_seccomp_watch_logged(struct lg_seccomp_watch *w, pid_t pid);
void lg_seccomp_watch_close(struct lg_seccomp_watch *w);

/* One seccomp audit record (type 1326) from the kernel. */
struct lg_sc_record {
	pid_t pid;	 /* host-visible thread group id */
	uint32_t arch;	 /* AUDIT_ARCH_* */
	int nr;		 /* syscall number in arch */
	uint32_t action; /* SECCOMP_RET_ACTION_FULL part of code= */
};

/*
 * Parses one /dev/kmsg record ("PRI,SEQ,TS,FLAGS;audit: type=1326 ...").
 * Only records the kernel itself wrote count (facility 0: userspace writes
 * to /dev/kmsg cannot claim it), and fields are taken from positions an
 * unprivileged process cannot shift (see seccomp.c).  0, or -EINVAL when
 * the record is not a well-formed seccomp record.
 */
int lg_seccomp_record_parse(const char *rec, size_t len, struct lg_sc_record *out);

#endif
