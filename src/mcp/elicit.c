/* SPDX-License-Identifier: Apache-2.0 */
/* MCP elicitation as an lg_asker (elicit.h). */
#include "mcp/elicit.h"

#include "approval/tty.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

/*
 * The client's user sees the same card as the terminal and `approvals
 * show`, rendered by the same code, control characters escaped (a client
 * may print it on a terminal).  It also says who may decide, and that the
 * answer given here is taken as the client's report.
 */
static json_t *elicitation_params(const json_t *card)
{
	const char *tool = json_string_value(json_object_get(card, "tool"));
	bool net = tool != NULL && strcmp(tool, "network") == 0;
	cleanup_free char *body = approval_card_render(card);
	cleanup_free char *msg = xasprintf("LuminaGuard asks for approval %s.\n%s",
					   json_string_value(json_object_get(card, "approval")),
					   body != NULL ? body : "");

	return json_pack("{s:s, s:{s:s, s:{s:{s:s, s:s, s:s}, s:{s:s, s:s}}, s:[s]}}", "message",
			 msg, "requestedSchema", "type", "object", "properties", "approve", "type",
			 "boolean", "title", "Approve", "description",
			 net ? "Allow connections to this destination, from this sandbox only"
			     : "Allow this action to run",
			 "reason", "type", "string", "description", "why (optional)", "required",
			 "approve");
}

struct elicit_token {
	int64_t eid;
};

static void *elicit_ask(void *ctx, struct approval *a, const json_t *card)
{
	struct mcp_elicit *e = ctx;
	struct elicit_token *t = xzalloc(sizeof(*t));

	/*
	 * Tracked either way, so that a closing session can cancel the wait.
	 * The client is not asked when its answer would not count (--decide).
	 */
	t->eid = mcp_send_elicitation(e->ss, e->call,
				      mcp_session_elicits(e->ss) &&
					      (approval_channels(a) & APPROVAL_CH_ELICITATION)
					  ? elicitation_params(card)
					  : NULL,
				      a);
	return t;
}

static void elicit_forget(void *ctx, void *token)
{
	struct mcp_elicit *e = ctx;
	struct elicit_token *t = token;

	if (t != NULL && t->eid > 0)
		mcp_forget_elicitation(e->ss, e->call, t->eid);
	free(t);
}

static const struct lg_asker_ops elicit_ops = {
    .ask = elicit_ask,
    .forget = elicit_forget,
};

struct lg_asker mcp_elicit_asker(struct mcp_elicit *e)
{
	return (struct lg_asker){.ops = &elicit_ops, .ctx = e};
}
