/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MCP over the service's unix socket (lg_serve_mcp_socket_path): one
 * session per connection, framed as on stdio (newline-delimited JSON-RPC).
 * `luminaguard serve` listens; `luminaguard mcp` on stdio, finding a
 * service, bridges its stdin and stdout to a connection, so that its
 * sandboxes live in the service beside those of every other front end.
 */
#ifndef LG_MCP_SOCK_H
#define LG_MCP_SOCK_H

#include "mcp/mcp.h"

struct mcp_sock;

/* Serves sessions of srv on an owner-only socket at path (common/usock.h). */
int mcp_sock_start(struct mcp_server *srv, const char *path, struct mcp_sock **out,
		   struct lg_err **err);
/* Stops accepting, ends every session (their sandboxes are destroyed), removes the socket. */
void mcp_sock_stop(struct mcp_sock *m);

/*
 * Copies in_fd to a connection to path and the connection to out_fd until
 * the service closes it or cancel_fd becomes readable.  Returns 1 when it
 * bridged, 0 when no service listens there (no socket, or a stale one), so
 * the caller serves standalone, or <0 with *err.
 */
int mcp_sock_bridge(const char *path, int in_fd, int out_fd, int cancel_fd, struct lg_err **err);

/*
 * Newline-delimited messages read from a socket, each at most max bytes
 * (the HTTP transport reads a service's answers with it).  The buffer
 * holds at most max bytes and one read more.
 */
struct mcp_lines {
	char *buf;
	size_t len, off, cap, max;
};

void mcp_lines_init(struct mcp_lines *l, size_t max);
void mcp_lines_free(struct mcp_lines *l);
/*
 * Blocks until the next line: 1 with it in *line (without its '\n' or a
 * '\r' before it, NUL-terminated, valid until the next call) and its
 * length in *len; 0 at EOF (an unfinished last line is dropped); -E2BIG
 * once a line is longer than max (the stream is then out of step: stop
 * reading); another -errno from read(2).
 */
int mcp_lines_next(struct mcp_lines *l, int fd, char **line, size_t *len);

#endif
