/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MCP Streamable HTTP transport (protocol revisions 2025-03-26,
 * 2025-06-18 and 2025-11-25) on libmicrohttpd: one endpoint, /mcp, taking
 * POST (a JSON-RPC message; answered with one JSON body or an SSE stream),
 * GET (the session's standalone SSE stream) and DELETE (end the session).
 * docs/mcp-http.md describes the headers, status codes, security model and
 * threading.
 */
#ifndef LG_MCP_HTTP_H
#define LG_MCP_HTTP_H

#include "common/err.h"

#include <stddef.h>

struct mcp_server;

struct mcp_http_opts {
	/* "HOST:PORT": an IPv4 address, "[IPv6]" or "localhost"; PORT 0 picks a free port. */
	const char *bind;
	/*
	 * Bearer token every request must carry ("Authorization: Bearer
	 * TOKEN"), or NULL for none.  Required when bind is not a loopback
	 * address: mcp_http_start() refuses to serve a network without it.
	 */
	const char *token;
	/*
	 * Origins a browser may send, matched exactly (case-insensitively),
	 * NULL-terminated; NULL: http(s)://localhost, 127.0.0.1 or [::1] on
	 * any port.  A request without Origin (every non-browser client) is
	 * not affected.
	 */
	const char *const *allowed_origins;
	size_t max_body;	 /* bytes of one POST body; 0: MCP_MAX_MESSAGE */
	unsigned session_idle_s; /* close sessions with no request for this long; 0: 3600 */
	/*
	 * Sessions open at once; 0: MCP_HTTP_DEFAULT_MAX_SESSIONS.  An
	 * initialize over the cap is answered 503 and opens nothing.
	 */
	unsigned max_sessions;
	/*
	 * A running service's MCP socket (lg_serve_mcp_socket_path, mcp/sock.h):
	 * each HTTP session is carried over a connection of its own to it, so
	 * its sandboxes live in the service, and ends with it.  Then srv is NULL
	 * and /metrics is 404 (the service serves its own).  NULL: sessions are
	 * srv's, in this process.
	 */
	const char *service_sock;
};

/*
 * Each session costs memory and, with its tool calls, threads; initialize
 * needs no sandbox, so without a cap a client could open sessions until the
 * host runs out.  64 is far more than the few agents one server serves.
 */
#define MCP_HTTP_DEFAULT_MAX_SESSIONS 64u
#define MCP_HTTP_MAX_SESSIONS_LIMIT   4096u /* the most --max-sessions takes */

struct mcp_http;

/*
 * Binds, and serves on threads of its own until mcp_http_stop().  srv is
 * borrowed and must outlive the transport; exactly one of srv and
 * o->service_sock is given.  Copies everything in o.
 */
int mcp_http_start(struct mcp_server *srv, const struct mcp_http_opts *o, struct mcp_http **out,
		   struct lg_err **err);
/* The bound port (the one picked, for PORT 0). */
unsigned mcp_http_port(const struct mcp_http *h);
/*
 * Ends every stream, stops serving, and closes every session (with
 * mcp_session_close(): their sandboxes are destroyed).  Frees h.
 */
void mcp_http_stop(struct mcp_http *h);

#endif
