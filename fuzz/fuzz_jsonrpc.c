/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the MCP JSON-RPC layer: any bytes a client sends get a valid
 * JSON-RPC answer or none, never a crash.  tools/call is left out (it boots
 * VMs); its argument checking is covered by the SDK tests.
 */
#include "approval/approval.h"
#include "mcp/mcp.h"
#include "policy/policy.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int check_reply(void *transport, void *stream, const char *json)
{
	json_error_t e;
	json_t *j = json_loads(json, 0, &e);

	/* Whatever we send must be a JSON-RPC 2.0 object. */
	if (j == NULL || !json_is_object(j) ||
	    strcmp(json_string_value(json_object_get(j, "jsonrpc")) ?: "", "2.0") != 0)
		abort();
	json_decref(j);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mcp_server *srv;
	struct mcp_session *ss;
	json_t *j;

	if (srv == NULL) {
		static struct mcp_server_opts o;
		o.policy = policy_default();
		o.broker = approval_broker_new(1, NULL);
		if (mcp_server_new(&o, &srv, NULL) < 0)
			abort();
	}
	j = json_loadb((const char *)data, size, 0, NULL);
	if (j != NULL) {
		const char *m = json_string_value(json_object_get(j, "method"));
		bool skip = m != NULL && strcmp(m, "tools/call") == 0;
		json_decref(j);
		if (skip)
			return 0;
	}
	ss = mcp_session_new(srv, check_reply, NULL);
	/* Initialize first half the time, so tools/list and friends are reached. */
	if (size > 0 && (data[0] & 1)) {
		static const char init[] =
		    "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{"
		    "\"protocolVersion\":\"2025-06-18\",\"capabilities\":{}}}";
		mcp_session_handle_text(ss, init, sizeof(init) - 1, NULL);
	}
	mcp_session_handle_text(ss, (const char *)data, size, NULL);
	mcp_session_close(ss);
	return 0;
}
