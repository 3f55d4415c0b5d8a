/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket's request parser.  Its input comes from any process
 * of our uid (or root), so it is treated as untrusted: every field is
 * type-checked and bounded here, and the server acts only on the result.
 */
#include "approval/control_req.h"

#include "common/util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *name;
	enum control_op op;
	bool needs_id;
	bool takes_reason;
} ops[] = {
    {"list", CONTROL_LIST, false, false},
    {"show", CONTROL_SHOW, true, false},
    {"approve", CONTROL_APPROVE, true, true},
    {"deny", CONTROL_DENY, true, true},
};

void control_req_clear(struct control_req *req)
{
	free(req->id);
	free(req->reason);
	req->id = req->reason = NULL;
}

int control_req_parse(const char *line, size_t len, struct control_req *req, char *why,
		      size_t why_len)
{
	json_error_t jerr;
	json_t *j;
	json_t *v;
	const char *op;
	int found = -1;
	int r = -1;

	memset(req, 0, sizeof(*req));
	/* No JSON_ALLOW_NUL: an id or reason with a NUL in it is refused here. */
	j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL) {
		snprintf(why, why_len, "malformed request: %s", jerr.text);
		goto out;
	}
	if (!json_is_object(j)) {
		snprintf(why, why_len, "malformed request: not a JSON object");
		goto out;
	}
	op = json_string_value(json_object_get(j, "op"));
	if (op == NULL) {
		snprintf(why, why_len, "missing \"op\"");
		goto out;
	}
	for (size_t i = 0; i < ARRAY_SIZE(ops); i++)
		if (strcmp(op, ops[i].name) == 0)
			found = (int)i;
	if (found < 0) {
		/* the op is echoed only when short and printable: the reply is read by people */
		bool plain = strlen(op) <= 32;
		for (const char *p = op; *p != '\0' && plain; p++)
			plain = *p > 0x20 && *p < 0x7f;
		snprintf(why, why_len, "unknown op: %s", plain ? op : "(unprintable)");
		goto out;
	}
	req->op = ops[found].op;
	if (ops[found].needs_id) {
		v = json_object_get(j, "id");
		if (!json_is_string(v)) {
			snprintf(why, why_len, "missing \"id\"");
			goto out;
		}
		if (json_string_length(v) == 0 || json_string_length(v) > CONTROL_ID_MAX) {
			snprintf(why, why_len, "\"id\" must be 1 to %d bytes", CONTROL_ID_MAX);
			goto out;
		}
		req->id = xstrdup(json_string_value(v));
	}
	v = json_object_get(j, "reason");
	if (ops[found].takes_reason && v != NULL && !json_is_null(v)) {
		if (!json_is_string(v)) {
			snprintf(why, why_len, "\"reason\" must be a string");
			goto out;
		}
		req->reason = xstrdup(json_string_value(v));
	}
	r = 0;
out:
	if (r < 0)
		control_req_clear(req);
	/* jansson quotes the bad token: keep the reply one printable line whatever it was */
	for (char *p = why; r < 0 && *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	json_decref(j);
	return r;
}
