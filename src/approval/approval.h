/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Approval requests: a red action waits here for a human's decision, which
 * can come from any channel (MCP elicitation, the out-of-band CLI over the
 * control socket, a terminal prompt); the first decision wins, and a
 * timeout is a deny.  The agent never decides for the human.
 */
#ifndef LG_APPROVAL_APPROVAL_H
#define LG_APPROVAL_APPROVAL_H

#include "common/err.h"

#include <jansson.h>
#include <stdbool.h>

struct audit_log;
struct approval_broker;
struct approval;

enum approval_state {
	APPROVAL_PENDING,
	APPROVAL_APPROVED,
	APPROVAL_DENIED,
	APPROVAL_TIMED_OUT,
	APPROVAL_CANCELLED, /* the session that asked went away */
};

const char *approval_state_name(enum approval_state s);

/*
 * The channels a decision can come through.  They are not equally
 * trustworthy: an elicitation answer is only the MCP client's report of
 * what its user said (a compromised client can answer itself), while the
 * control socket and a terminal prompt of the server reach the human
 * without the client in between.
 */
enum approval_channel {
	APPROVAL_CH_ELICITATION = 1u << 0, /* MCP elicitation: the client's word */
	APPROVAL_CH_CLI = 1u << 1,	   /* `luminaguard approvals`, over the control socket */
	APPROVAL_CH_TTY = 1u << 2,	   /* a terminal prompt of the server itself */
	APPROVAL_CH_ALL = (1u << 3) - 1,
};

/* Risk levels as the card's "risk" names them; a card without one counts as critical. */
enum { APPROVAL_RISKS = 4 };
extern const char *const approval_risk_names[APPROVAL_RISKS]; /* low .. critical */

/* "elicitation", "cli", "tty", or "unknown". */
const char *approval_channel_name(enum approval_channel ch);
/* The names in mask, comma-separated ("cli, tty"; "none"). New string. */
char *approval_channels_text(unsigned mask);

/*
 * Parses one `--decide RISK=CHANNEL[,CHANNEL...]` into masks (indexed by
 * risk; RISK may also be "all").  Channels: elicitation, cli, tty.
 * Returns 0, or <0 with *err saying what is wrong.
 */
int approval_decide_opt_parse(const char *spec, unsigned masks[APPROVAL_RISKS],
			      struct lg_err **err);

/* timeout_s: how long a request waits before it is denied (0: 300). */
struct approval_broker *approval_broker_new(unsigned timeout_s, struct audit_log *audit);
/* Cancels every pending request, then frees. */
void approval_broker_free(struct approval_broker *b);
unsigned approval_broker_timeout(const struct approval_broker *b);
/*
 * Which channels may decide a request of each risk (default: every channel
 * for every risk).  A decision from another channel is refused and logged,
 * and the request stays pending.  Set before the first approval_file().
 */
void approval_broker_set_channels(struct approval_broker *b, const unsigned masks[APPROVAL_RISKS]);

/*
 * Files a request.  `card` (borrowed, copied) is the "diff card" a human
 * sees: {"tool","summary","where","risk","reason", and for file writes
 * "before"/"after"}.  Returns a reference the caller must release with
 * approval_put(); its id is "ap-" and 12 hex digits.
 */
struct approval *approval_file(struct approval_broker *b, const json_t *card);
/*
 * Same, with the whole action (`action`, borrowed, copied: e.g. the tool's
 * full arguments) kept beside the card, for `approvals show`: a card is
 * bounded to fit a screen and the audit log, the action is not.  The broker
 * adds "channels" (who may decide) to its copy of the card.
 */
struct approval *approval_file_full(struct approval_broker *b, const json_t *card,
				    const json_t *action);
const char *approval_id(const struct approval *a);
/* The channels that may decide a (a mask of enum approval_channel). */
unsigned approval_channels(const struct approval *a);
/*
 * A copy of a's card as the broker holds it: with its "approval" id and
 * "channels".  New reference.
 */
json_t *approval_card(struct approval *a);
/*
 * Blocks until a decision or the timeout.  Returns the final state; *decider
 * and *reason (new strings, may be NULL) say who decided and why.
 */
enum approval_state approval_wait(struct approval *a, char **decider, char **reason);
void approval_put(struct approval *a);

/*
 * Decides a pending request by id, as reported through channel ch.
 * -ENOENT: no such pending request (or already decided: the first decision
 * wins).  -EPERM: ch may not decide a request of this risk (logged and
 * recorded; the request stays pending for an allowed channel).
 */
int approval_decide(struct approval_broker *b, const char *id, bool approve,
		    enum approval_channel ch, const char *decider, const char *reason,
		    struct lg_err **err);
/* Same, by reference (used by the elicitation path). */
int approval_decide_ref(struct approval *a, bool approve, enum approval_channel ch,
			const char *decider, const char *reason);
/* Cancels (session gone): waiters wake with APPROVAL_CANCELLED. */
void approval_cancel(struct approval *a);

/* The pending requests as a JSON array of {"id","card","created","expires_in_s"}. New ref. */
json_t *approval_list_pending(struct approval_broker *b);
/*
 * One pending request in full: {"id","card","action","created","expires_in_s"}
 * ("action" null when none was filed).  NULL when id is not pending.  New ref.
 */
json_t *approval_show(struct approval_broker *b, const char *id);

/*
 * The control socket for out-of-band decisions (`luminaguard approvals`):
 * a unix socket at path, created with mode 0600 in a 0700 directory, and
 * only connections from the same uid (or root), checked with SO_PEERCRED,
 * are served.  One JSON request line, one JSON response line:
 *   {"op":"list"} -> {"ok":true,"pending":[...]}
 *   {"op":"show","id":ID} -> {"ok":true,"approval":{...approval_show()...}}
 *   {"op":"approve","id":ID[,"reason":R]} / {"op":"deny",...} -> {"ok":true} |
 * {"ok":false,"error":"..."} Runs on its own thread until approval_control_stop().
 */
struct approval_control;
int approval_control_start(struct approval_broker *b, const char *path,
			   struct approval_control **out, struct lg_err **err);
void approval_control_stop(struct approval_control *c);

/* Default control socket path: lg_home_dir()/control.sock. New string. */
char *approval_control_default_path(void);

#endif
