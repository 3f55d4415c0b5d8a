/* SPDX-License-Identifier: Apache-2.0 */
#include "common/paths.h"

#include "common/env.h"
#include "common/util.h"

#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *lg_home_dir(void)
{
	const struct lg_env *e = lg_env();
	const char *home = e->user_home;

	if (e->home != NULL)
		return xstrdup(e->home);
	if (e->xdg_data_home != NULL)
		return xasprintf("%s/luminaguard", e->xdg_data_home);
	if (home == NULL) {
		/*
		 * Called on worker threads (the MCP server's tool calls):
		 * getpwuid() returns a static buffer another thread may be
		 * overwriting, so the reentrant one, with a buffer of our own.
		 */
		struct passwd pw, *found = NULL;
		long n = sysconf(_SC_GETPW_R_SIZE_MAX);
		size_t len = n > 0 ? (size_t)n : 16384;
		cleanup_free char *buf = xmalloc(len);

		if (getpwuid_r(getuid(), &pw, buf, len, &found) == 0 && found != NULL &&
		    pw.pw_dir != NULL && *pw.pw_dir == '/')
			return xasprintf("%s/.local/share/luminaguard", pw.pw_dir);
		home = "/tmp";
	}
	return xasprintf("%s/.local/share/luminaguard", home);
}

char *lg_images_dir(void)
{
	cleanup_free char *home = lg_home_dir();
	return xasprintf("%s/images", home);
}

char *lg_kernels_dir(void)
{
	cleanup_free char *home = lg_home_dir();
	return xasprintf("%s/kernels", home);
}

char *lg_serve_socket_path(void)
{
	cleanup_free char *home = lg_home_dir();
	return xasprintf("%s/serve.sock", home);
}

char *lg_serve_mcp_socket_path(void)
{
	cleanup_free char *home = lg_home_dir();
	return xasprintf("%s/mcp.sock", home);
}

char *lg_find_helper(const char *name)
{
	const char *env = lg_env()->libexec;
	char self[PATH_MAX];
	ssize_t n;
	char *slash;
	char *cand;

	if (env != NULL) {
		cand = xasprintf("%s/%s", env, name);
		if (access(cand, X_OK) == 0)
			return cand;
		free(cand);
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return NULL;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (slash == NULL)
		return NULL;
	*slash = '\0';
	cand = xasprintf("%s/%s", self, name);
	if (access(cand, X_OK) == 0)
		return cand;
	free(cand);
	cand = xasprintf("%s/../libexec/luminaguard/%s", self, name);
	if (access(cand, X_OK) == 0)
		return cand;
	free(cand);
	return NULL;
}
