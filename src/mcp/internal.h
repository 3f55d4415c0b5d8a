/* SPDX-License-Identifier: Apache-2.0 */
/* Shared between the MCP core's files; not for transports. */
#ifndef LG_MCP_INTERNAL_H
#define LG_MCP_INTERNAL_H

#include "mcp/mcp.h"

#include "approval/approval.h"
#include "common/metrics.h"
#include "host/sandbox.h"
#include "service/service.h"

#include <pthread.h>

/* A sandbox id ("sb-" and 12 hex digits, the service's) and its NUL. */
#define MCP_SANDBOX_ID_LEN 16

/* A tools/call running on a worker thread. */
struct mcp_call {
	struct mcp_call *next;
	struct mcp_session *ss;
	void *stream;
	json_t *id;
	char *name;
	json_t *args;
	int cancel_pipe[2]; /* readable once the client sent notifications/cancelled */
	bool cancelled;
};

/* "el-" and 32 hex digits (128 random bits), and the NUL. */
#define MCP_OUTREQ_ID_LEN 36

/*
 * A server-to-client request waiting for its response (elicitation).  Two
 * ids: `id` is the worker's handle for it, never on the wire; `wire_id` is
 * the JSON-RPC id the client sees, random so that no client can answer a
 * question it was never asked (see handle_response).
 */
struct mcp_outreq {
	struct mcp_outreq *next;
	int64_t id;
	char wire_id[MCP_OUTREQ_ID_LEN];
	struct mcp_call *call;	   /* the call that waits on it */
	struct approval *approval; /* the decision the answer feeds */
	bool sent;		   /* an elicitation/create went out */
	bool answered;		   /* the client answered it (result or error) */
};

struct mcp_session {
	struct mcp_session *next; /* in the server's list */
	struct mcp_server *srv;
	char id[33];
	mcp_send_fn send;
	void *transport;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/*
	 * One of mcp_protocol_versions (never freed), or NULL before
	 * initialize; read without ss->lock through __atomic loads.
	 */
	const char *protocol;
	char *client_name;	 /* sanitized; under lock */
	bool client_elicitation; /* under lock: mcp_session_elicits() */
	bool closing;
	int running; /* tool calls on worker threads */
	struct mcp_outreq *outreqs;
	struct mcp_call *calls;
	int64_t next_out_id;
};

struct mcp_server {
	struct mcp_server_opts o;
	pthread_mutex_t lock; /* the session list */
	/* Owns the sandboxes: the server's own (standalone), or a running service's. */
	struct lg_service *svc;
	bool own_svc;
	struct mcp_session *sessions;
	/* The service's standard metric families (docs/metrics.md). */
	struct lg_metrics_standard m;
};

/* A label's child of a standard family, e.g. mcp_metric(s->m.approvals, "approved"). */
struct lg_metric_child *mcp_metric(struct lg_metric *family, const char *label);

/* ---- session.c ---- */

/* Sends a message (steals the reference). */
int mcp_send(struct mcp_session *ss, void *stream, json_t *msg);
/* Whether the client declared elicitation (and its version has it). */
bool mcp_session_elicits(struct mcp_session *ss);
/*
 * Tracks approval a (borrowed; call may be NULL for a question that belongs
 * to no tool call, such as a sandbox's network request: the caller keeps its
 * reference until it has called mcp_forget_elicitation) so that closing the
 * session or cancelling the call cancels the wait, and if params is non-NULL
 * (stolen) and the client can elicit, sends an elicitation/create whose
 * answer decides it.  Only that request, while outstanding, can be answered:
 * a response with any other id decides nothing.  Returns the tracking id, or
 * -1 if the session is closing.
 */
int64_t mcp_send_elicitation(struct mcp_session *ss, struct mcp_call *call, json_t *params,
			     struct approval *a);
/*
 * Forgets a tracked approval; if an elicitation for it is still open at the
 * client (decided elsewhere), tells the client with notifications/cancelled.
 */
void mcp_forget_elicitation(struct mcp_session *ss, struct mcp_call *call, int64_t id);

/* ---- sandboxes (session.c): the service's entries, seen through the session that owns them ----
 */

/* Takes a sandbox of this session (lg_service_get); NULL if none. */
struct lg_entry *mcp_sandbox_get(struct mcp_session *ss, const char *id);
void mcp_sandbox_put(struct mcp_server *s, struct lg_entry *e);
/*
 * What the policy knows of this session's sandbox id: whether it holds
 * unsaved work and whether its VM is lost.  -1 if there is none.
 */
int mcp_sandbox_facts(struct mcp_session *ss, const char *id, bool *dirty, bool *lost);
/* Unregisters and destroys; false if this session has no such sandbox. */
bool mcp_sandbox_destroy(struct mcp_session *ss, const char *id);
/* A JSON array describing this session's sandboxes.  New reference. */
json_t *mcp_sandbox_list(struct mcp_session *ss);

/* ---- net.c: a sandbox's egress, when the server has --net allow= ---- */

struct mcp_net;
struct lg_egress;

/*
 * The egress of one sandbox of session ss: its own copy of the server's
 * allowlist (a human's approval widens only this sandbox's), connections
 * to other hosts as red actions through the broker and elicitation, and
 * one audit event per connection.
 */
struct mcp_net *mcp_net_new(struct mcp_session *ss, const char *allow, struct lg_err **err);
struct lg_egress *mcp_net_egress(struct mcp_net *n);
void mcp_net_set_sandbox(struct mcp_net *n, const char *sandbox_id);
/* Ends approvals still waiting: the sandbox is going away.  NULL ok. */
void mcp_net_close(struct mcp_net *n);
void mcp_net_free(struct mcp_net *n);

/* ---- tools.c ---- */

/* tools/list: every tool with schema and annotations.  New reference. */
json_t *mcp_tools_list(void);
bool mcp_tool_exists(const char *name);
/*
 * tools/call on a worker thread: classify, ask a human if red, run, audit.
 * Returns the CallToolResult (new reference); never NULL.
 */
json_t *mcp_tools_call(struct mcp_session *ss, struct mcp_call *call);

#endif
