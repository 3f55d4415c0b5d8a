/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MCP sessions: JSON-RPC 2.0 validation and dispatch, version negotiation,
 * server-to-client requests, worker threads for tool calls, and the
 * registry of sandboxes each session owns.
 */
#include "mcp/internal.h"

#include "common/httpd.h"
#include "common/log.h"
#include "common/util.h"
#include "lg-config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

const char *const mcp_protocol_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", NULL};

#define TOOLS_PAGE_SIZE	      50
#define MAX_RUNNING_PER_SESS  32
#define DEFAULT_MAX_SANDBOXES 16

bool mcp_protocol_supported(const char *version)
{
	for (size_t i = 0; version != NULL && mcp_protocol_versions[i] != NULL; i++)
		if (strcmp(version, mcp_protocol_versions[i]) == 0)
			return true;
	return false;
}

/*
 * Session, sandbox and elicitation ids are capabilities: whoever knows a
 * session id speaks as that session over HTTP, and an elicitation id is what
 * lets a response decide an approval.  They come from the kernel's CSPRNG or
 * not at all: getrandom() of <= 256 bytes cannot fail once the pool is
 * ready (it blocks until then), so a failure means no usable getrandom
 * (ENOSYS, a seccomp filter) and there is no safe fallback; a time-derived
 * id could be guessed.  We abort, as approval ids do (approval.c): one
 * policy for every id, and a server that cannot make ids serves nobody.
 */
static void random_hex(char *out, size_t nbytes)
{
	lg_random_hex(out, nbytes);
	out[2 * nbytes] = '\0';
}

/* ---- sending ---- */

int mcp_send(struct mcp_session *ss, void *stream, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	int r;

	json_decref(msg);
	if (text == NULL)
		return -ENOMEM;
	r = ss->send(ss->transport, stream, text);
	free(text);
	return r;
}

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

/* ---- server-to-client requests ---- */

bool mcp_session_elicits(struct mcp_session *ss)
{
	bool r;

	pthread_mutex_lock(&ss->lock);
	r = ss->client_elicitation;
	pthread_mutex_unlock(&ss->lock);
	return r;
}

int64_t mcp_send_elicitation(struct mcp_session *ss, struct mcp_call *call, json_t *params,
			     struct approval *a)
{
	struct mcp_outreq *o;
	char wire_id[MCP_OUTREQ_ID_LEN];
	int64_t id;

	pthread_mutex_lock(&ss->lock);
	if (ss->closing || (call != NULL && call->cancelled)) {
		pthread_mutex_unlock(&ss->lock);
		json_decref(params);
		approval_cancel(a);
		return -1;
	}
	/* A client that did not declare elicitation is never asked. */
	if (!ss->client_elicitation) {
		json_decref(params);
		params = NULL;
	}
	id = ++ss->next_out_id;
	o = xzalloc(sizeof(*o));
	o->id = id;
	memcpy(o->wire_id, "el-", 3);
	random_hex(o->wire_id + 3, 16);
	memcpy(wire_id, o->wire_id, sizeof(wire_id));
	o->call = call;
	o->approval = a;
	/*
	 * Only a request that went out can be answered.  Set before the send:
	 * the client cannot answer sooner, it learns the random id from it.
	 */
	o->sent = params != NULL;
	o->next = ss->outreqs;
	ss->outreqs = o;
	pthread_mutex_unlock(&ss->lock);

	if (params == NULL)
		return id;
	if (mcp_send(ss, call != NULL ? call->stream : NULL,
		     json_pack("{s:s, s:s, s:s, s:o}", "jsonrpc", "2.0", "id", wire_id, "method",
			       "elicitation/create", "params", params)) < 0) {
		/* The client cannot be asked; the other channels still can. */
		pthread_mutex_lock(&ss->lock);
		for (struct mcp_outreq *it = ss->outreqs; it != NULL; it = it->next)
			if (it->id == id)
				it->sent = false;
		pthread_mutex_unlock(&ss->lock);
	}
	return id;
}

void mcp_forget_elicitation(struct mcp_session *ss, struct mcp_call *call, int64_t id)
{
	struct mcp_outreq **pp, *o = NULL;

	pthread_mutex_lock(&ss->lock);
	for (pp = &ss->outreqs; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			o = *pp;
			*pp = o->next;
			break;
		}
	}
	pthread_mutex_unlock(&ss->lock);
	if (o == NULL)
		return; /* the session closed */
	/* Still open at the client: it was decided through another channel. */
	if (o->sent && !o->answered)
		mcp_send(ss, call != NULL ? call->stream : NULL,
			 json_pack("{s:s, s:s, s:{s:s, s:s}}", "jsonrpc", "2.0", "method",
				   "notifications/cancelled", "params", "requestId", o->wire_id,
				   "reason", "decided through another channel"));
	free(o);
}

