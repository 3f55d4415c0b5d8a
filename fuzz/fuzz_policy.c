/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the policy parser and, when a document parses, the matchers it
 * compiled: a policy file is written by a person, and a typo in it must be
 * an error, never a crash or a hang of the server reading it.
 */
#include "policy/policy.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const actions[][3] = {
    {"sandbox_exec", "{\"sandbox_id\": \"a\", \"command\": \"rm -rf / ; echo hi\"}", "{}"},
    {"sandbox_run", "{\"argv\": [\"sh\", \"-c\", \"dd if=/dev/zero of=/dev/vda\"]}", NULL},
    {"sandbox_fs_write",
     "{\"sandbox_id\": \"a\", \"path\": \"/tmp/../etc//passwd\", \"content\": \"x\", \"mode\": "
     "420}",
     "{\"host_mount\": false}"},
    {"sandbox_destroy", "{\"sandbox_id\": \"a\"}", "{\"sandbox_dirty\": true}"},
    {"tool_call", "{\"server\": \"gh\", \"tool\": \"delete_repo\", \"destructive\": true}", NULL},
    {"net_connect", "{\"host\": \"example.com\", \"port\": 443}", NULL},
    {"unknown", NULL, NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy *p = NULL;
	struct lg_err *err = NULL;

	if (policy_parse((const char *)data, size, &p, &err) == 0) {
		for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
			json_t *args = actions[i][1] ? json_loads(actions[i][1], 0, NULL) : NULL;
			json_t *ctx = actions[i][2] ? json_loads(actions[i][2], 0, NULL) : NULL;
			struct policy_decision d;

			policy_classify(p, actions[i][0], args, ctx, &d);
			policy_decision_clear(&d);
			json_decref(args);
			json_decref(ctx);
		}
		policy_free(p);
	}
	lg_err_free(&err);
	return 0;
}
