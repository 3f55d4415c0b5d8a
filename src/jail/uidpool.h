/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-VM uids when luminaguard runs as root, so that two VMs are two users
 * (no signals, ptrace or /proc access between them even if both jails
 * fail).  A uid is taken by holding an flock on <lockdir>/<uid> for the
 * VM's life; any number of luminaguard processes share the pool.
 */
#ifndef LG_JAIL_UIDPOOL_H
#define LG_JAIL_UIDPOOL_H

#include "common/err.h"

#include <sys/types.h>

#define LG_UIDPOOL_DIR "/run/luminaguard/uids"

struct lg_uid_lease {
	uid_t uid;   /* used as the gid too */
	int lock_fd; /* O_CLOEXEC, holds the flock */
	char *path;  /* NULL: no lease */
};

/*
 * Takes a free uid in [first, last] (lockdir NULL = LG_UIDPOOL_DIR, created
 * 0700 if missing; refused unless a real directory owned by root and
 * writable by nobody else).  Range 0 or (uid_t)-1: EINVAL; all taken:
 * EAGAIN with a one-line message.
 */
int lg_uid_acquire(const char *lockdir, uid_t first, uid_t last, struct lg_uid_lease *out,
		   struct lg_err **err);
/*
 * Removes the lock files nobody holds (lockdir NULL = LG_UIDPOOL_DIR), left
 * by luminaguard processes killed by SIGKILL: their flocks died with them,
 * so the uids are free already, but the files would pile up.  Each is
 * locked before it is unlinked, as lg_uid_release does, so a lease being
 * taken at the same moment is never removed.  Returns how many.
 */
int lg_uid_sweep_stale(const char *lockdir);

/* Gives it back: removes the lock file, closes it.  Safe on a zeroed lease. */
void lg_uid_release(struct lg_uid_lease *l);

#endif
