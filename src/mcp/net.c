/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A sandbox's egress under the MCP server.  The guest's proxied
 * connections are served by net/egress.c; what this file adds is the
 * approval cliff and the audit trail: a destination that is not on the
 * allowlist is a red action, filed with the broker (so `luminaguard
 * approvals` sees it) and asked of the client by elicitation when it can;
 * a yes widens this one sandbox's allowlist, a no or a timeout refuses.
 * Every connection ends in one audit event.
 */
#include "mcp/internal.h"

#include "approval/approval.h"
#include "audit/audit.h"
#include "common/log.h"
#include "common/util.h"
#include "net/egress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PENDING 16 /* approvals one sandbox may have waiting at once */

struct mcp_net {
	struct lg_egress eg;
	struct mcp_session *ss;
	pthread_mutex_t lock; /* protects the fields below */
	char sandbox_id[MCP_SANDBOX_ID_LEN];
	struct approval *pending[MAX_PENDING];
	bool closing;
};

static json_t *net_elicitation(const char *approval, const char *host, uint16_t port,
			       const char *where)
{
	char msg[1200];

	/* The note says what a yes can open: a human approving a guest's
	 * destination must not think it could be the host itself. */
	snprintf(msg, sizeof(msg),
		 "LuminaGuard asks for approval %s (risk red): sandbox %s wants to connect to "
		 "%.300s:%u, which is not on its network allowlist. %s Approving allows this "
		 "destination for this sandbox only.",
		 approval, where, host, (unsigned)port, lg_egress_dest_note(host));
	return json_pack("{s:s, s:{s:s, s:{s:{s:s, s:s, s:s}, s:{s:s, s:s}}, s:[s]}}", "message",
			 msg, "requestedSchema", "type", "object", "properties", "approve", "type",
			 "boolean", "title", "Approve", "description",
			 "Allow connections to this destination", "reason", "type", "string",
			 "description", "why (optional)", "required", "approve");
}

/* Slot bookkeeping: a sandbox going away must be able to cancel every wait. */
static int track(struct mcp_net *n, struct approval *a)
{
	int slot = -1;

	pthread_mutex_lock(&n->lock);
	for (int i = 0; i < MAX_PENDING && !n->closing; i++) {
		if (n->pending[i] == NULL) {
			n->pending[i] = a;
			slot = i;
			break;
		}
	}
	pthread_mutex_unlock(&n->lock);
	return slot;
}

static void untrack(struct mcp_net *n, int slot)
{
	pthread_mutex_lock(&n->lock);
	n->pending[slot] = NULL;
	pthread_mutex_unlock(&n->lock);
}

/* lg_egress's ask(): runs on the connection's thread and may block. */
static bool ask(void *ctx, const char *host, uint16_t port)
{
	struct mcp_net *n = ctx;
	struct mcp_session *ss = n->ss;
	char summary[400], reason[1000], where[MCP_SANDBOX_ID_LEN];
	char *decider = NULL, *why = NULL;
	enum approval_state st;
	struct approval *a;
	int64_t eid;
	int slot;

	pthread_mutex_lock(&n->lock);
	memcpy(where, n->sandbox_id, sizeof(where));
	pthread_mutex_unlock(&n->lock);
	snprintf(summary, sizeof(summary), "connect to %.300s:%u", host, (unsigned)port);
	snprintf(reason, sizeof(reason), "%.300s:%u is not on this sandbox's network allowlist. %s",
		 host, (unsigned)port, lg_egress_dest_note(host));
	json_t *card =
	    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "tool", "network", "summary", summary,
		      "where", where[0] ? where : "a new sandbox", "risk", "red", "rule",
		      "net.allowlist", "reason", reason, "session", ss->id);
	a = approval_file(ss->srv->o.broker, card);
	json_decref(card);
	slot = track(n, a);
	if (slot < 0) {
		/* Closing, or a guest flooding us with questions: no. */
		approval_cancel(a);
		approval_put(a);
		return false;
	}
	lg_info("session %s: sandbox %s: network access to %s:%u needs approval %s", ss->id, where,
		host, (unsigned)port, approval_id(a));
	/* The client is not asked when its answer would not count (--decide). */
	eid = mcp_send_elicitation(ss, NULL,
				   mcp_session_elicits(ss) &&
					   (approval_channels(a) & APPROVAL_CH_ELICITATION)
				       ? net_elicitation(approval_id(a), host, port, where)
				       : NULL,
				   a);
	st = approval_wait(a, &decider, &why);
	lg_metric_inc(mcp_metric(ss->srv->m.approvals, approval_state_name(st)));
	if (eid > 0)
		mcp_forget_elicitation(ss, NULL, eid);
	untrack(n, slot);
	approval_put(a);
	free(decider);
	free(why);
	return st == APPROVAL_APPROVED;
}

