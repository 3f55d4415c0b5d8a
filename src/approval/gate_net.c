/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Egress through the approval step (gate_net.h): a destination the
 * allowlist does not name becomes a red action of tool "network" and goes
 * through lg_gate_enter with a fixed decision, so the request, the card,
 * the askers, the wait, the approvals metric and the outcome are the
 * gate's, once for every front end.  What this file adds is what a guest
 * can abuse: a cap on the questions one sandbox may have waiting, and
 * cancelling them when the sandbox goes away.
 */
#include "approval/gate_net.h"

#include "common/log.h"
#include "common/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Approvals one sandbox may have waiting at once.  Each is a card in
 * front of a human and a proxy thread blocked in ask; a guest opening
 * connections to a thousand names must not file a thousand cards.  Past
 * the cap a destination is refused without asking.
 */
#define LG_GATE_NET_MAX_PENDING 16

/* Sandbox ids are the service's "sb-" and 12 hex digits; room for longer ones. */
#define SANDBOX_ID_MAX 64

struct lg_gate_net {
	struct lg_gate gate; /* a copy: its members are borrowed */
	char *who;
	struct lg_asker *askers; /* [0] is our own tracker, then the front end's */
	size_t n_askers;
	struct lg_metric *connections;
	pthread_mutex_t lock; /* protects the fields below */
	char sandbox_id[SANDBOX_ID_MAX];
	unsigned waiting; /* asks between the cap check and their end */
	struct approval *pending[LG_GATE_NET_MAX_PENDING];
	unsigned long long seq; /* request ids */
	bool closing;
};

/* ---- the tracker: an asker that asks nobody, and keeps the approval cancellable ---- */

/*
 * Called by the gate once the approval is filed, before the wait.  The
 * gate holds its reference until after forget, so the borrowed pointer
 * stays valid while it is in a slot.
 */
static void *track_ask(void *ctx, struct approval *a, const json_t *card)
{
	struct lg_gate_net *n = ctx;
	intptr_t slot = -1;

	(void)card;
	pthread_mutex_lock(&n->lock);
	if (n->closing) {
		/* Closed between the cap check and the filing: no wait at all. */
		approval_cancel(a);
	} else {
		/* waiting counts this ask, so a slot is free (waiting <= the cap). */
		for (intptr_t i = 0; i < LG_GATE_NET_MAX_PENDING; i++) {
			if (n->pending[i] == NULL) {
				n->pending[i] = a;
				slot = i;
				break;
			}
		}
	}
	pthread_mutex_unlock(&n->lock);
	return (void *)(slot + 1); /* NULL: not in a slot */
}

static void track_forget(void *ctx, void *token)
{
	struct lg_gate_net *n = ctx;
	intptr_t slot = (intptr_t)token - 1;

	if (slot < 0)
		return;
	pthread_mutex_lock(&n->lock);
	n->pending[slot] = NULL;
	pthread_mutex_unlock(&n->lock);
}

static const struct lg_asker_ops track_ops = {.ask = track_ask, .forget = track_forget};

/* ---- the interface ---- */

struct lg_gate_net *lg_gate_net_new(const struct lg_gate_net_opts *o)
{
	struct lg_gate_net *n = xzalloc(sizeof(*n));

	n->gate = *o->gate;
	n->who = xstrdup(o->who != NULL ? o->who : "unknown");
	n->n_askers = o->n_askers + 1;
	n->askers = xzalloc(n->n_askers * sizeof(*n->askers));
	n->askers[0] = (struct lg_asker){.ops = &track_ops, .ctx = n};
	for (size_t i = 0; i < o->n_askers; i++)
		n->askers[i + 1] = o->askers[i];
	n->connections = o->connections;
	pthread_mutex_init(&n->lock, NULL);
	return n;
}

void lg_gate_net_set_sandbox(struct lg_gate_net *n, const char *sandbox_id)
{
	pthread_mutex_lock(&n->lock);
	snprintf(n->sandbox_id, sizeof(n->sandbox_id), "%s", sandbox_id != NULL ? sandbox_id : "");
	pthread_mutex_unlock(&n->lock);
}

