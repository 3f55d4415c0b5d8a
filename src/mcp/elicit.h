/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MCP elicitation as one of the approval step's ways of asking a human
 * (approval/gate.h's struct lg_asker): the card goes to the client as an
 * elicitation/create, and its answer decides the approval (session.c
 * matches it).  Used for tool calls and, with no call, for a sandbox's
 * network requests (approval/gate_net.h).
 */
#ifndef LG_MCP_ELICIT_H
#define LG_MCP_ELICIT_H

#include "approval/gate.h"
#include "mcp/session.h"

/* The asker's context: must outlive every ask through it. */
struct mcp_elicit {
	struct mcp_session *ss;
	/*
	 * The tool call the question belongs to (cancelling the call cancels
	 * it; the elicitation goes on the call's stream), or NULL for one that
	 * belongs to no call (a sandbox's network request: it goes on the
	 * session's own stream, and closing the session cancels it).
	 */
	struct mcp_call *call;
};

/* An lg_asker over e (borrowed). */
struct lg_asker mcp_elicit_asker(struct mcp_elicit *e);

#endif
