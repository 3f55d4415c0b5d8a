/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the guest's /etc/passwd and /etc/group parser (guest/user.c):
 * a root command in the sandbox may write anything there, and the agent
 * parses them for every EXEC with USER.  The input is "SPEC\0PASSWD\0GROUP";
 * missing parts are empty.  Every outcome must be a user or an error.
 */
#include "guest/user.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	const char *z1 = memchr(p, '\0', size);
	const char *pw = z1 != NULL ? z1 + 1 : end;
	const char *z2 = pw < end ? memchr(pw, '\0', (size_t)(end - pw)) : NULL;
	const char *gr = z2 != NULL ? z2 + 1 : end;
	char *spec = strndup(p, (size_t)((z1 != NULL ? z1 : end) - p));
	struct lg_err *err = NULL;
	struct guest_user u;

	if (spec == NULL)
		abort();
	if (user_resolve(spec, pw, (size_t)((z2 != NULL ? z2 : end) - pw), gr, (size_t)(end - gr),
			 &u, &err) == 0) {
		if (u.name == NULL || u.home == NULL || u.home[0] != '/' || u.ngroups == 0 ||
		    u.ngroups > USER_MAX_GROUPS || u.groups[0] != u.gid)
			abort();
		guest_user_free(&u);
	} else if (err == NULL) {
		abort();
	}
	lg_err_free(&err);
	free(spec);
	return 0;
}
