/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MCP core's bottom layer: the server and session objects, sending,
 * the server-to-client questions (elicitation) a session has out, the
 * tool calls it has running, and the sandboxes it owns.  Not for
 * transports (they use mcp.h).
 *
 * The core's files form layers, each including only those below it
 * (tests/check_layers.py checks it):
 *
 *   dispatch.c   JSON-RPC validation, methods, worker threads for calls
 *      |
 *   tools.{c,h}  the sandbox tools and the approval step in front of them
 *      |
 *   elicit.{c,h} MCP elicitation as a way of asking a human (lg_asker)
 *      |
 *   session.{c,h} this file
 *
 * A call's worker thread and an approval's wait go down the layers; what
 * comes back up (a client's answer, a cancel) goes through the state
 * kept here, never through a call upward.
 */
#ifndef LG_MCP_SESSION_H
#define LG_MCP_SESSION_H

#include "mcp/mcp.h"

#include "approval/approval.h"
#include "common/metrics.h"
#include "service/service.h"

#include <pthread.h>

/* A sandbox id ("sb-" and 12 hex digits, the service's) and its NUL. */
#define MCP_SANDBOX_ID_LEN 16

/* A tools/call running on a worker thread (dispatch.c starts it). */
struct mcp_call {
	struct mcp_call *next;
	struct mcp_session *ss;
	void *stream;
	json_t *id;
	char *name;
	json_t *args;
	int cancel_pipe[2]; /* readable once the client sent notifications/cancelled */
	bool cancelled;	    /* under ss->lock */
	/*
	 * "mcp-" and 16 random hex digits: the call's request id on log lines,
	 * in the audit log, through the service and into the guest
	 * (LUMINAGUARD_REQUEST_ID).  Not the JSON-RPC id: the client chooses that.
	 */
	char rid[21];
};

/* "el-" and 32 hex digits (128 random bits), and the NUL. */
#define MCP_OUTREQ_ID_LEN 36

/*
 * A server-to-client request waiting for its response (elicitation).  Two
 * ids: `id` is the worker's handle for it, never on the wire; `wire_id` is
 * the JSON-RPC id the client sees, random so that no client can answer a
 * question it was never asked (see mcp_session_answer).
 */
struct mcp_outreq {
	struct mcp_outreq *next;
	int64_t id;
	char wire_id[MCP_OUTREQ_ID_LEN];
	struct mcp_call *call;	   /* the call that waits on it, or NULL (egress) */
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

/* ---- sending ---- */

/* Sends a message (steals the reference). */
int mcp_send(struct mcp_session *ss, void *stream, json_t *msg);

/* ---- the client, as initialize described it ---- */

/*
 * Records the negotiated version (one of mcp_protocol_versions), whether
 * the client can elicit, and its name (NULL: none; sanitized here: it
 * ends up in approvals' deciders, logs and the CLI).
 */
void mcp_session_set_client(struct mcp_session *ss, const char *version, bool elicits,
			    const char *name);
/* Whether the client declared elicitation (and its version has it). */
bool mcp_session_elicits(struct mcp_session *ss);

/* ---- server-to-client questions ---- */

/*
 * Tracks approval a (borrowed; call may be NULL for a question that belongs
 * to no tool call, such as a sandbox's network request: the caller keeps its
 * reference until it has called mcp_forget_elicitation) so that closing the
 * session or cancelling the call cancels the wait, and if params is non-NULL
 * (stolen) and the client can elicit, sends an elicitation/create whose
 * answer decides it.  Only that request, while outstanding, can be answered:
 * a response with any other id decides nothing.  Returns the tracking id, or
 * -1 if the session is closing (a is then cancelled).
 */
int64_t mcp_send_elicitation(struct mcp_session *ss, struct mcp_call *call, json_t *params,
			     struct approval *a);
/*
 * Forgets a tracked approval; if an elicitation for it is still open at the
 * client (decided elsewhere), tells the client with notifications/cancelled.
 */
void mcp_forget_elicitation(struct mcp_session *ss, struct mcp_call *call, int64_t id);
/*
 * A JSON-RPC response from the client (borrowed): the answer to one of
 * this session's open elicitations, or dropped with a log line.
 */
void mcp_session_answer(struct mcp_session *ss, const json_t *msg);

/* ---- tool calls in flight ---- */

/* At most this many tools/call of one session run at once. */
#define MCP_MAX_RUNNING_PER_SESS 32

/*
 * Registers c as running; -1 when the session is closing or already runs
 * MCP_MAX_RUNNING_PER_SESS calls.
 */
int mcp_session_add_call(struct mcp_session *ss, struct mcp_call *c);
/* Whether c was cancelled (notifications/cancelled, or the session closing). */
bool mcp_session_call_cancelled(struct mcp_session *ss, struct mcp_call *c);
/* Unregisters c (it ended); returns whether it was cancelled. */
bool mcp_session_end_call(struct mcp_session *ss, struct mcp_call *c);
/*
 * notifications/cancelled: the running call with this JSON-RPC id is
 * marked cancelled, its cancel pipe written (a command it runs is killed)
 * and the approvals it waits for cancelled.
 */
void mcp_session_cancel_call(struct mcp_session *ss, const json_t *request_id);

/* ---- the sandboxes this session owns: the service's entries, seen through the session ---- */

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

#endif
