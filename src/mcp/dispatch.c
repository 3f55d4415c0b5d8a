/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The top of the MCP core (see session.h for the layers): JSON-RPC 2.0
 * validation and dispatch, version negotiation, the quick methods, and
 * tools/call on worker threads, one per call, each running the tool
 * through tools.c and sending its result.
 */
#include "mcp/mcp.h"
#include "mcp/session.h"
#include "mcp/tools.h"

#include "common/log.h"
#include "common/util.h"
#include "lg-config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOOLS_PAGE_SIZE 50

const char *const mcp_protocol_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", NULL};

bool mcp_protocol_supported(const char *version)
{
	for (size_t i = 0; version != NULL && mcp_protocol_versions[i] != NULL; i++)
		if (strcmp(version, mcp_protocol_versions[i]) == 0)
			return true;
	return false;
}

/* ---- answering ---- */

static void send_result(struct mcp_session *ss, void *stream, const json_t *id, json_t *result)
{
	mcp_send(ss, stream,
		 json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

static void send_error(struct mcp_session *ss, void *stream, const json_t *id, int code,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void send_error(struct mcp_session *ss, void *stream, const json_t *id, int code,
		       const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	mcp_send(ss, stream,
		 json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
			   id != NULL ? id : json_null(), "error", "code", code, "message", msg));
}

/* ---- tool calls on worker threads ---- */

static void call_free(struct mcp_call *c)
{
	json_decref(c->id);
	json_decref(c->args);
	free(c->name);
	if (c->cancel_pipe[0] >= 0)
		close(c->cancel_pipe[0]);
	if (c->cancel_pipe[1] >= 0)
		close(c->cancel_pipe[1]);
	free(c);
}

static void *call_main(void *arg)
{
	struct mcp_call *c = arg;
	struct mcp_session *ss = c->ss;
	json_t *result;

	lg_log_set_request_id(c->rid);
	result = mcp_tools_call(ss, c);

	/* A cancelled request gets no response (MCP: cancellation). */
	if (!mcp_session_call_cancelled(ss, c))
		send_result(ss, c->stream, c->id, result);
	else
		json_decref(result);
	/* Last: once it is off the list, a closing session may free ss. */
	mcp_session_end_call(ss, c);
	call_free(c);
	lg_log_set_request_id(NULL);
	return NULL;
}

static int start_call(struct mcp_session *ss, void *stream, const json_t *id, const json_t *params)
{
	const char *name = json_string_value(json_object_get(params, "name"));
	const json_t *args = json_object_get(params, "arguments");
	pthread_attr_t attr;
	pthread_t t;
	struct mcp_call *c;

	if (name == NULL) {
		send_error(ss, stream, id, MCP_INVALID_PARAMS,
			   "tools/call: params.name must be a string");
		return 1;
	}
	if (!mcp_tool_exists(name)) {
		send_error(ss, stream, id, MCP_INVALID_PARAMS, "Unknown tool: %s", name);
		return 1;
	}
	if (args != NULL && !json_is_object(args)) {
		send_error(ss, stream, id, MCP_INVALID_PARAMS,
			   "tools/call: params.arguments must be an object");
		return 1;
	}
	c = xzalloc(sizeof(*c));
	c->ss = ss;
	c->stream = stream;
	c->id = json_deep_copy(id);
	c->name = xstrdup(name);
	c->args = args != NULL ? json_deep_copy(args) : json_object();
	memcpy(c->rid, "mcp-", 4);
	lg_random_hex(c->rid + 4, 8);
	if (pipe2(c->cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		c->cancel_pipe[0] = c->cancel_pipe[1] = -1;
		call_free(c);
		send_error(ss, stream, id, MCP_INTERNAL_ERROR, "cannot create a pipe");
		return 1;
	}
	if (mcp_session_add_call(ss, c) < 0) {
		call_free(c);
		send_error(ss, stream, id, MCP_INTERNAL_ERROR,
			   "too many tool calls in flight (at most %d)", MCP_MAX_RUNNING_PER_SESS);
		return 1;
	}

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, call_main, c) != 0) {
		pthread_attr_destroy(&attr);
		mcp_session_end_call(ss, c);
		send_error(ss, stream, id, MCP_INTERNAL_ERROR, "cannot start a worker thread");
		call_free(c);
		return 1;
	}
	pthread_attr_destroy(&attr);
	return 1;
}

/* ---- methods ---- */

static void do_initialize(struct mcp_session *ss, void *stream, const json_t *id,
			  const json_t *params)
{
	const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
	const json_t *caps = json_object_get(params, "capabilities");
	const json_t *info = json_object_get(params, "clientInfo");
	const char *version;

	if (asked == NULL || !json_is_object(caps)) {
		send_error(ss, stream, id, MCP_INVALID_PARAMS,
			   "initialize: protocolVersion (string) and capabilities (object) are "
			   "required");
		return;
	}
	/* The client's version if we speak it, else our newest (the client decides). */
	version = mcp_protocol_versions[0];
	for (size_t i = 0; mcp_protocol_versions[i] != NULL; i++)
		if (strcmp(asked, mcp_protocol_versions[i]) == 0)
			version = mcp_protocol_versions[i];
	/* Elicitation exists from 2025-06-18 on; an older session never gets it. */
	mcp_session_set_client(ss, version,
			       json_is_object(json_object_get(caps, "elicitation")) &&
				   strcmp(version, "2025-03-26") != 0,
			       json_string_value(json_object_get(info, "name")));

	send_result(ss, stream, id,
		    json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}", "protocolVersion", version,
			      "capabilities", "tools", "listChanged", 0, "serverInfo", "name",
			      "luminaguard", "version", LG_VERSION, "instructions",
			      "LuminaGuard runs commands in throw-away micro-VMs. Create a "
			      "sandbox with sandbox_create, run commands with sandbox_exec, move "
			      "files with sandbox_fs_*, and destroy it with sandbox_destroy; or "
			      "use sandbox_run for one command in a fresh VM. Actions the "
			      "policy marks red wait for a human's approval."));
}

