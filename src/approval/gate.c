/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The approval step, once for every front end: classify, audit the
 * request, refuse relative paths, build the card of a red action, file it
 * with the broker, ask through every asker, wait, audit what did not run.
 */
#include "approval/gate.h"

#include "audit/audit.h"
#include "common/encoding.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the audit log ---- */

/*
 * What goes to the audit log of the arguments: the whole of them, so the
 * log says exactly what ran.  Up to AUDIT_ARGS_INLINE bytes of canonical
 * JSON they sit in the entry itself; larger ones (a 4 MiB file write) would
 * break the log's 1 MiB line limit, so the entry's "args" is then
 * "sha256:HEX", the hash of the canonical JSON (keys sorted, compact,
 * ASCII), and the text itself goes to a side file, LOG.blobs/HEX, written
 * and fsync'd before the entry (audit verify checks it).  NULL when the side
 * file cannot be written: the request's audit then fails and the action is
 * refused.
 */
#define AUDIT_ARGS_INLINE (64u << 10)

static json_t *audit_args(const struct lg_gate *g, const json_t *v)
{
	cleanup_free char *canon =
	    json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
	char ref[AUDIT_BLOB_REF_LEN + 1];
	struct lg_err *err = NULL;

	if (canon == NULL)
		return NULL;
	if (strlen(canon) <= AUDIT_ARGS_INLINE)
		return json_deep_copy(v);
	if (g->audit == NULL)
		return json_string("(not recorded: no audit log)");
	if (audit_put_blob(g->audit, canon, strlen(canon), ref, &err) < 0) {
		lg_error("audit log: %s", err->msg);
		lg_err_free(&err);
		return NULL;
	}
	return json_string(ref);
}

/*
 * Records an event (stolen).  Returns false if it could not be recorded:
 * the callers then refuse to act, because an action the log does not know
 * about is exactly what the log exists to prevent.
 */
bool lg_gate_audit(const struct lg_gate *g, json_t *event)
{
	struct lg_err *err = NULL;
	bool ok = true;

	if (g->audit != NULL && audit_append(g->audit, event, &err) < 0) {
		lg_error("audit log: %s", err->msg);
		lg_err_free(&err);
		ok = false;
	}
	json_decref(event);
	return ok;
}

static json_t *outcome_event(const struct lg_gate_req *r, const char *outcome)
{
	json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "type", "outcome", "session", r->who, "tool",
			       r->tool, "outcome", outcome);

	if (r->request_id != NULL)
		json_object_set_new(ev, "request_id", json_string(r->request_id));
	return ev;
}

bool lg_gate_outcome(const struct lg_gate *g, const struct lg_gate_req *r, const char *outcome,
		     json_t *fields)
{
	json_t *ev = outcome_event(r, outcome);

	/* The fields add to the event; they never rename what it is. */
	if (fields != NULL)
		json_object_update_missing(ev, fields);
	json_decref(fields);
	return lg_gate_audit(g, ev);
}

/* ---- the card ---- */

/*
 * A card must show everything the action depends on, or say plainly what
 * it left out.  It is bounded (it is shown on a screen, sent to the client
 * and written whole into the audit log, whose lines are at most 1 MiB), so
 * each string is cut at CARD_FIELD_CAP bytes and all of them together at
 * CARD_BUDGET; every cut is listed in the card's "omitted", with the full
 * size and SHA-256, and `luminaguard approvals show ID` gives the whole
 * action (the broker keeps it beside the card).
 */
#define CARD_FIELD_CAP 4096
#define CARD_BUDGET    (48u << 10)
#define CARD_MAX_ITEMS 256
#define CARD_MAX_DEPTH 8

#define CARD_KEY_CAP	 128
#define CARD_MAX_OMITTED 32

struct card_cut {
	json_t *omitted; /* array of strings */
	size_t budget;	 /* bytes of text still allowed */
	size_t unlisted; /* cuts past CARD_MAX_OMITTED, counted only */
};

