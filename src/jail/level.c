/* SPDX-License-Identifier: Apache-2.0 */
#include "jail/jail.h"

#include <errno.h>
#include <string.h>

static const char *const level_names[] = {
    [LG_SECCOMP_STRICT] = "strict",
    [LG_SECCOMP_LOG] = "log",
    [LG_SECCOMP_OFF] = "off",
};

int lg_seccomp_level_parse(const char *s, enum lg_seccomp_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum lg_seccomp_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *lg_seccomp_level_name(enum lg_seccomp_level l)
{
	if ((size_t)l >= sizeof(level_names) / sizeof(level_names[0]))
		return "?";
	return level_names[l];
}