bool lg_gate_net_ask(void *ctx, const char *host, uint16_t port)
{
	struct lg_gate_net *n = ctx;
	char where[SANDBOX_ID_MAX];
	char dest[300], summary[400], reason[400], rid[SANDBOX_ID_MAX + 32];
	char rule[] = "net.allowlist";
	unsigned long long seq;
	/* Red, whatever the policy says: see gate_net.h. */
	struct policy_decision d = {
	    .verdict = POLICY_RED,
	    .risk = POLICY_RISK_HIGH,
	    .rule = rule,
	    .reason = reason,
	};
	json_t *args;
	char *denial = NULL;
	bool ok;

	pthread_mutex_lock(&n->lock);
	if (n->closing || n->waiting >= LG_GATE_NET_MAX_PENDING) {
		bool closing = n->closing;

		memcpy(where, n->sandbox_id, sizeof(where));
		pthread_mutex_unlock(&n->lock);
		/* A guest flooding us with questions: no, and nobody is asked. */
		if (!closing)
			lg_warn("session %s: sandbox %s: network access to %.255s:%u refused "
				"without asking: %d approvals are already waiting",
				n->who, where[0] ? where : "(new)", host, (unsigned)port,
				LG_GATE_NET_MAX_PENDING);
		return false;
	}
	n->waiting++;
	seq = ++n->seq;
	memcpy(where, n->sandbox_id, sizeof(where));
	pthread_mutex_unlock(&n->lock);

	/* The parser (net/egress.c) gave us a checked name or address: printable. */
	snprintf(dest, sizeof(dest), "%.255s:%u", host, (unsigned)port);
	snprintf(summary, sizeof(summary), "connect to %s", dest);
	snprintf(reason, sizeof(reason), "%s is not on this sandbox's network allowlist", dest);
	snprintf(rid, sizeof(rid), "%s/net-%llu", where[0] ? where : "new", seq);
	args = json_pack("{s:s, s:i}", "host", host, "port", (int)port);
	if (args == NULL) {
		/* Not UTF-8: the parser never lets such a name through; refuse anyway. */
		pthread_mutex_lock(&n->lock);
		n->waiting--;
		pthread_mutex_unlock(&n->lock);
		return false;
	}
	if (where[0])
		json_object_set_new(args, "sandbox_id", json_string(where));

	struct lg_gate_req req = {
	    .who = n->who,
	    .tool = "network",
	    .args = args,
	    .request_id = rid,
	    .askers = n->askers,
	    .n_askers = n->n_askers,
	    .decision = &d,
	    .summary = summary,
	    .note = lg_egress_dest_note(host),
	};
	ok = lg_gate_enter(&n->gate, &req, &denial);
	if (ok) {
		/* What a yes did: the proxy adds the destination to this sandbox's list. */
		cleanup_free char *effect =
		    xasprintf("%s added to this sandbox's allowlist (approved)", dest);
		lg_info("session %s: sandbox %s: network access to %s approved", n->who,
			where[0] ? where : "(new)", dest);
		/* The outcome cannot be written: refuse, as the gate does for its request. */
		ok = lg_gate_outcome(&n->gate, &req, "ok", json_pack("{s:s}", "effect", effect));
	} else {
		lg_info("session %s: sandbox %s: %s", n->who, where[0] ? where : "(new)", denial);
	}
	free(denial);
	json_decref(args);

	pthread_mutex_lock(&n->lock);
	n->waiting--;
	pthread_mutex_unlock(&n->lock);
	return ok;
}

static const char *verdict_name(enum lg_egress_verdict v)
{
	return v == LG_EGRESS_ALLOWED ? "allowed" : v == LG_EGRESS_DENIED ? "denied" : "failed";
}

void lg_gate_net_log(void *ctx, const struct lg_egress_event *ev)
{
	struct lg_gate_net *n = ctx;
	char where[SANDBOX_ID_MAX];
	json_t *e;

	pthread_mutex_lock(&n->lock);
	memcpy(where, n->sandbox_id, sizeof(where));
	pthread_mutex_unlock(&n->lock);
	if (n->connections != NULL)
		lg_metric_inc(lg_metric_child(n->connections,
					      (const char *const[]){verdict_name(ev->verdict)}));
	if (ev->verdict == LG_EGRESS_ALLOWED)
		lg_info("sandbox %s: net %s %s:%u -> %s allowed (up %llu B, down %llu B)", where,
			ev->method ? ev->method : "?", ev->host ? ev->host : "?",
			(unsigned)ev->port, ev->address ? ev->address : "?",
			(unsigned long long)ev->bytes_up, (unsigned long long)ev->bytes_down);
	else
		lg_warn("sandbox %s: net %s %s:%u %s: %s", where, ev->method ? ev->method : "?",
			ev->host ? ev->host : "?", (unsigned)ev->port, verdict_name(ev->verdict),
			ev->reason ? ev->reason : "");
	e = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s?, s:s?, s:s?, s:I, s:I}", "type", "net",
		      "session", n->who, "sandbox", where, "host", ev->host ? ev->host : "", "port",
		      (json_int_t)ev->port, "verdict", verdict_name(ev->verdict), "method",
		      ev->method, "address", ev->address, "reason", ev->reason, "bytes_up",
		      (json_int_t)ev->bytes_up, "bytes_down", (json_int_t)ev->bytes_down);
	/* The connection is over; a log that cannot be written is only said loudly (gate). */
	if (e != NULL)
		lg_gate_audit(&n->gate, e);
}

void lg_gate_net_close(struct lg_gate_net *n)
{
	if (n == NULL)
		return;
	pthread_mutex_lock(&n->lock);
	n->closing = true;
	for (int i = 0; i < LG_GATE_NET_MAX_PENDING; i++)
		if (n->pending[i] != NULL)
			approval_cancel(n->pending[i]);
	pthread_mutex_unlock(&n->lock);
}

void lg_gate_net_free(struct lg_gate_net *n)
{
	if (n == NULL)
		return;
	pthread_mutex_destroy(&n->lock);
	free(n->askers);
	free(n->who);
	free(n);
}
