/* SPDX-License-Identifier: Apache-2.0 */
/* The one place the host program reads its environment: see env.h. */
#include "common/env.h"

#include "common/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One per variable that can be bad, and a NULL. */
#define MAX_WARNINGS 8

#define STR_(x) #x
#define STR(x)	STR_(x)

static struct lg_env env;
static char *warnings[MAX_WARNINGS + 1];
static size_t n_warnings;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static const char *const level_names[] = {
    [LG_LOG_ERROR] = "error",
    [LG_LOG_WARN] = "warn",
    [LG_LOG_INFO] = "info",
    [LG_LOG_DEBUG] = "debug",
};

/* A copy of $name, or NULL when unset or empty. */
static char *read_var(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? xstrdup(v) : NULL;
}

/* A copy of $name when it is an absolute path, else NULL. */
static char *read_absolute(const char *name)
{
	char *v = read_var(name);

	if (v != NULL && *v != '/') {
		free(v);
		return NULL;
	}
	return v;
}

/* "NAME=`value` is not WHAT; using DEFAULT", the value cut and made printable. */
static void warn_bad(const char *name, const char *value, const char *what, const char *dflt)
{
	char shown[65];
	size_t i;

	for (i = 0; value[i] != '\0' && i < sizeof(shown) - 1; i++)
		shown[i] = value[i] >= 0x20 && value[i] < 0x7f ? value[i] : '?';
	shown[i] = '\0';
	if (n_warnings < MAX_WARNINGS)
		warnings[n_warnings++] = xasprintf("%s=`%s%s` is not %s; using %s", name, shown,
						   value[i] != '\0' ? "..." : "", what, dflt);
}

static void load(void)
{
	char *v;
	uint64_t n;

	env.home = read_var("LUMINAGUARD_HOME");
	/* The XDG base-directory spec: a relative path is invalid and ignored. */
	env.xdg_data_home = read_absolute("XDG_DATA_HOME");
	env.user_home = read_absolute("HOME");
	env.libexec = read_var("LUMINAGUARD_LIBEXEC");

	env.log_level = LG_LOG_WARN;
	env.log_level_set = false;
	v = read_var("LUMINAGUARD_LOG");
	if (v != NULL) {
		for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
			if (strcmp(v, level_names[i]) == 0) {
				env.log_level = (enum lg_log_level)i;
				env.log_level_set = true;
			}
		if (!env.log_level_set)
			warn_bad("LUMINAGUARD_LOG", v, "error, warn, info or debug", "warn");
		free(v);
	}
	env.log_json = false;
	v = read_var("LUMINAGUARD_LOG_FORMAT");
	if (v != NULL) {
		env.log_json = strcmp(v, "json") == 0;
		if (!env.log_json && strcmp(v, "text") != 0)
			warn_bad("LUMINAGUARD_LOG_FORMAT", v, "json or text", "text");
		free(v);
	}

	env.control_socket = read_var("LUMINAGUARD_CONTROL_SOCKET");
	env.qemu = read_var("LUMINAGUARD_QEMU");
	v = read_var("PATH");
	env.path = v != NULL ? v : xstrdup(LG_ENV_DEFAULT_PATH);

	env.boot_timeout_ms = LG_ENV_BOOT_TIMEOUT_DEFAULT_S * 1000;
	env.boot_timeout_set = false;
	v = read_var("LUMINAGUARD_BOOT_TIMEOUT");
	if (v != NULL) {
		if (lg_parse_u64(v, 1, LG_ENV_BOOT_TIMEOUT_MAX_S, &n) == 0) {
			env.boot_timeout_ms = (int)n * 1000;
			env.boot_timeout_set = true;
		} else {
			warn_bad("LUMINAGUARD_BOOT_TIMEOUT", v,
				 "1.." STR(LG_ENV_BOOT_TIMEOUT_MAX_S) " seconds",
				 STR(LG_ENV_BOOT_TIMEOUT_DEFAULT_S));
		}
		free(v);
	}

	env.source_date_epoch = -1;
	v = read_var("SOURCE_DATE_EPOCH");
	if (v != NULL) {
		if (lg_parse_u64(v, 0, INT32_MAX, &n) == 0)
			env.source_date_epoch = (int64_t)n;
		else
			warn_bad("SOURCE_DATE_EPOCH", v, "0..2147483647 seconds",
				 "the current time");
		free(v);
	}
}

void lg_env_load(void)
{
	pthread_once(&env_once, load);
}

const struct lg_env *lg_env(void)
{
	pthread_once(&env_once, load);
	return &env;
}

const char *const *lg_env_warnings(void)
{
	pthread_once(&env_once, load);
	return (const char *const *)warnings;
}

void lg_env_reload(void)
{
	pthread_once(&env_once, load);
	free((char *)env.home);
	free((char *)env.xdg_data_home);
	free((char *)env.user_home);
	free((char *)env.libexec);
	free((char *)env.control_socket);
	free((char *)env.qemu);
	free((char *)env.path);
	for (size_t i = 0; i < n_warnings; i++) {
		free(warnings[i]);
		warnings[i] = NULL;
	}
	n_warnings = 0;
	memset(&env, 0, sizeof(env));
	load();
}