/* A client-chosen JSON-RPC id, short and printable, for a log line. */
static void id_for_log(const json_t *id, char *out, size_t n)
{
	char *text = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY | JSON_ENSURE_ASCII);

	snprintf(out, n, "%s", text != NULL ? text : "?");
	free(text);
}

/*
 * A response from the client.  It may only answer an elicitation/create this
 * server sent to this session and that is still unanswered: its id is 128
 * random bits, looked up in this session's list only, so a client cannot
 * answer a question that was never put to it (it did not declare
 * elicitation, the send failed) nor guess another session's.  Anything else
 * is logged and dropped: it decides nothing.
 *
 * The outreq stays in the list after an answer, marked answered, until the
 * worker that owns the approval forgets it: so a session close or a
 * notifications/cancelled still reaches an approval whose elicitation
 * failed.  Deciding happens under ss->lock, which the worker takes to
 * forget the outreq before it drops its reference: the approval cannot be
 * freed under us.
 */
static void handle_response(struct mcp_session *ss, const json_t *msg)
{
	const json_t *id = json_object_get(msg, "id");
	const json_t *result = json_object_get(msg, "result");
	const json_t *content = json_object_get(result, "content");
	const char *action = json_string_value(json_object_get(result, "action"));
	const char *why = json_string_value(json_object_get(content, "reason"));
	struct mcp_outreq *o = NULL;
	char reason[256];
	char decider[128];
	char shown[80];
	bool approve;

	id_for_log(id, shown, sizeof(shown));
	if (result != NULL && json_object_get(msg, "error") != NULL) {
		lg_warn("session %s: dropped a response with both result and error (id %s)", ss->id,
			shown);
		return;
	}
	/* Anything but an explicit accept with approve=true is a no. */
	approve = action != NULL && strcmp(action, "accept") == 0 &&
		  json_is_true(json_object_get(content, "approve"));
	if (why != NULL && *why != '\0')
		snprintf(reason, sizeof(reason), "%s", why);
	else
		snprintf(reason, sizeof(reason), "the user chose %s",
			 action != NULL ? action : "nothing");

	pthread_mutex_lock(&ss->lock);
	if (json_is_string(id))
		for (o = ss->outreqs; o != NULL; o = o->next)
			if (lg_secret_equal(json_string_value(id), o->wire_id))
				break;
	if (o == NULL || !o->sent || o->answered) {
		pthread_mutex_unlock(&ss->lock);
		lg_warn("session %s: dropped a response that answers no outstanding request of "
			"this session (id %s)",
			ss->id, shown);
		return;
	}
	o->answered = true;
	if (json_is_object(result)) {
		/*
		 * The decider is what the client says about itself: its name is
		 * its own choice, so the record says so.
		 */
		snprintf(decider, sizeof(decider), "elicitation (client-reported: %s)",
			 ss->client_name != NULL ? ss->client_name : "unnamed client");
		approval_decide_ref(o->approval, approve, APPROVAL_CH_ELICITATION, decider, reason);
	} else {
		/* The client could not ask its user: other channels still can. */
		lg_info("session %s: elicitation %s failed; waiting for another channel", ss->id,
			o->wire_id);
	}
	pthread_mutex_unlock(&ss->lock);
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
	json_t *result = mcp_tools_call(ss, c);

	/* A cancelled request gets no response (MCP: cancellation). */
	pthread_mutex_lock(&ss->lock);
	bool cancelled = c->cancelled;
	pthread_mutex_unlock(&ss->lock);
	if (!cancelled)
		send_result(ss, c->stream, c->id, result);
	else
		json_decref(result);
	pthread_mutex_lock(&ss->lock);
	for (struct mcp_call **pp = &ss->calls; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	ss->running--;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	call_free(c);
	return NULL;
}

/*
 * notifications/cancelled for a running tools/call: a command it runs is
 * killed, an approval it waits for is cancelled; the call then ends without
 * a response.
 */
static void cancel_call(struct mcp_session *ss, const json_t *request_id)
{
	pthread_mutex_lock(&ss->lock);
	for (struct mcp_call *c = ss->calls; c != NULL; c = c->next) {
		if (c->cancelled || !json_equal(c->id, (json_t *)request_id))
			continue;
		c->cancelled = true;
		if (write(c->cancel_pipe[1], "x", 1) < 0) {
			/* a full pipe already says it */
		}
		for (struct mcp_outreq *o = ss->outreqs; o != NULL; o = o->next)
			if (o->call == c)
				approval_cancel(o->approval);
	}
	pthread_mutex_unlock(&ss->lock);
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
	pthread_mutex_lock(&ss->lock);
	if (ss->closing || ss->running >= MAX_RUNNING_PER_SESS) {
		pthread_mutex_unlock(&ss->lock);
		send_error(ss, stream, id, MCP_INTERNAL_ERROR,
			   "too many tool calls in flight (at most %d)", MAX_RUNNING_PER_SESS);
		return 1;
	}
	c = xzalloc(sizeof(*c));
	c->ss = ss;
	c->stream = stream;
	c->id = json_deep_copy(id);
	c->name = xstrdup(name);
	c->args = args != NULL ? json_deep_copy(args) : json_object();
	if (pipe2(c->cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		pthread_mutex_unlock(&ss->lock);
		c->cancel_pipe[0] = c->cancel_pipe[1] = -1;
		call_free(c);
		send_error(ss, stream, id, MCP_INTERNAL_ERROR, "cannot create a pipe");
		return 1;
	}
	ss->running++;
	c->next = ss->calls;
	ss->calls = c;
	pthread_mutex_unlock(&ss->lock);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, call_main, c) != 0) {
		pthread_attr_destroy(&attr);
		pthread_mutex_lock(&ss->lock);
		ss->running--;
		for (struct mcp_call **pp = &ss->calls; *pp != NULL; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
		pthread_mutex_unlock(&ss->lock);
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
	pthread_mutex_lock(&ss->lock);
	/* Points into the static table: readers need no lock, and nothing is freed. */
	__atomic_store_n(&ss->protocol, version, __ATOMIC_RELEASE);
	/* Elicitation exists from 2025-06-18 on; an older session never gets it. */
	ss->client_elicitation = json_is_object(json_object_get(caps, "elicitation")) &&
				 strcmp(version, "2025-03-26") != 0;
	free(ss->client_name);
	ss->client_name = NULL;
	if (json_is_string(json_object_get(info, "name"))) {
		char name[64];
		snprintf(name, sizeof(name), "%s",
			 json_string_value(json_object_get(info, "name")));
		/*
		 * It ends up in the decider of approvals, in logs and on the
		 * CLI: printable ASCII only, and no parentheses, which frame it
		 * in "elicitation (client-reported: NAME)".
		 */
		for (char *p = name; *p; p++)
			if (*p < 0x20 || *p > 0x7e || *p == '(' || *p == ')')
				*p = '?';
		ss->client_name = xstrdup(name);
	}
	pthread_mutex_unlock(&ss->lock);

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
			handle_response(ss, msg);
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
			lg_debug("session %s: client initialized", ss->id);
		else if (strcmp(method, "notifications/cancelled") == 0 &&
			 json_object_get(params, "requestId") != NULL)
			cancel_call(ss, json_object_get(params, "requestId"));
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

/* ---- sessions ---- */

struct mcp_session *mcp_session_new(struct mcp_server *s, mcp_send_fn send, void *transport)
{
	struct mcp_session *ss = xzalloc(sizeof(*ss));
	pthread_condattr_t ca;

	ss->srv = s;
	ss->send = send;
	ss->transport = transport;
	random_hex(ss->id, 16);
	pthread_mutex_init(&ss->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ss->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_lock(&s->lock);
	ss->next = s->sessions;
	s->sessions = ss;
	pthread_mutex_unlock(&s->lock);
	return ss;
}

const char *mcp_session_id(const struct mcp_session *ss)
{
	return ss->id;
}

const char *mcp_session_protocol(const struct mcp_session *ss)
{
	return __atomic_load_n(&ss->protocol, __ATOMIC_ACQUIRE);
}

void mcp_session_close(struct mcp_session *ss)
{
	struct mcp_server *s;
	struct mcp_outreq *o;

	if (ss == NULL)
		return;
	s = ss->srv;
	pthread_mutex_lock(&ss->lock);
	ss->closing = true;
	/* Nobody will answer our questions now: waits on them end as cancelled. */
	while ((o = ss->outreqs) != NULL) {
		ss->outreqs = o->next;
		approval_cancel(o->approval);
		free(o);
	}
	/* And nobody will read the results: commands still running are killed. */
	for (struct mcp_call *c = ss->calls; c != NULL; c = c->next) {
		c->cancelled = true;
		if (write(c->cancel_pipe[1], "x", 1) < 0) {
			/* a full pipe already says it */
		}
	}
	pthread_mutex_unlock(&ss->lock);

	/*
	 * The client is gone: a command still running in one of its sandboxes
	 * would hold the close up until it ends.  Kill those VMs; the calls
	 * then fail at once and the sandboxes are destroyed below.
	 */
	lg_service_kill_busy(s->svc, ss);

	pthread_mutex_lock(&ss->lock);
	while (ss->running > 0)
		pthread_cond_wait(&ss->cond, &ss->lock);
	pthread_mutex_unlock(&ss->lock);

	lg_service_destroy_owned(s->svc, ss);

	pthread_mutex_lock(&s->lock);
	for (struct mcp_session **pp = &s->sessions; *pp != NULL; pp = &(*pp)->next)
		if (*pp == ss) {
			*pp = ss->next;
			break;
		}
	pthread_mutex_unlock(&s->lock);

	pthread_mutex_destroy(&ss->lock);
	pthread_cond_destroy(&ss->cond);
	free(ss->client_name);
	free(ss);
}

/* ---- sandboxes: the service's entries this session owns ---- */

struct lg_entry *mcp_sandbox_get(struct mcp_session *ss, const char *id)
{
	return lg_service_get(ss->srv->svc, id, ss);
}

void mcp_sandbox_put(struct mcp_server *s, struct lg_entry *e)
{
	lg_service_put(s->svc, e);
}

int mcp_sandbox_facts(struct mcp_session *ss, const char *id, bool *dirty, bool *lost)
{
	return lg_service_facts(ss->srv->svc, id, ss, dirty, lost);
}

bool mcp_sandbox_destroy(struct mcp_session *ss, const char *id)
{
	return lg_service_destroy(ss->srv->svc, id, ss) == 0;
}

/*
 * sandbox_list as MCP clients know it: "sandbox_id", "state" running or
 * lost, "busy"; the service's other fields come along.
 */
json_t *mcp_sandbox_list(struct mcp_session *ss)
{
	json_t *arr = lg_service_list(ss->srv->svc, ss);
	size_t i;
	json_t *e;

	json_array_foreach(arr, i, e)
	{
		const char *state = json_string_value(json_object_get(e, "state"));
		bool busy = state != NULL && strcmp(state, "busy") == 0;

		json_object_set(e, "sandbox_id", json_object_get(e, "id"));
		json_object_del(e, "id");
		json_object_set_new(e, "busy", json_boolean(busy));
		if (state != NULL && strcmp(state, "lost") != 0)
			json_object_set_new(e, "state", json_string("running"));
	}
	return arr;
}

struct lg_metric_child *mcp_metric(struct lg_metric *family, const char *label)
{
	return lg_metric_child(family, (const char *const[]){label});
}

char *mcp_server_metrics(struct mcp_server *s)
{
	return lg_service_metrics_render(s->svc);
}

int mcp_server_new(const struct mcp_server_opts *o, struct mcp_server **out, struct lg_err **err)
{
	struct mcp_server *s;

	if (o->policy == NULL || o->broker == NULL)
		return lg_err_set(err, EINVAL, "mcp server: a policy and a broker are required");
	s = xzalloc(sizeof(*s));
	s->o = *o;
	s->svc = o->service;
	if (s->svc == NULL) {
		/* Standalone: a service of its own, with this server's limits. */
		struct lg_service_opts so = {
		    .default_image = o->default_image,
		    .accel = o->accel,
		    .jail = o->jail,
		    .limits = {.max_vms =
				   o->max_sandboxes ? o->max_sandboxes : DEFAULT_MAX_SANDBOXES,
			       .max_vcpus = o->max_vcpus,
			       .max_memory_mib = o->max_memory_mib},
		    .idle_timeout_s = o->idle_timeout_s,
		};
		if (lg_service_new(&so, &s->svc, err) < 0) {
			free(s);
			return -EINVAL;
		}
		s->own_svc = true;
	}
	/* The families live as long as the service: a copy of their pointers. */
	s->m = *lg_service_std(s->svc);
	pthread_mutex_init(&s->lock, NULL);
	*out = s;
	return 0;
}

void mcp_server_free(struct mcp_server *s)
{
	if (s == NULL)
		return;
	/* Each session destroys its own sandboxes as it closes. */
	while (s->sessions != NULL)
		mcp_session_close(s->sessions);
	if (s->own_svc)
		lg_service_free(s->svc);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
