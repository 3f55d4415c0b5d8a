/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy of the approval cliff: classifies every action that reaches
 * the host boundary as green (runs) or red (needs a human's yes), with a
 * risk level and a reason.  Anything the policy does not know is red.
 * docs/policy.md describes the file format and the default policy.
 */
#ifndef LG_POLICY_POLICY_H
#define LG_POLICY_POLICY_H

#include "common/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum policy_verdict {
	POLICY_GREEN = 0,
	POLICY_RED = 1,
};

enum policy_risk {
	POLICY_RISK_LOW = 0,
	POLICY_RISK_MEDIUM,
	POLICY_RISK_HIGH,
	POLICY_RISK_CRITICAL,
};

const char *policy_verdict_name(enum policy_verdict v);
const char *policy_risk_name(enum policy_risk r);

struct policy;

struct policy_decision {
	enum policy_verdict verdict;
	enum policy_risk risk;
	char *rule;   /* name of the matching rule, or "default" */
	char *reason; /* for humans: why this verdict */
};

/* The built-in default policy (never fails short of out-of-memory). */
struct policy *policy_default(void);
/* Parses a policy document.  On error *err names the bad field. */
int policy_parse(const char *text, size_t len, struct policy **out, struct lg_err **err);
int policy_load_file(const char *path, struct policy **out, struct lg_err **err);
void policy_free(struct policy *p);

/* The JSON text of the built-in default policy (static; `policy show`). */
const char *policy_default_text(void);
/* Number of rules in p (`policy check` reports it). */
size_t policy_rule_count(const struct policy *p);

/*
 * Classifies one action.  `tool` is the action's name (an MCP tool name
 * such as "sandbox_exec"), `args` its arguments (a JSON object, borrowed,
 * may be NULL), `context` facts the server adds (a JSON object, borrowed,
 * may be NULL), e.g. {"sandbox_dirty": true}.  Thread-safe: a policy is
 * immutable once loaded.  Fill *out; free with policy_decision_clear().
 */
void policy_classify(const struct policy *p, const char *tool, const json_t *args,
		     const json_t *context, struct policy_decision *out);
void policy_decision_clear(struct policy_decision *d);

#endif
