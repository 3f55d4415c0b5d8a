/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The approval step, one module for every front end (`run`, MCP, the HTTP
 * API) and for egress: classify an action with the policy, audit the
 * request, and if it is red build its card, file it with the broker and
 * wait for a human; then audit the outcome.  A timeout is a no.
 *
 * The ways of asking a human are an ops table (struct lg_asker): the
 * broker's own channels (`luminaguard approvals` over the control socket)
 * always count; a front end adds its own, such as MCP elicitation or a
 * terminal prompt.  The first decision on any channel wins.
 */
#ifndef LG_APPROVAL_GATE_H
#define LG_APPROVAL_GATE_H

#include "approval/approval.h"
#include "common/metrics.h"
#include "policy/policy.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit_log;

/* One way of asking a human.  All ops may be NULL. */
struct lg_asker_ops {
	/*
	 * Called once the approval is filed, with the card as the broker holds
	 * it (with its id and who may decide).  Asks the human (or starts to:
	 * it must not block past the broker's timeout) and returns a token
	 * for forget, or NULL.  It decides through approval_decide_ref().
	 */
	void *(*ask)(void *ctx, struct approval *a, const json_t *card);
	/*
	 * After the wait, decided or not: withdraw the question.  Called for
	 * every asker, with what its ask returned (NULL included).
	 */
	void (*forget)(void *ctx, void *token);
};

struct lg_asker {
	const struct lg_asker_ops *ops;
	void *ctx;
};

struct lg_gate {
	const struct policy *policy;	/* borrowed, required */
	struct audit_log *audit;	/* borrowed; NULL: nothing is recorded */
	struct approval_broker *broker; /* borrowed, required */
	struct lg_metric *approvals;	/* luminaguard_approvals_total, or NULL */
};

/*
 * Reads the "before" content of a file write for the card (*out: new
 * buffer).  Returns 0; -1 when it cannot be read (the card's "before" is
 * null); -2 when there is nothing to read it from, such as no such sandbox
 * (the card has no "before").  Front ends with a sandbox to read from pass
 * one.
 */
typedef int (*lg_gate_read_fn)(void *ctx, const char *path, uint8_t **out, size_t *len);

struct lg_gate_req {
	const char *who;       /* the "session" in the audit log: an MCP session id, "api", "cli" */
	const char *tool;      /* the MCP tool name the policy knows: sandbox_exec, ... */
	const json_t *args;    /* as the tool takes them */
	const json_t *context; /* facts for the policy (sandbox_dirty, ...), may be NULL */
	const char *request_id;	       /* logged and audited when non-NULL */
	const struct lg_asker *askers; /* besides the broker's channels; may be NULL */
	size_t n_askers;
	lg_gate_read_fn read_before; /* may be NULL */
	void *read_ctx;
	/*
	 * For actions the policy does not classify (egress, approval/gate_net.h):
	 * the verdict, risk, rule and reason to use instead (copied).  NULL:
	 * the policy decides.
	 */
	const struct policy_decision *decision;
	const char *summary; /* the card's one line; NULL: made from args */
	const char *note;    /* the card's "note": what a yes can and cannot open; may be NULL */
};

/*
 * Audits the request, classifies it, and for a red action asks and waits.
 * Returns true if the action may run.  Otherwise *denial (new string) says
 * in one line why not — denied, timed out, a relative path, or an audit log
 * that cannot be written — and the "not run" outcome is already audited.
 */
bool lg_gate_enter(const struct lg_gate *g, const struct lg_gate_req *r, char **denial);

/*
 * Audits the outcome of an action that ran: "ok" or "error", with the
 * extra fields of `fields` (stolen, may be NULL: exit_code, sandbox_id,
 * error).  Returns false if the audit log cannot be written.
 */
bool lg_gate_outcome(const struct lg_gate *g, const struct lg_gate_req *r, const char *outcome,
		     json_t *fields);

/* Records one event (stolen); false if the log cannot be written. */
bool lg_gate_audit(const struct lg_gate *g, json_t *event);

/*
 * The bytes a sandbox_fs_write of `args` writes: "content", decoded as its
 * "encoding" says (utf-8, the default, or base64).  *out: new buffer.
 * Returns 0, or -1 with why.  The card's "after" and the tool use this one
 * decoder, so what a human approves is what is written.
 */
int lg_gate_write_payload(const json_t *args, uint8_t **out, size_t *len, char *why, size_t whylen);

/*
 * The command an exec runs, from the tools' arguments (sandbox_exec,
 * sandbox_run, the API's exec): `command`, a shell line run as /bin/sh -c,
 * or `argv`, a non-empty array of at most max_args strings without NUL
 * bytes; exactly one of them (NULL: not given).  `env` (NULL or JSON null:
 * none) is an object of strings, each NAME=VALUE.  New NULL-terminated
 * vectors in *argv_out and *env_out (NULL without env), freed with
 * lg_strv_free (common/util.h).  Returns 0, or -1 with why and nothing allocated.  The API
 * and MCP use this one builder, so they run the same command for the same
 * arguments, the one the card showed.
 */
int lg_gate_exec_command(const json_t *argv, const char *command, const json_t *env,
			 size_t max_args, char ***argv_out, char ***env_out, char *why,
			 size_t whylen);

#endif