static void card_omit(struct card_cut *cc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void card_omit(struct card_cut *cc, const char *fmt, ...)
{
	va_list ap;
	char *s;

	/* The list of cuts is bounded too: past it, they are only counted. */
	if (json_array_size(cc->omitted) >= CARD_MAX_OMITTED) {
		cc->unlisted++;
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	json_array_append_new(cc->omitted, json_string(s));
	free(s);
}

/* p[0..n) for a card, cut (and the cut recorded) as the caps say.  `what` names it. */
static json_t *card_bytes(struct card_cut *cc, const char *what, const uint8_t *p, size_t n)
{
	size_t cap = CARD_FIELD_CAP < cc->budget ? CARD_FIELD_CAP : cc->budget;
	size_t keep = n < cap ? n : cap;
	size_t m;
	cleanup_free char *s = lg_utf8_sanitize(p, keep, &m);

	if (keep < n) {
		char hex[LG_SHA256_HEX_LEN + 1];

		lg_sha256_hex_of(p, n, hex);
		card_omit(cc, "%s: only the first %zu of %zu bytes are shown (sha256 %s)", what,
			  keep, n, hex);
	}
	cc->budget -= keep;
	return json_stringn(s, m);
}

static json_t *card_value(struct card_cut *cc, const char *what, const json_t *v, int depth)
{
	json_t *copy;
	size_t i = 0;

	if (json_is_string(v))
		return card_bytes(cc, what, (const uint8_t *)json_string_value(v),
				  json_string_length(v));
	if (!json_is_object(v) && !json_is_array(v))
		return json_deep_copy(v);
	if (depth >= CARD_MAX_DEPTH) {
		card_omit(cc, "%s: nested deeper than %d levels, not shown", what, CARD_MAX_DEPTH);
		return json_string("(not shown)");
	}
	if (json_is_object(v)) {
		const char *k;
		json_t *e;

		copy = json_object();
		json_object_foreach((json_t *)v, k, e)
		{
			size_t klen = strlen(k);
			cleanup_free char *shown_key = NULL;
			cleanup_free char *sub = NULL;

			if (i++ == CARD_MAX_ITEMS) {
				card_omit(cc, "%s: %zu more keys not shown", what,
					  json_object_size(v) - CARD_MAX_ITEMS);
				break;
			}
			/* Names count against the budget too: a key can be megabytes long. */
			if (klen > CARD_KEY_CAP || klen > cc->budget) {
				char hex[LG_SHA256_HEX_LEN + 1];

				lg_sha256_hex_of(k, klen, hex);
				shown_key =
				    xasprintf("(a name of %zu bytes, sha256 %.16s...)", klen, hex);
				card_omit(cc, "%s: a name of %zu bytes is not shown (sha256 %s)",
					  what, klen, hex);
			} else {
				shown_key = xstrdup(k);
				cc->budget -= klen;
			}
			sub = xasprintf("%s.%s", what, shown_key);
			json_object_set_new(copy, shown_key, card_value(cc, sub, e, depth + 1));
		}
		return copy;
	}
	copy = json_array();
	for (i = 0; i < json_array_size(v); i++) {
		cleanup_free char *sub = xasprintf("%s[%zu]", what, i);
		if (i == CARD_MAX_ITEMS) {
			card_omit(cc, "%s: %zu more items not shown", what,
				  json_array_size(v) - CARD_MAX_ITEMS);
			break;
		}
		json_array_append_new(copy, card_value(cc, sub, json_array_get(v, i), depth + 1));
	}
	return copy;
}

/*
 * One line for lists: the command, argv or path, its first
 * CARD_SUMMARY_CAP bytes and how much more there is (the card's "args"
 * holds the rest).
 */
#define CARD_SUMMARY_CAP 200

static json_t *card_summary(const char *tool, const json_t *args)
{
	const char *command = json_string_value(json_object_get(args, "command"));
	const char *path = json_string_value(json_object_get(args, "path"));
	cleanup_free char *argv = NULL;
	cleanup_free char *clean = NULL;
	cleanup_free char *line = NULL;
	const char *what;
	size_t len, keep, m;

	if (command != NULL)
		what = command;
	else if (json_is_array(json_object_get(args, "argv")))
		what = argv = json_dumps(json_object_get(args, "argv"), JSON_COMPACT);
	else if (path != NULL)
		what = path;
	else
		return json_string(tool);
	len = what != NULL ? strlen(what) : 0;
	keep = len < CARD_SUMMARY_CAP ? len : CARD_SUMMARY_CAP;
	clean = lg_utf8_sanitize((const uint8_t *)(what != NULL ? what : ""), keep, &m);
	if (command != NULL)
		line = xasprintf("run `%s%s", clean, keep < len ? "" : "`");
	else if (argv != NULL)
		line = xasprintf("run %s", clean);
	else
		line = xasprintf("%s %s", tool, clean);
	if (keep < len) {
		char *t = xasprintf("%s ... (%zu more bytes; the whole of it is in the card's "
				    "args)",
				    line, len - keep);
		free(line);
		line = t;
	}
	return json_string(line);
}

static bool str_arg(const json_t *args, const char *key, bool required, const char **out, char *why,
		    size_t whylen)
{
	const json_t *v = json_object_get(args, key);

	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required)
			snprintf(why, whylen, "%s is required", key);
		return !required;
	}
	if (!json_is_string(v) || memchr(json_string_value(v), '\0', json_string_length(v))) {
		snprintf(why, whylen, "%s must be a string without NUL bytes", key);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

int lg_gate_write_payload(const json_t *args, uint8_t **out, size_t *len, char *why, size_t whylen)
{
	const char *content, *encoding;

	if (!str_arg(args, "content", true, &content, why, whylen) ||
	    !str_arg(args, "encoding", false, &encoding, why, whylen))
		return -1;
	if (encoding == NULL || strcmp(encoding, "utf-8") == 0) {
		*len = json_string_length(json_object_get(args, "content"));
		*out = xmalloc(*len + 1);
		memcpy(*out, content, *len);
		return 0;
	}
	if (strcmp(encoding, "base64") == 0) {
		if (lg_base64_decode(content, strlen(content), out, len) < 0) {
			snprintf(why, whylen, "content is not valid base64");
			return -1;
		}
		return 0;
	}
	snprintf(why, whylen, "encoding must be \"utf-8\" or \"base64\"");
	return -1;
}

/*
 * The "diff card" a human decides on: who asked (session), what (tool,
 * summary, and every argument in "args": argv or command, env, cwd, stdin,
 * timeout, path, mode...), where, why it is red, and for a file write the
 * content before and after.  What did not fit is listed in "omitted".
 */
static json_t *make_card(const struct lg_gate_req *r, const struct policy_decision *d)
{
	const char *tool = r->tool;
	const json_t *args = r->args;
	const char *sid = json_string_value(json_object_get(args, "sandbox_id"));
	json_t *card =
	    json_pack("{s:s, s:s, s:s, s:s, s:s}", "tool", tool, "risk", policy_risk_name(d->risk),
		      "rule", d->rule, "reason", d->reason, "session", r->who);
	const char *path = json_string_value(json_object_get(args, "path"));
	bool is_write = strcmp(tool, "sandbox_fs_write") == 0;
	struct card_cut cc = {.omitted = json_array(), .budget = CARD_BUDGET};
	json_t *shown_args;

	/* The sandbox id comes from the client, and can be as long as it likes. */
	json_object_set_new(
	    card, "where",
	    sid != NULL ? card_bytes(&cc, "where", (const uint8_t *)sid,
				     json_string_length(json_object_get(args, "sandbox_id")))
			: json_string("a new sandbox"));

	json_object_set_new(card, "summary",
			    r->summary != NULL ? json_string(r->summary)
					       : card_summary(tool, args));
	if (r->note != NULL)
		json_object_set_new(card, "note", json_string(r->note));
	if (is_write && json_is_object(args)) {
		/* The content is shown decoded, as "after"; its raw form would only repeat it. */
		json_t *rest = json_deep_copy(args);
		json_object_del(rest, "content");
		shown_args = card_value(&cc, "args", rest, 0);
		json_decref(rest);
	} else {
		shown_args = card_value(&cc, "args", args, 0);
	}
	json_object_set_new(card, "args", shown_args);

	if (is_write && sid != NULL && path != NULL) {
		char why[256];
		uint8_t *after = NULL, *before = NULL;
		size_t alen = 0, blen = 0;

		if (lg_gate_write_payload(args, &after, &alen, why, sizeof(why)) == 0) {
			json_object_set_new(card, "after", card_bytes(&cc, "after", after, alen));
			json_object_set_new(card, "after_bytes", json_integer((json_int_t)alen));
		}
		free(after);
		if (r->read_before != NULL) {
			int rr = r->read_before(r->read_ctx, path, &before, &blen);

			if (rr == 0) {
				json_object_set_new(card, "before",
						    card_bytes(&cc, "before", before, blen));
				json_object_set_new(card, "before_bytes",
						    json_integer((json_int_t)blen));
				free(before);
			} else if (rr == -1) {
				json_object_set_new(card, "before", json_null());
			}
		}
	}
	if (cc.unlisted > 0)
		json_array_append_new(
		    cc.omitted, json_sprintf("... and %zu more cuts, not listed", cc.unlisted));
	if (json_array_size(cc.omitted) > 0)
		json_object_set_new(card, "omitted", cc.omitted);
	else
		json_decref(cc.omitted);
	return card;
}

/* ---- the step ---- */

/*
 * Paths in the guest must be absolute.  A relative one would be resolved
 * by the agent against a working directory the policy cannot see, so
 * `etc/x` would pass a rule on `/etc/ **` and land in /etc/x: refusing it
 * before anything runs keeps what the classifier checked and what the
 * agent opens the same path.  ("cwd" too: a command's relative paths
 * start there.)  Returns NULL or the refusal.
 */
static char *relative_path_refusal(const char *tool, const json_t *args)
{
	static const char *const keys[] = {"path", "cwd"};

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const char *p = json_string_value(json_object_get(args, keys[i]));
		if (p != NULL && p[0] != '/') {
			size_t n;
			cleanup_free char *clean =
			    lg_utf8_sanitize((const uint8_t *)p, strnlen(p, 200), &n);
			return xasprintf("%s: %s must be an absolute path in the sandbox (starting "
					 "with /), not '%s'",
					 tool, keys[i], clean);
		}
	}
	return NULL;
}

/*
 * Red actions wait for a human: the request is filed with the broker (so
 * `luminaguard approvals` sees it), and every asker asks too (MCP
 * elicitation, a terminal); the first answer wins, and the broker's
 * timeout is a no.  Returns true if the action may run.
 */
static bool cliff(const struct lg_gate *g, const struct lg_gate_req *r,
		  const struct policy_decision *d, char **denial)
{
	json_t *card;
	struct approval *a;
	enum approval_state st;
	char *decider = NULL, *reason = NULL;
	void **tokens;

	if (d->verdict == POLICY_GREEN)
		return true;
	card = make_card(r, d);
	{
		/* The whole action, for `approvals show`: the card may be cut, this is not. */
		json_t *action = json_pack("{s:s, s:O}", "tool", r->tool, "args", r->args);
		a = approval_file_full(g->broker, card, action);
		json_decref(action);
	}
	if (r->request_id != NULL)
		lg_info("session %s: %s (request %s) needs approval %s (%s)", r->who, r->tool,
			r->request_id, approval_id(a), d->reason);
	else
		lg_info("session %s: %s needs approval %s (%s)", r->who, r->tool, approval_id(a),
			d->reason);
	/* As the broker holds it: with its id and who may decide. */
	json_decref(card);
	card = approval_card(a);
	tokens = xzalloc((r->n_askers + 1) * sizeof(*tokens));
	for (size_t i = 0; i < r->n_askers; i++)
		if (r->askers[i].ops->ask != NULL)
			tokens[i] = r->askers[i].ops->ask(r->askers[i].ctx, a, card);
	json_decref(card);
	st = approval_wait(a, &decider, &reason);
	for (size_t i = 0; i < r->n_askers; i++)
		if (r->askers[i].ops->forget != NULL)
			r->askers[i].ops->forget(r->askers[i].ctx, tokens[i]);
	free(tokens);
	if (g->approvals != NULL)
		lg_metric_inc(
		    lg_metric_child(g->approvals, (const char *const[]){approval_state_name(st)}));

	/* The broker has recorded the decision (and refuses a yes it cannot record). */
	if (st != APPROVAL_APPROVED)
		*denial = xasprintf("%s (approval %s) %s%s%s%s%s; the action did not run", r->tool,
				    approval_id(a),
				    st == APPROVAL_TIMED_OUT   ? "was not approved in time"
				    : st == APPROVAL_CANCELLED ? "was cancelled"
							       : "was denied",
				    decider != NULL ? " by " : "", decider != NULL ? decider : "",
				    reason != NULL ? ": " : "", reason != NULL ? reason : "");
	approval_put(a);
	free(decider);
	free(reason);
	return st == APPROVAL_APPROVED;
}

bool lg_gate_enter(const struct lg_gate *g, const struct lg_gate_req *r, char **denial)
{
	struct policy_decision d;
	json_t *ctx = r->context != NULL ? json_deep_copy(r->context) : json_object();
	json_t *ev;
	char *refusal;

	*denial = NULL;
	if (r->decision != NULL) {
		d.verdict = r->decision->verdict;
		d.risk = r->decision->risk;
		d.rule = xstrdup(r->decision->rule);
		d.reason = xstrdup(r->decision->reason);
	} else {
		policy_classify(g->policy, r->tool, r->args, r->context, &d);
	}
	ev = json_pack("{s:s, s:s, s:s, s:o, s:O, s:s, s:s, s:s, s:s}", "type", "request",
		       "session", r->who, "tool", r->tool, "args", audit_args(g, r->args),
		       "context", ctx, "verdict", policy_verdict_name(d.verdict), "risk",
		       policy_risk_name(d.risk), "rule", d.rule, "reason", d.reason);
	if (ev != NULL && r->request_id != NULL)
		json_object_set_new(ev, "request_id", json_string(r->request_id));
	json_decref(ctx);
	/* No event (its args could not be stored) is a log that cannot be written. */
	if (ev == NULL || !lg_gate_audit(g, ev)) {
		policy_decision_clear(&d);
		*denial =
		    xasprintf("%s: the audit log cannot be written; refusing to act", r->tool);
		return false;
	}

	refusal = relative_path_refusal(r->tool, r->args);
	if (refusal != NULL || !cliff(g, r, &d, denial)) {
		lg_gate_audit(g, outcome_event(r, refusal != NULL ? "not run: relative path"
								  : "not run: denied"));
		if (refusal != NULL)
			*denial = refusal;
		policy_decision_clear(&d);
		return false;
	}
	policy_decision_clear(&d);
	return true;
}

static void strv_add(char ***v, size_t *n, char *s)
{
	*v = xrealloc(*v, (*n + 2) * sizeof(char *));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

int lg_gate_exec_command(const json_t *argv, const char *command, const json_t *env,
			 size_t max_args, char ***argv_out, char ***env_out, char *why,
			 size_t whylen)
{
	char **av = NULL, **ev = NULL;
	size_t ac = 0, ec = 0;

	*argv_out = *env_out = NULL;
	if ((argv != NULL) == (command != NULL)) {
		snprintf(why, whylen,
			 "give either argv (an array of strings) or command (a shell command "
			 "line), not both or neither");
		return -1;
	}
	if (command != NULL) {
		strv_add(&av, &ac, xstrdup("/bin/sh"));
		strv_add(&av, &ac, xstrdup("-c"));
		strv_add(&av, &ac, xstrdup(command));
	} else {
		size_t i;
		json_t *v;

		if (!json_is_array(argv) || json_array_size(argv) == 0 ||
		    json_array_size(argv) > max_args) {
			snprintf(why, whylen,
				 "argv must be a non-empty array of at most %zu strings", max_args);
			return -1;
		}
		json_array_foreach(argv, i, v)
		{
			if (!json_is_string(v) ||
			    memchr(json_string_value(v), '\0', json_string_length(v))) {
				snprintf(why, whylen,
					 "argv[%zu] must be a string without NUL bytes", i);
				lg_strv_free(av);
				return -1;
			}
			strv_add(&av, &ac, xstrdup(json_string_value(v)));
		}
	}
	if (env != NULL && !json_is_null(env)) {
		const char *k;
		json_t *v;

		if (!json_is_object(env)) {
			snprintf(why, whylen, "env must be an object of strings");
			lg_strv_free(av);
			return -1;
		}
		json_object_foreach((json_t *)env, k, v)
		{
			if (!json_is_string(v) || *k == '\0' || strchr(k, '=') != NULL ||
			    memchr(json_string_value(v), '\0', json_string_length(v))) {
				size_t n;
				/* The name comes from the client: shown sanitized and cut. */
				cleanup_free char *ck =
				    lg_utf8_sanitize((const uint8_t *)k, strnlen(k, 64), &n);
				snprintf(why, whylen, "env.%s must be a string (and a valid name)",
					 ck);
				lg_strv_free(av);
				lg_strv_free(ev);
				return -1;
			}
			strv_add(&ev, &ec, xasprintf("%s=%s", k, json_string_value(v)));
		}
	}
	*argv_out = av;
	*env_out = ev;
	return 0;
}