static const char *verdict_name(enum lg_egress_verdict v)
{
	return v == LG_EGRESS_ALLOWED ? "allowed" : v == LG_EGRESS_DENIED ? "denied" : "failed";
}

/* lg_egress's log(): one audit event and one log line per connection. */
static void log_event(void *ctx, const struct lg_egress_event *ev)
{
	struct mcp_net *n = ctx;
	struct mcp_session *ss = n->ss;
	char where[MCP_SANDBOX_ID_LEN];
	struct lg_err *err = NULL;

	pthread_mutex_lock(&n->lock);
	memcpy(where, n->sandbox_id, sizeof(where));
	pthread_mutex_unlock(&n->lock);
	lg_metric_inc(mcp_metric(ss->srv->m.egress_connections, verdict_name(ev->verdict)));
	if (ev->verdict == LG_EGRESS_ALLOWED)
		lg_info("sandbox %s: net %s %s:%u -> %s allowed (up %llu B, down %llu B)", where,
			ev->method ? ev->method : "?", ev->host ? ev->host : "?",
			(unsigned)ev->port, ev->address ? ev->address : "?",
			(unsigned long long)ev->bytes_up, (unsigned long long)ev->bytes_down);
	else
		lg_warn("sandbox %s: net %s %s:%u %s: %s", where, ev->method ? ev->method : "?",
			ev->host ? ev->host : "?", (unsigned)ev->port, verdict_name(ev->verdict),
			ev->reason ? ev->reason : "");
	if (ss->srv->o.audit == NULL)
		return;
	json_t *e =
	    json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s?, s:s?, s:s?, s:I, s:I}", "type", "net",
		      "session", ss->id, "sandbox", where, "host", ev->host ? ev->host : "", "port",
		      (json_int_t)ev->port, "verdict", verdict_name(ev->verdict), "method",
		      ev->method, "address", ev->address, "reason", ev->reason, "bytes_up",
		      (json_int_t)ev->bytes_up, "bytes_down", (json_int_t)ev->bytes_down);
	if (audit_append(ss->srv->o.audit, e, &err) < 0) {
		/* The connection is over; all we can do is say so loudly. */
		lg_error("audit log: %s", err->msg);
		lg_err_free(&err);
	}
	json_decref(e);
}

struct mcp_net *mcp_net_new(struct mcp_session *ss, const char *allow, struct lg_err **err)
{
	struct lg_allowlist *al = NULL;
	struct mcp_net *n;

	if (lg_allowlist_parse(allow, &al, err) < 0)
		return NULL;
	n = xzalloc(sizeof(*n));
	n->ss = ss;
	pthread_mutex_init(&n->lock, NULL);
	lg_egress_init(&n->eg, al);
	n->eg.ask = ask;
	n->eg.ask_ctx = n;
	n->eg.log = log_event;
	n->eg.log_ctx = n;
	return n;
}

struct lg_egress *mcp_net_egress(struct mcp_net *n)
{
	return &n->eg;
}

void mcp_net_set_sandbox(struct mcp_net *n, const char *sandbox_id)
{
	pthread_mutex_lock(&n->lock);
	snprintf(n->sandbox_id, sizeof(n->sandbox_id), "%s", sandbox_id);
	pthread_mutex_unlock(&n->lock);
}

void mcp_net_close(struct mcp_net *n)
{
	if (n == NULL)
		return;
	pthread_mutex_lock(&n->lock);
	n->closing = true;
	for (int i = 0; i < MAX_PENDING; i++)
		if (n->pending[i] != NULL)
			approval_cancel(n->pending[i]);
	pthread_mutex_unlock(&n->lock);
}

void mcp_net_free(struct mcp_net *n)
{
	if (n == NULL)
		return;
	struct lg_allowlist *al = n->eg.allow;
	lg_egress_fini(&n->eg);
	lg_allowlist_free(al);
	pthread_mutex_destroy(&n->lock);
	free(n);
}
