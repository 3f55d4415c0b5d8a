/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Egress through the approval step: one sandbox's network cliff and its
 * connection log, for every front end (`run --net`, MCP, the API).
 *
 * A destination that is not on the sandbox's allowlist is a red action
 * (tool "network"), filed with the gate's broker, so `luminaguard
 * approvals` sees it, and offered to the front end's askers (a terminal,
 * MCP elicitation).  The policy is not consulted: a policy rule that made
 * network access green would open destinations the allowlist does not
 * name, so the allowlist is the only thing that allows without a human.
 * The card carries a "note" (lg_egress_dest_note) that says what a yes
 * can and cannot open.  A yes widens this sandbox's allowlist only
 * (net/egress.c adds the entry); a no or a timeout refuses.  The request
 * and outcome are audited like every action's, and every connection ends
 * in one "net" audit event and a luminaguard_egress_connections_total
 * count by verdict.
 */
#ifndef LG_APPROVAL_GATE_NET_H
#define LG_APPROVAL_GATE_NET_H

#include "approval/gate.h"
#include "common/metrics.h"
#include "net/egress.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lg_gate_net;

struct lg_gate_net_opts {
	const struct lg_gate *gate; /* copied; what it points to must outlive it */
	const char *who;	    /* the audit log's "session": "cli", "api", an MCP session id */
	const struct lg_asker *askers; /* copied (the array; each ctx is borrowed) */
	size_t n_askers;
	struct lg_metric *connections; /* luminaguard_egress_connections_total, or NULL */
};

struct lg_gate_net *lg_gate_net_new(const struct lg_gate_net_opts *o);
/* The sandbox's id for cards, logs and audit events, once it has one. */
void lg_gate_net_set_sandbox(struct lg_gate_net *n, const char *sandbox_id);
/* lg_sandbox_net's ask (ctx: the lg_gate_net): blocks until decided. */
bool lg_gate_net_ask(void *ctx, const char *host, uint16_t port);
/* lg_sandbox_net's log (ctx: the lg_gate_net). */
void lg_gate_net_log(void *ctx, const struct lg_egress_event *ev);
/*
 * The sandbox is going away: cancels every approval still waiting (their
 * connections are refused) and refuses to ask again, so that the proxy's
 * threads can be joined.  Call before destroying the sandbox.  NULL ok.
 */
void lg_gate_net_close(struct lg_gate_net *n);
/* After the sandbox is destroyed.  NULL ok. */
void lg_gate_net_free(struct lg_gate_net *n);

#endif
