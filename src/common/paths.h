/* SPDX-License-Identifier: Apache-2.0 */
/* Where LuminaGuard keeps its state on the host. */
#ifndef LG_COMMON_PATHS_H
#define LG_COMMON_PATHS_H

/*
 * The data directory: $LUMINAGUARD_HOME, else $XDG_DATA_HOME/luminaguard,
 * else $HOME/.local/share/luminaguard.  Returns a new string.
 */
char *lg_home_dir(void);

/* lg_home_dir()/images and lg_home_dir()/kernels.  New strings. */
char *lg_images_dir(void);
char *lg_kernels_dir(void);

/*
 * The service's sockets (`luminaguard serve`), in the data directory (0700):
 * serve.sock carries the HTTP API for the user who runs the service (run,
 * ps, kill, curl --unix-socket), mcp.sock one MCP session per connection
 * (`luminaguard mcp` bridges its stdio to it).  New strings.
 */
char *lg_serve_socket_path(void);
char *lg_serve_mcp_socket_path(void);

/*
 * Path of a helper binary shipped with luminaguard (e.g. "lg-agent"):
 * $LUMINAGUARD_LIBEXEC/NAME if set, else next to the running executable,
 * else ../libexec/luminaguard/NAME relative to it.  Returns a new string
 * or NULL when not found.
 */
char *lg_find_helper(const char *name);

#endif
