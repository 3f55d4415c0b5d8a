/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MCP server core, independent of transport: JSON-RPC 2.0 dispatch,
 * protocol-version negotiation, the sandbox tools, and the approval cliff
 * in the path of every tools/call.  Transports (stdio in mcp/stdio.c,
 * Streamable HTTP in mcp/http.c) parse bytes into JSON, hand messages to a
 * session, and deliver what the session sends back.
 */
#ifndef LG_MCP_MCP_H
#define LG_MCP_MCP_H

#include "common/err.h"
#include "hv/hv.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct policy;
struct audit_log;
struct approval_broker;
struct lg_service;

#define MCP_MAX_MESSAGE (4u << 20) /* bytes of one JSON-RPC message */

/* JSON-RPC error codes. */
enum {
	MCP_PARSE_ERROR = -32700,
	MCP_INVALID_REQUEST = -32600,
	MCP_METHOD_NOT_FOUND = -32601,
	MCP_INVALID_PARAMS = -32602,
	MCP_INTERNAL_ERROR = -32603,
};

struct mcp_server_opts {
	const struct policy *policy;	/* borrowed, required */
	struct audit_log *audit;	/* borrowed, may be NULL (no audit) */
	struct approval_broker *broker; /* borrowed, required */
	unsigned idle_timeout_s;	/* reap sandboxes idle this long; 0 = never */
	unsigned max_sandboxes;		/* VMs at once, per server; 0 = 16 */
	unsigned max_vcpus;		/* their vCPUs; 0 = 4 per host CPU */
	uint64_t max_memory_mib;	/* guest RAM + VMM overhead; 0 = half the host */
	const char *default_image;	/* NULL: "default" */
	enum hv_accel accel;
	const struct jail_opts *jail; /* NULL: jailed, seccomp strict */
	/* The network allowlist of every sandbox (--net allow=); NULL: no network. */
	const char *net_allow;
	/*
	 * The service that owns the sandboxes (borrowed: `luminaguard serve`'s),
	 * or NULL for one of the server's own, made from the limits above.
	 */
	struct lg_service *service;
};

struct mcp_server;
struct mcp_session;

int mcp_server_new(const struct mcp_server_opts *o, struct mcp_server **out, struct lg_err **err);
/*
 * The server's Prometheus metrics (text format 0.0.4, docs/metrics.md), new
 * string: what the HTTP transport serves at GET /metrics.
 */
char *mcp_server_metrics(struct mcp_server *s);

/* Closes every session (each destroys its sandboxes), then frees the server. */
void mcp_server_free(struct mcp_server *s);

/*
 * How a session talks back: `send` delivers one JSON-RPC message (a
 * response, or a request/notification from the server).  `stream` is the
 * transport's context of the client request the message belongs to (as
 * passed to mcp_session_handle), or NULL for messages that belong to no
 * request.  Called from any thread; the transport serializes.  Returns 0,
 * or <0 if the client is gone.
 */
typedef int (*mcp_send_fn)(void *transport, void *stream, const char *json);

/*
 * A new session.  Its id and those of its requests come from getrandom(2);
 * where that fails the process aborts rather than make guessable ids.
 */
struct mcp_session *mcp_session_new(struct mcp_server *s, mcp_send_fn send, void *transport);
/* The session id (32 hex digits, 128 random bits; HTTP's Mcp-Session-Id). */
const char *mcp_session_id(const struct mcp_session *ss);
/*
 * The negotiated protocol version (one of mcp_protocol_versions, valid for
 * the program's life), or NULL before initialize.  Safe from any thread.
 */
const char *mcp_session_protocol(const struct mcp_session *ss);

/*
 * Handles one incoming message (any JSON value: a request, notification,
 * response or a batch), borrowed.  Quick methods answer before this
 * returns; tools/call runs on a worker thread and answers later, through
 * send() with the same stream.  Returns the number of responses that will
 * be sent for it (0 for notifications and responses), so an HTTP transport
 * knows whether to answer 202 or open a stream.
 */
int mcp_session_handle(struct mcp_session *ss, const json_t *msg, void *stream);

/*
 * Handles raw bytes of one message: parse errors answer -32700.  Same
 * return as mcp_session_handle.
 */
int mcp_session_handle_text(struct mcp_session *ss, const char *text, size_t len, void *stream);

/*
 * Ends the session: cancels its approval waits, kills the commands its
 * calls still run, waits for those calls to end, destroys the session's
 * sandboxes, frees it.
 */
void mcp_session_close(struct mcp_session *ss);

/* The MCP protocol versions this server speaks, newest first, NULL-terminated. */
extern const char *const mcp_protocol_versions[];
bool mcp_protocol_supported(const char *version);

#endif
