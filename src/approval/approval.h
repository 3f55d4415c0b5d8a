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

/* timeout_s: how long a request waits before it is denied (0: 300). */
struct approval_broker *approval_broker_new(unsigned timeout_s, struct audit_log *audit);
/* Cancels every pending request, then frees. */
void approval_broker_free(struct approval_broker *b);
unsigned approval_broker_timeout(const struct approval_broker *b);

/*
 * Files a request.  `card` (borrowed, copied) is the "diff card" a human
 * sees: {"tool","summary","where","risk","reason", and for file writes
 * "before"/"after"}.  Returns a reference the caller must release with
 * approval_put(); its id is "ap-" and 12 hex digits.
 */
struct approval *approval_file(struct approval_broker *b, const json_t *card);
const char *approval_id(const struct approval *a);
/*
 * Blocks until a decision or the timeout.  Returns the final state; *decider
 * and *reason (new strings, may be NULL) say who decided and why.
 */
enum approval_state approval_wait(struct approval *a, char **decider, char **reason);
void approval_put(struct approval *a);

/*
 * Decides a pending request by id.  -ENOENT: no such pending request (or
 * already decided: the first decision wins).
 */
int approval_decide(struct approval_broker *b, const char *id, bool approve, const char *decider,
		    const char *reason, struct lg_err **err);
/* Same, by reference (used by the elicitation path). */
int approval_decide_ref(struct approval *a, bool approve, const char *decider, const char *reason);
/* Cancels (session gone): waiters wake with APPROVAL_CANCELLED. */
void approval_cancel(struct approval *a);

/* The pending requests as a JSON array of {"id","card","created","expires_in_s"}. New ref. */
json_t *approval_list_pending(struct approval_broker *b);

/*
 * The control socket for out-of-band decisions (`luminaguard approvals`):
 * a unix socket at path, created with mode 0600 in a 0700 directory, and
 * only connections from the same uid (or root), checked with SO_PEERCRED,
 * are served.  One JSON request line, one JSON response line:
 *   {"op":"list"} -> {"ok":true,"pending":[...]}
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
