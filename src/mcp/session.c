/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MCP sessions (session.h): the session and server objects, sending,
 * the elicitations a session has out and the answers to them, its tool
 * calls in flight, and the sandboxes it owns.
 */
#include "mcp/session.h"

#include "common/httpd.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_SANDBOXES 16

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

/* ---- the client ---- */

void mcp_session_set_client(struct mcp_session *ss, const char *version, bool elicits,
			    const char *name)
{
	pthread_mutex_lock(&ss->lock);
	/* Points into the static table: readers need no lock, and nothing is freed. */
	__atomic_store_n(&ss->protocol, version, __ATOMIC_RELEASE);
	ss->client_elicitation = elicits;
	free(ss->client_name);
	ss->client_name = NULL;
	if (name != NULL) {
		char clean[64];
		snprintf(clean, sizeof(clean), "%s", name);
		/*
		 * It ends up in the decider of approvals, in logs and on the
		 * CLI: printable ASCII only, and no parentheses, which frame it
		 * in "elicitation (client-reported: NAME)".
		 */
		for (char *p = clean; *p; p++)
			if (*p < 0x20 || *p > 0x7e || *p == '(' || *p == ')')
				*p = '?';
		ss->client_name = xstrdup(clean);
	}
	pthread_mutex_unlock(&ss->lock);
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
void mcp_session_answer(struct mcp_session *ss, const json_t *msg)
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

/* ---- tool calls in flight ---- */

int mcp_session_add_call(struct mcp_session *ss, struct mcp_call *c)
{
	pthread_mutex_lock(&ss->lock);
	if (ss->closing || ss->running >= MCP_MAX_RUNNING_PER_SESS) {
		pthread_mutex_unlock(&ss->lock);
		return -1;
	}
	ss->running++;
	c->next = ss->calls;
	ss->calls = c;
	pthread_mutex_unlock(&ss->lock);
	return 0;
}

bool mcp_session_call_cancelled(struct mcp_session *ss, struct mcp_call *c)
{
	bool r;

	pthread_mutex_lock(&ss->lock);
	r = c->cancelled;
	pthread_mutex_unlock(&ss->lock);
	return r;
}

bool mcp_session_end_call(struct mcp_session *ss, struct mcp_call *c)
{
	bool cancelled;

	pthread_mutex_lock(&ss->lock);
	cancelled = c->cancelled;
	for (struct mcp_call **pp = &ss->calls; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	ss->running--;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	return cancelled;
}

void mcp_session_cancel_call(struct mcp_session *ss, const json_t *request_id)
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