static void do_tools_list(struct mcp_session *ss, void *stream, const json_t *id,
			  const json_t *params)
{
	json_t *all = mcp_tools_list();
	const char *cursor = json_string_value(json_object_get(params, "cursor"));
	size_t start = 0, n = json_array_size(all);
	json_t *page, *result;

	if (json_object_get(params, "cursor") != NULL) {
		uint64_t v;
		/* Our cursors are "o:" and an offset; anything else was not ours. */
		if (cursor == NULL || strncmp(cursor, "o:", 2) != 0 ||
		    lg_parse_u64(cursor + 2, 0, n, &v) < 0) {
			json_decref(all);
			send_error(ss, stream, id, MCP_INVALID_PARAMS,
				   "tools/list: invalid cursor");
			return;
		}
		start = (size_t)v;
	}
	page = json_array();
	for (size_t i = start; i < n && i < start + TOOLS_PAGE_SIZE; i++)
		json_array_append(page, json_array_get(all, i));
	result = json_pack("{s:o}", "tools", page);
	if (start + TOOLS_PAGE_SIZE < n) {
		char next[32];
		snprintf(next, sizeof(next), "o:%zu", start + TOOLS_PAGE_SIZE);
		json_object_set_new(result, "nextCursor", json_string(next));
	}
	json_decref(all);
	send_result(ss, stream, id, result);
}

/* Validates one message; returns the number of responses it will produce. */
static int handle_one(struct mcp_session *ss, const json_t *msg, void *stream)
{
	const json_t *id, *params;
	const char *method;
	bool initialized;

	if (!json_is_object(msg)) {
		send_error(ss, stream, NULL, MCP_INVALID_REQUEST,
			   "a JSON-RPC message must be an object");
		return 1;
	}
	id = json_object_get(msg, "id");
	if (!json_is_string(json_object_get(msg, "jsonrpc")) ||
	    strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") != 0) {
		send_error(ss, stream, json_is_string(id) || json_is_integer(id) ? id : NULL,
			   MCP_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
		return 1;
	}
	if (json_object_get(msg, "method") == NULL) {
		if (json_object_get(msg, "result") != NULL ||
		    json_object_get(msg, "error") != NULL) {
			mcp_session_answer(ss, msg);
			return 0;
		}
		send_error(ss, stream, NULL, MCP_INVALID_REQUEST,
			   "neither a request nor a response");
		return 1;
	}
	method = json_string_value(json_object_get(msg, "method"));
	params = json_object_get(msg, "params");
	if (id != NULL && !json_is_string(id) && !json_is_integer(id)) {
		send_error(ss, stream, NULL, MCP_INVALID_REQUEST,
			   "id must be a string or an integer");
		return 1;
	}
	if (method == NULL) {
		if (id == NULL)
			return 0;
		send_error(ss, stream, id, MCP_INVALID_REQUEST, "method must be a string");
		return 1;
	}
	if (params != NULL && !json_is_object(params)) {
		if (id == NULL)
			return 0;
		send_error(ss, stream, id, MCP_INVALID_PARAMS, "params must be an object");
		return 1;
	}
	if (id == NULL) {
		/* Notifications: nothing to answer, whatever they say. */
		if (strcmp(method, "notifications/initialized") == 0)
			lg_debug("session %s: client initialized", mcp_session_id(ss));
		else if (strcmp(method, "notifications/cancelled") == 0 &&
			 json_object_get(params, "requestId") != NULL)
			mcp_session_cancel_call(ss, json_object_get(params, "requestId"));
		return 0;
	}

	initialized = mcp_session_protocol(ss) != NULL;

	if (strcmp(method, "initialize") == 0) {
		do_initialize(ss, stream, id, params);
		return 1;
	}
	if (strcmp(method, "ping") == 0) {
		send_result(ss, stream, id, json_object());
		return 1;
	}
	bool list = strcmp(method, "tools/list") == 0;
	if (list || strcmp(method, "tools/call") == 0) {
		if (!initialized) {
			send_error(ss, stream, id, MCP_INVALID_REQUEST, "%s before initialize",
				   method);
			return 1;
		}
		if (list)
			do_tools_list(ss, stream, id, params);
		else
			start_call(ss, stream, id, params);
		return 1;
	}
	send_error(ss, stream, id, MCP_METHOD_NOT_FOUND, "Method not found: %s", method);
	return 1;
}

int mcp_session_handle(struct mcp_session *ss, const json_t *msg, void *stream)
{
	if (json_is_array(msg)) {
		/* JSON-RPC batches were dropped from MCP in 2025-06-18; refuse them whole. */
		send_error(ss, stream, NULL, MCP_INVALID_REQUEST,
			   "batched messages are not supported");
		return 1;
	}
	return handle_one(ss, msg, stream);
}

int mcp_session_handle_text(struct mcp_session *ss, const char *text, size_t len, void *stream)
{
	json_error_t jerr;
	json_t *msg;
	int n;

	if (len > MCP_MAX_MESSAGE) {
		send_error(ss, stream, NULL, MCP_INVALID_REQUEST, "message larger than %u bytes",
			   MCP_MAX_MESSAGE);
		return 1;
	}
	msg = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (msg == NULL) {
		send_error(ss, stream, NULL, MCP_PARSE_ERROR, "Parse error: %s", jerr.text);
		return 1;
	}
	n = mcp_session_handle(ss, msg, stream);
	json_decref(msg);
	return n;
}
