/* SPDX-License-Identifier: Apache-2.0 */
/*
 * EXEC's USER: a name or a decimal uid resolved in the guest's /etc/passwd
 * and /etc/group (no NSS: the agent is static).  These files come from the
 * image, which the user chose, and any root command in the sandbox may
 * rewrite them, so the parser treats them as hostile: bounded, no line
 * length limit, missing fields tolerated.  It runs in the guest only, and
 * there only in the forked child that is about to become the command, so
 * a parser bug cannot take PID 1 down (fuzz/fuzz_user.c fuzzes it anyway).
 */
#ifndef LG_GUEST_USER_H
#define LG_GUEST_USER_H

#include "common/err.h"

#include <stddef.h>
#include <sys/types.h>

/* Supplementary groups beyond this are left out: fewer groups, never more rights. */
#define USER_MAX_GROUPS 256
/* /etc/passwd or /etc/group larger than this is refused. */
#define USER_FILE_MAX (8u << 20)

struct guest_user {
	uid_t uid;
	gid_t gid;
	char *name; /* the passwd name, or the decimal uid when there is no entry */
	char *home; /* absolute; "/" when the entry has none */
	gid_t groups[USER_MAX_GROUPS]; /* gid first, then the groups listing name */
	size_t ngroups;
};

/*
 * Resolves spec in the given file contents (not NUL-terminated; group may
 * be NULL).  A spec of digits is a uid: its first passwd entry, or, when it
 * has none, uid and gid that number with home "/" (as `docker run -u N`).
 * Anything else is a name that must have an entry.  -ENOENT "no user 'X'
 * in /etc/passwd", -EINVAL for a spec that is neither.  u is filled only on
 * success; free it with guest_user_free().
 */
int user_resolve(const char *spec, const char *passwd, size_t passwd_len, const char *group,
		 size_t group_len, struct guest_user *u, struct lg_err **err);

/*
 * user_resolve() on /etc/passwd and /etc/group of the current root (after
 * the root switch, the image's).  A missing file is empty.
 */
int user_lookup(const char *spec, struct guest_user *u, struct lg_err **err);

void guest_user_free(struct guest_user *u);

#endif
