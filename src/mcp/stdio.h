/* SPDX-License-Identifier: Apache-2.0 */
/* MCP over stdio: newline-delimited JSON-RPC on stdin/stdout, logs on stderr. */
#ifndef LG_MCP_STDIO_H
#define LG_MCP_STDIO_H

#include "mcp/mcp.h"

/*
 * Serves one session on in_fd/out_fd until EOF on in_fd or cancel_fd
 * becoming readable, then closes the session (its sandboxes are
 * destroyed).  Only protocol messages are written to out_fd.
 */
int mcp_stdio_serve(struct mcp_server *srv, int in_fd, int out_fd, int cancel_fd,
		    struct lg_err **err);

#endif
