/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP API of `luminaguard serve` (docs/api.md).
 *
 * Threads and locks.  libmicrohttpd runs one thread per connection, so a
 * handler simply blocks on a boot, a human's approval or a command.  A
 * streamed exec (the default) runs on a thread of its own: its output
 * callback formats NDJSON lines into the job's bounded buffer and blocks
 * while the buffer is full (backpressure all the way to the guest), and
 * the connection's content reader drains it.  A client that goes away is
 * seen by the reader (a hang-up on its socket) or by the completion
 * callback; either writes the job's cancel pipe, which the agent client
 * polls, so the command is killed in the guest and the exec returns.
 *
 * a->lock guards a's counters and its list of jobs; each job has a lock
 * of its own for its buffer.  Neither is held across a call into the
 * service, the gate or the agent.  A job has two references, the
 * connection's and its thread's; the last one frees it.
 */
#include "serve/api.h"

#include "approval/approval.h"
#include "approval/gate.h"
#include "approval/gate_net.h"
#include "common/encoding.h"
#include "common/httpd.h"
#include "common/sync.h"
#include "common/log.h"
#include "common/usock.h"
#include "common/util.h"
#include "host/agent_client.h"
#include "hv/hv.h"
#include "lg-config.h"
#include "serve/route.h"
#include "service/service.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

/* Each connection is a thread; bounds them. */
#define CONN_LIMIT 256u
/*
 * Idle keep-alive connections and stalled uploads are closed after this.
 * Not a streamed exec: libmicrohttpd would cut a stream whose content
 * reader waits longer than this for a command's next output, so a stream
 * has no timeout (a client that hangs up is seen by peer_gone instead).
 */
#ifndef CONN_TIMEOUT_S
#define CONN_TIMEOUT_S 120u
#endif
/* How often a blocked reader or ?wait=1 exec looks whether its client hung up. */
#define PEER_CHECK_MS 1000u
/* At stop, how long running commands get to end after their cancel before their VMs are killed. */
#define STOP_GRACE_MS 3000u
#define MAX_EXEC_ARGS 4096u
#define MAX_PATH_LEN  4096u
#define MAX_TIMEOUT_S (7u * 86400u)
#define MAX_IDLE_S    (7u * 86400u)
/* The reason shown for a command whose agent stopped answering. */
#define LOST_WHY "its guest stopped answering (it powered itself off, crashed or hung)"

struct lg_api;

struct api_listener {
	struct lg_api *a;
	struct MHD_Daemon *d;
	bool tcp;
	char *token;	  /* tcp: NULL = none */
	char *origins[4]; /* tcp: the bind's own origins */
	char *path;	  /* unix: the socket file, removed at stop if still ours */
	dev_t dev;
	ino_t ino;
};

struct lg_api {
	struct lg_service *svc;
	const struct lg_gate *gate;
	struct approval_broker *broker;
	struct api_listener unix_l, tcp_l;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a job ended */
	bool stopping, stopped;
	unsigned jobs_running;	     /* exec threads alive */
	struct exec_job *jobs;	     /* every job not yet freed */
	struct ephemeral *ephemeral; /* ids of throw-away sandboxes */
	size_t n_ephemeral;
	size_t body_bytes; /* request body buffers held (req->cap summed); __atomic */
};

/*
 * A sandbox created with "ephemeral": true (`luminaguard run`'s): made for
 * one command and thrown away after it, as MCP's sandbox_run does in one
 * call.  Its DELETE passes the gate with the fact sandbox_ephemeral, which
 * the default policy's destroy-ephemeral rule lets through without a
 * human.  Kept here, not in the service: a DELETE must not wait for the
 * entry's op lock to learn it.
 */
struct ephemeral {
	struct ephemeral *next;
	char id[LG_ROUTE_ID_MAX + 1];
};
/* Past this many, ids of sandboxes that are gone (reaped, killed) are dropped. */
#define EPHEMERAL_PRUNE 256u

/* One request (MHD's con_cls). */
struct api_req {
	struct api_listener *l;
	char rid[LG_ROUTE_ID_MAX + 1];
	char method[8];
	char url[160]; /* for the log line, cut */
	struct lg_route_match m;
	unsigned mbit;
	uint64_t t0;
	char *body;
	size_t len, cap, limit;
	bool too_large;
	bool over_budget; /* the bodies of all requests would pass LG_API_MAX_BODIES: 503 */
	size_t discarded;
	unsigned status;
	struct exec_job *job; /* a streamed exec, if any */
};

/* ---- small helpers ---- */

static const char *header(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static const char *query(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

static bool is_stopping(struct lg_api *a)
{
	bool s;

	pthread_mutex_lock(&a->lock);
	s = a->stopping;
	pthread_mutex_unlock(&a->lock);
	return s;
}

/* Client text for an error message: valid UTF-8, cut. */
static char *clean(const char *s, size_t max)
{
	size_t n;

	return lg_utf8_sanitize((const uint8_t *)(s != NULL ? s : ""), strnlen(s ? s : "", max),
				&n);
}

/* ---- responses ---- */

static enum MHD_Result queue(struct api_req *req, struct MHD_Connection *c, unsigned status,
			     struct MHD_Response *r)
{
	enum MHD_Result ret;

	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "X-Request-Id", req->rid);
	req->status = status;
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static struct MHD_Response *text_body(char *text, const char *type)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);

	if (r == NULL) {
		free(text);
		return NULL;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	return r;
}

/* A JSON body (stolen) and a newline, so that curl's output ends its line. */
static enum MHD_Result reply_json(struct api_req *req, struct MHD_Connection *c, unsigned status,
				  json_t *body)
{
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	char *line;

	json_decref(body);
	if (text == NULL)
		return MHD_NO;
	line = xasprintf("%s\n", text);
	free(text);
	return queue(req, c, status, text_body(line, "application/json"));
}

static enum MHD_Result reply_error_h(struct api_req *req, struct MHD_Connection *c, unsigned status,
				     const char *hname, const char *hvalue, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static enum MHD_Result reply_error_h(struct api_req *req, struct MHD_Connection *c, unsigned status,
				     const char *hname, const char *hvalue, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	json_t *e;
	char *text;
	struct MHD_Response *r;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One line, whatever went into it. */
	for (char *p = msg; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	e = json_pack("{s:s}", "error", msg);
	if (e == NULL) /* not UTF-8: a guest's or client's bytes in it */
		e = json_pack("{s:s}", "error", "(an error message that is not UTF-8)");
	text = json_dumps(e, JSON_COMPACT);
	json_decref(e);
	if (text == NULL)
		return MHD_NO;
	r = text_body(xasprintf("%s\n", text), "application/json");
	free(text);
	if (r != NULL && hname != NULL)
		MHD_add_response_header(r, hname, hvalue);
	if (status >= 500)
		lg_warn("api: %s %s: %u %s", req->method, req->url, status, msg);
	return queue(req, c, status, r);
}

#define reply_error(req, c, status, ...) reply_error_h(req, c, status, NULL, NULL, __VA_ARGS__)

/* ---- body fields ---- */

/* The body as a JSON object; an empty body is {} when empty_ok. */
static json_t *body_object(struct api_req *req, bool empty_ok, char *why, size_t whylen)
{
	json_error_t jerr;
	json_t *o;

	if (req->len == 0 && empty_ok)
		return json_object();
	o = json_loadb(req->body != NULL ? req->body : "", req->len, JSON_REJECT_DUPLICATES, &jerr);
	if (o == NULL) {
		snprintf(why, whylen, "the body is not valid JSON: %s (line %d, column %d)",
			 jerr.text, jerr.line, jerr.column);
		return NULL;
	}
	if (!json_is_object(o)) {
		snprintf(why, whylen, "the body must be a JSON object");
		json_decref(o);
		return NULL;
	}
	return o;
}

/* Refuses a field that is not in keys (a typo would otherwise be silently ignored). */
static int only_fields(const json_t *o, const char *const *keys, size_t n, char *why, size_t whylen)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)o, k, v)
	{
		size_t i;

		for (i = 0; i < n && strcmp(k, keys[i]) != 0; i++)
			;
		if (i == n) {
			cleanup_free char *ck = clean(k, 64);
			snprintf(why, whylen, "unknown field \"%s\"", ck);
			return -1;
		}
	}
	return 0;
}

static int field_uint(const json_t *o, const char *key, uint64_t min, uint64_t max, uint64_t def,
		      uint64_t *out, char *why, size_t whylen)
{
	json_t *v = json_object_get(o, key);

	if (v == NULL || json_is_null(v)) {
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max) {
		snprintf(why, whylen, "\"%s\" must be an integer from %llu to %llu", key,
			 (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* A string field without NUL bytes, or NULL when absent. */
static int field_str(const json_t *o, const char *key, const char **out, char *why, size_t whylen)
{
	json_t *v = json_object_get(o, key);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v) || memchr(json_string_value(v), '\0', json_string_length(v))) {
		snprintf(why, whylen, "\"%s\" must be a string without NUL bytes", key);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

/*
 * A guest path: absolute (a relative one would be resolved against a
 * directory the policy cannot see), no NUL, bounded.
 */
static int check_guest_path(const char *what, const char *p, char *why, size_t whylen)
{
	if (p == NULL || p[0] != '/' || strlen(p) > MAX_PATH_LEN) {
		cleanup_free char *cp = clean(p, 100);
		snprintf(why, whylen,
			 "%s must be an absolute path in the sandbox (starting with /, at most %u "
			 "bytes), not '%s'",
			 what, MAX_PATH_LEN, cp);
		return -1;
	}
	return 0;
}

/* ---- the gate ---- */

static json_t *facts_context(bool dirty, bool lost)
{
	return json_pack("{s:b, s:b}", "sandbox_dirty", dirty, "sandbox_lost", lost);
}

/* ---- exec jobs ---- */

struct capture {
	uint8_t *data;
	size_t len;
	bool cut;
};

struct exec_job {
	struct exec_job *next; /* in a->jobs */
	struct lg_api *a;
	int refs; /* under a->lock */
	char rid[LG_ROUTE_ID_MAX + 1];
	char id[LG_ROUTE_ID_MAX + 1];
	/* What to run. */
	char **argv, **env; /* env NULL: none */
	char *cwd, *user;
	uint32_t timeout_ms;
	uint8_t *stdin_data;
	size_t stdin_len;
	struct lg_entry *e; /* taken and given back by the thread (the op lock is per thread) */
	json_t *gate_args;
	struct lg_gate_req gr;
	bool wait_mode;
	int cancel_pipe[2];
	int conn_fd;
	/* Under lock: */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *buf; /* NDJSON not yet read, from off to len */
	size_t len, off, cap;
	struct capture out[2]; /* ?wait=1: stdout, stderr */
	uint8_t tail[2][4];    /* an incomplete UTF-8 sequence held back per stream */
	size_t tail_len[2];
	bool started;	       /* the thread has taken the entry, or failed to (start_status) */
	unsigned start_status; /* 0, or the HTTP status of why not (404, 409) */
	bool done;
	bool cancelled; /* the command is being killed (its client left, or we stop) */
	bool abandoned; /* its client left: nothing more is queued, nothing waits for room */
	int ret;	/* of the exec */
	char *error;
	struct lg_exec_result res;
	uint64_t duration_ms;
};

static void job_free(struct exec_job *j)
{
	lg_strv_free(j->argv);
	lg_strv_free(j->env);
	free(j->cwd);
	free(j->user);
	free(j->stdin_data);
	json_decref(j->gate_args);
	json_decref((json_t *)j->gr.context);
	if (j->cancel_pipe[0] >= 0)
		close(j->cancel_pipe[0]);
	if (j->cancel_pipe[1] >= 0)
		close(j->cancel_pipe[1]);
	free(j->buf);
	free(j->out[0].data);
	free(j->out[1].data);
	free(j->error);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cond);
	free(j);
}

static void job_put(struct exec_job *j)
{
	struct lg_api *a = j->a;
	bool last;

	pthread_mutex_lock(&a->lock);
	last = --j->refs == 0;
	if (last)
		for (struct exec_job **pp = &a->jobs; *pp != NULL; pp = &(*pp)->next)
			if (*pp == j) {
				*pp = j->next;
				break;
			}
	pthread_mutex_unlock(&a->lock);
	if (last)
		job_free(j);
}

/*
 * Gives up on the command: the agent client sees the pipe and kills it in
 * the guest, and the exec returns its EXIT.  client_gone: nobody reads
 * the stream any more, so its output is dropped instead of waiting for
 * room; otherwise (the service stops) the stream still ends with the
 * exit line.
 */
static void job_cancel(struct exec_job *j, bool client_gone)
{
	bool first;

	pthread_mutex_lock(&j->lock);
	first = !j->cancelled && !j->done;
	j->cancelled = true;
	if (client_gone)
		j->abandoned = true;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
	if (first && write(j->cancel_pipe[1], "x", 1) < 0)
		lg_debug("api: cancel: %s", strerror(errno));
}

/*
 * How many bytes at the end of p[0..n) are the start of a UTF-8 sequence
 * that the next chunk may complete (0 to 3).
 */
static size_t utf8_open_tail(const uint8_t *p, size_t n)
{
	for (size_t k = 1; k <= 3 && k <= n; k++) {
		uint8_t b = p[n - k];
		size_t need;

		if ((b & 0xc0) == 0x80)
			continue; /* a continuation byte: look further back */
		need = (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 1;
		return need > k ? k : 0;
	}
	return 0;
}

/* Appends one NDJSON line for these bytes; the caller holds j->lock. */
static char *output_line(enum lg_stream s, const uint8_t *p, size_t n)
{
	const char *name = s == LG_STREAM_STDERR ? "stderr" : "stdout";
	json_t *o;
	char *text, *line;

	if (lg_utf8_valid(p, n)) {
		o = json_pack("{s:s, s:s%}", "stream", name, "data", (const char *)p, n);
	} else {
		cleanup_free char *b64 = lg_base64_encode(p, n);
		o = json_pack("{s:s, s:s}", "stream", name, "data_b64", b64);
	}
	text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (text == NULL)
		return NULL;
	line = xasprintf("%s\n", text);
	free(text);
	return line;
}

/* Queues a line for the reader, waiting while the buffer is full.  -ECANCELED: give up. */
static int push_line_locked(struct exec_job *j, char *line)
{
	size_t n = strlen(line);

	/* A line longer than the whole buffer still goes, alone. */
	while (!j->abandoned && j->len - j->off > 0 && j->len - j->off + n > LG_API_STREAM_BUFFER)
		pthread_cond_wait(&j->cond, &j->lock);
	if (j->abandoned) {
		free(line);
		return -ECANCELED;
	}
	if (j->off > 0) {
		memmove(j->buf, j->buf + j->off, j->len - j->off);
		j->len -= j->off;
		j->off = 0;
	}
	if (j->len + n > j->cap) {
		j->cap = j->len + n > 2 * j->cap ? j->len + n : 2 * j->cap;
		j->buf = xrealloc(j->buf, j->cap);
	}
	memcpy(j->buf + j->len, line, n);
	j->len += n;
	free(line);
	pthread_cond_broadcast(&j->cond);
	return 0;
}

static void capture_add(struct capture *c, const uint8_t *p, size_t n)
{
	size_t room = LG_API_MAX_CAPTURE - c->len;

	if (n > room) {
		n = room;
		c->cut = true;
	}
	if (n == 0)
		return;
	c->data = xrealloc(c->data, c->len + n + 1);
	memcpy(c->data + c->len, p, n);
	c->len += n;
}

/* lg_exec_opts.on_output, on the exec thread. */
static int job_output(void *ctx, enum lg_stream s, const uint8_t *p, size_t n)
{
	struct exec_job *j = ctx;
	int k = s == LG_STREAM_STDERR ? 1 : 0;
	int ret = 0;

	pthread_mutex_lock(&j->lock);
	if (j->wait_mode) {
		capture_add(&j->out[k], p, n);
	} else {
		/* A character split between two chunks is sent whole with the second. */
		uint8_t *all = xmalloc(j->tail_len[k] + n + 1);
		size_t total, keep;

		memcpy(all, j->tail[k], j->tail_len[k]);
		memcpy(all + j->tail_len[k], p, n);
		total = j->tail_len[k] + n;
		keep = utf8_open_tail(all, total);
		if (keep > 0 && !lg_utf8_valid(all, total - keep))
			keep = 0;
		memcpy(j->tail[k], all + total - keep, keep);
		j->tail_len[k] = keep;
		if (total - keep > 0) {
			char *line = output_line(s, all, total - keep);
			ret = line != NULL ? push_line_locked(j, line) : -ENOMEM;
		}
		free(all);
	}
	pthread_mutex_unlock(&j->lock);
	return ret;
}

static void *job_main(void *arg)
{
	struct exec_job *j = arg;
	struct lg_api *a = j->a;
	struct lg_exec_opts o = {
	    .argv = j->argv,
	    .env = j->env,
	    .cwd = j->cwd,
	    .user = j->user,
	    .timeout_ms = j->timeout_ms,
	    .stdin_fd = -1,
	    .stdin_data = j->stdin_data,
	    .stdin_len = j->stdin_len,
	    .cancel_fd = j->cancel_pipe[0],
	    .on_output = job_output,
	    .ctx = j,
	    .request_id = j->rid[0] != '\0' ? j->rid : NULL,
	};
	struct lg_exec_result res = {0};
	struct lg_err *err = NULL;
	uint64_t t0 = lg_now_ms();
	json_t *fields;
	int ret;

	lg_log_set_request_id(j->rid);
	/*
	 * The entry is taken here, not by the connection: its op lock is a
	 * mutex, which the thread that locks it must unlock.
	 */
	j->e = lg_service_get(a->svc, j->id, NULL);
	if (j->e == NULL || lg_entry_sandbox(j->e) == NULL) {
		char *lost = j->e != NULL ? lg_entry_lost(a->svc, j->e) : NULL;

		if (j->e != NULL)
			lg_service_put(a->svc, j->e);
		j->e = NULL;
		pthread_mutex_lock(&j->lock);
		j->start_status = lost != NULL ? MHD_HTTP_CONFLICT : MHD_HTTP_NOT_FOUND;
		j->error =
		    lost != NULL
			? xasprintf("sandbox %s is lost: %s; only DELETE works on it", j->id, lost)
			: xasprintf("no sandbox '%s'", j->id);
		j->started = j->done = true;
		pthread_cond_broadcast(&j->cond);
		pthread_mutex_unlock(&j->lock);
		lg_gate_outcome(a->gate, &j->gr, "error",
				json_pack("{s:s, s:s}", "sandbox_id", j->id, "error", j->error));
		free(lost);
		goto out;
	}
	lg_entry_mark_dirty(a->svc, j->e);
	pthread_mutex_lock(&j->lock);
	j->started = true;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);

	ret = lg_entry_exec(a->svc, j->e, &o, &res, &err);
	lg_service_put(a->svc, j->e);
	j->e = NULL;

	if (ret == 0)
		fields = json_pack("{s:s, s:i}", "sandbox_id", j->id, "exit_code", res.exit_code);
	else
		fields = json_pack("{s:s, s:s}", "sandbox_id", j->id, "error",
				   err != NULL ? err->msg : "exec failed");
	lg_gate_outcome(a->gate, &j->gr, ret == 0 ? "ok" : "error", fields);

	pthread_mutex_lock(&j->lock);
	j->ret = ret;
	j->res = res;
	j->duration_ms = lg_now_ms() - t0;
	if (ret < 0)
		j->error = xstrdup(err != NULL ? err->msg : "exec failed");
	if (!j->wait_mode) {
		json_t *last;
		char *text;

		for (int k = 0; k < 2; k++)
			if (j->tail_len[k] > 0 && !j->abandoned) {
				char *line = output_line(k ? LG_STREAM_STDERR : LG_STREAM_STDOUT,
							 j->tail[k], j->tail_len[k]);
				if (line != NULL)
					push_line_locked(j, line);
				j->tail_len[k] = 0;
			}
		if (ret == 0)
			last = json_pack("{s:i, s:i, s:b, s:I}", "exit_code", res.exit_code,
					 "signal", res.signal, "timed_out", res.timed_out,
					 "duration_ms", (json_int_t)j->duration_ms);
		else
			last = json_pack("{s:s}", "error", j->error);
		text = last != NULL ? json_dumps(last, JSON_COMPACT) : NULL;
		json_decref(last);
		if (text != NULL && !j->abandoned)
			push_line_locked(j, xasprintf("%s\n", text));
		free(text);
	}
	j->done = true;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
	lg_info("api: exec in %s: %s after %llu ms", j->id,
		ret == 0 ? "ran" : (err != NULL ? err->msg : "failed"),
		(unsigned long long)(lg_now_ms() - t0));
	lg_err_free(&err);
out:
	lg_log_set_request_id(NULL);
	job_put(j);
	/* Last: after this, a stopping lg_api may be freed under us. */
	pthread_mutex_lock(&a->lock);
	a->jobs_running--;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* MHD's content reader of a streamed exec: blocks this connection's thread only. */
static ssize_t job_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct exec_job *j = cls;
	ssize_t ret;

	pthread_mutex_lock(&j->lock);
	for (;;) {
		if (j->len > j->off) {
			size_t n = j->len - j->off;

			if (n > max)
				n = max;
			memcpy(out, j->buf + j->off, n);
			j->off += n;
			pthread_cond_broadcast(&j->cond); /* room for the writer */
			ret = (ssize_t)n;
			break;
		}
		if (j->done) {
			ret = MHD_CONTENT_READER_END_OF_STREAM;
			break;
		}
		if (j->abandoned) {
			ret = MHD_CONTENT_READER_END_WITH_ERROR;
			break;
		}
		lg_cond_wait_ms(&j->cond, &j->lock, PEER_CHECK_MS);
		if (j->len == j->off && !j->done && lg_fd_peer_gone(j->conn_fd)) {
			pthread_mutex_unlock(&j->lock);
			lg_info("api: the client of an exec in %s hung up: cancelling it", j->id);
			job_cancel(j, true);
			pthread_mutex_lock(&j->lock);
		}
	}
	pthread_mutex_unlock(&j->lock);
	return ret;
}

/* ---- sandbox handlers ---- */

static bool ephemeral_has(struct lg_api *a, const char *id)
{
	bool found = false;

	pthread_mutex_lock(&a->lock);
	for (struct ephemeral *e = a->ephemeral; e != NULL && !found; e = e->next)
		found = strcmp(e->id, id) == 0;
	pthread_mutex_unlock(&a->lock);
	return found;
}

/* Forgets id, or (id NULL) every id whose sandbox the service no longer has. */
static void ephemeral_drop(struct lg_api *a, const char *id)
{
	bool dirty, lost;

	pthread_mutex_lock(&a->lock);
	for (struct ephemeral **pp = &a->ephemeral; *pp != NULL;) {
		struct ephemeral *e = *pp;

		/* The service never calls into us: taking its lock under ours cannot deadlock. */
		if (id != NULL ? strcmp(e->id, id) == 0
			       : lg_service_facts(a->svc, e->id, NULL, &dirty, &lost) < 0) {
			*pp = e->next;
			a->n_ephemeral--;
			free(e);
		} else {
			pp = &e->next;
		}
	}
	pthread_mutex_unlock(&a->lock);
}

static void ephemeral_add(struct lg_api *a, const char *id)
{
	struct ephemeral *e = xzalloc(sizeof(*e));
	bool prune;

	snprintf(e->id, sizeof(e->id), "%s", id);
	pthread_mutex_lock(&a->lock);
	e->next = a->ephemeral;
	a->ephemeral = e;
	prune = ++a->n_ephemeral > EPHEMERAL_PRUNE;
	pthread_mutex_unlock(&a->lock);
	if (prune)
		ephemeral_drop(a, NULL);
}

/* Adds "ephemeral": true to a sandbox object of the service's if it is one. */
static json_t *mark_ephemeral(struct lg_api *a, json_t *o)
{
	const char *id = json_string_value(json_object_get(o, "id"));

	if (id != NULL && ephemeral_has(a, id))
		json_object_set_new(o, "ephemeral", json_true());
	return o;
}

/*
 * The sandbox of this request for an operation: 404 if there is none, 409
 * if its VM is gone.  Returns 0 with *dirty, or queues the answer in *ret.
 */
static int sandbox_facts(struct lg_api *a, struct api_req *req, struct MHD_Connection *c,
			 bool *dirty, enum MHD_Result *ret)
{
	bool lost = false;

	if (lg_service_facts(a->svc, req->m.id, NULL, dirty, &lost) < 0) {
		*ret = reply_error(req, c, MHD_HTTP_NOT_FOUND, "no sandbox '%s'", req->m.id);
		return -1;
	}
	if (lost) {
		json_t *d = lg_service_describe(a->svc, req->m.id, NULL);
		const char *why = json_string_value(json_object_get(d, "lost_reason"));

		*ret = reply_error(req, c, MHD_HTTP_CONFLICT,
				   "sandbox %s is lost: %s; only DELETE works on it", req->m.id,
				   why != NULL ? why : "its VM is gone");
		json_decref(d);
		return -1;
	}
	return 0;
}

/*
 * Takes the entry after the gate let the action through; on failure the
 * outcome is audited and the answer queued (404: destroyed meanwhile; 409:
 * lost meanwhile).
 */
static struct lg_entry *take_entry(struct lg_api *a, struct api_req *req, struct MHD_Connection *c,
				   const struct lg_gate_req *gr, enum MHD_Result *ret)
{
	struct lg_entry *e = lg_service_get(a->svc, req->m.id, NULL);
	cleanup_free char *lost = NULL;

	if (e == NULL) {
		lg_gate_outcome(a->gate, gr, "error",
				json_pack("{s:s, s:s}", "sandbox_id", req->m.id, "error",
					  "the sandbox was destroyed meanwhile"));
		*ret = reply_error(req, c, MHD_HTTP_NOT_FOUND, "no sandbox '%s'", req->m.id);
		return NULL;
	}
	if (lg_entry_sandbox(e) != NULL)
		return e;
	lost = lg_entry_lost(a->svc, e);
	lg_service_put(a->svc, e);
	lg_gate_outcome(a->gate, gr, "error",
			json_pack("{s:s, s:s}", "sandbox_id", req->m.id, "error", "sandbox lost"));
	*ret = reply_error(req, c, MHD_HTTP_CONFLICT,
			   "sandbox %s is lost: %s; only DELETE works on it", req->m.id,
			   lost != NULL ? lost : "its VM is gone");
	return NULL;
}

static enum MHD_Result denied(struct api_req *req, struct MHD_Connection *c, char *denial)
{
	enum MHD_Result ret =
	    reply_error(req, c, MHD_HTTP_FORBIDDEN, "%s", denial != NULL ? denial : "denied");
	free(denial);
	return ret;
}

static enum MHD_Result do_list(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	json_t *list = lg_service_list(a->svc, NULL), *item;
	size_t i;

	json_array_foreach(list, i, item)
	{
		mark_ephemeral(a, item);
	}
	return reply_json(req, c, MHD_HTTP_OK,
			  json_pack("{s:o}", "sandboxes", list != NULL ? list : json_array()));
}

static enum MHD_Result do_get(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	json_t *d = lg_service_describe(a->svc, req->m.id, NULL);

	if (d == NULL)
		return reply_error(req, c, MHD_HTTP_NOT_FOUND, "no sandbox '%s'", req->m.id);
	return reply_json(req, c, MHD_HTTP_OK, mark_ephemeral(a, d));
}

#define MAX_NET_ENTRIES 64

/*
 * "network": {"allow": ["pypi.org", "*.github.com:443", ...], "ask": B}:
 * the sandbox's egress allowlist, as `--net allow=` takes it, joined into
 * *allow (new string; NULL when there is no "network"), and whether a
 * destination off it is asked of a human (*ask, default true) or refused
 * at once.  API clients may name hosts only: an address or CIDR entry is
 * what lets a guest into a range it must not reach by default (loopback,
 * private, the host's own addresses, net/egress.h), and that permission
 * is for the host's user on the command line, not for whoever holds an
 * API token.  Names that resolve into such a range are refused when the
 * guest connects.
 */
static int parse_network(const json_t *body, char **allow, bool *ask, char *why, size_t whylen)
{
	const json_t *net = json_object_get(body, "network"), *list, *v, *a;
	struct lg_allowlist *al = NULL;
	struct lg_err *err = NULL;
	const char *key;
	size_t i, n = 0;
	char *out;

	*allow = NULL;
	*ask = true;
	if (net == NULL || json_is_null(net))
		return 0;
	list = json_object_get(net, "allow");
	a = json_object_get(net, "ask");
	bool shape = json_is_object(net) && json_is_array(list) &&
		     json_array_size(list) <= MAX_NET_ENTRIES && (a == NULL || json_is_boolean(a));
	json_object_foreach((json_t *)net, key, v)
	{
		if (strcmp(key, "allow") != 0 && strcmp(key, "ask") != 0)
			shape = false;
	}
	if (!shape) {
		snprintf(why, whylen,
			 "\"network\" must be {\"allow\": [host, ...], \"ask\": true|false} with "
			 "at most %u hosts",
			 MAX_NET_ENTRIES);
		return -1;
	}
	*ask = a == NULL || json_is_true(a);
	json_array_foreach(list, i, v)
	{
		const char *e = json_string_value(v);
		size_t len = e != NULL ? strlen(e) : 0;

		if (e == NULL || len == 0 || len > 300 || strchr(e, ',') != NULL) {
			snprintf(why, whylen, "\"network\".allow[%zu] must be one host", i);
			return -1;
		}
		n += len + 1;
	}
	out = xzalloc(n + 1);
	json_array_foreach(list, i, v)
	{
		if (i > 0)
			strcat(out, ",");
		strcat(out, json_string_value(v));
	}
	/* The allowlist's own parser: what the API accepts is what the sandbox gets. */
	if (lg_allowlist_parse(out, &al, &err) < 0) {
		snprintf(why, whylen, "\"network\".allow: %s", err->msg);
		lg_err_free(&err);
		free(out);
		return -1;
	}
	bool addresses = lg_allowlist_has_addresses(al);
	lg_allowlist_free(al);
	if (addresses) {
		snprintf(
		    why, whylen,
		    "\"network\".allow: the API takes host names (pypi.org, *.github.com:443), "
		    "not addresses or CIDRs");
		free(out);
		return -1;
	}
	*allow = out;
	return 0;
}

static void net_close(void *front)
{
	lg_gate_net_close(front);
}

static void net_free(void *front)
{
	lg_gate_net_free(front);
}

static enum MHD_Result do_create(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	static const char *const keys[] = {"image",	   "cpus",	"memory", "disk",
					   "idle_timeout", "ephemeral", "network"};
	json_t *eph;
	uint64_t cpus, memory, disk, idle;
	const char *image;
	char why[512];
	char *denial = NULL;
	struct lg_entry *e = NULL;
	struct lg_err *err = NULL;
	enum MHD_Result ret;
	json_t *body, *args, *d;
	char id[LG_ROUTE_ID_MAX + 1];
	char *allow = NULL;
	bool ask = true;
	int r;

	body = body_object(req, true, why, sizeof(why));
	if (body == NULL)
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "%s", why);
	if (only_fields(body, keys, ARRAY_SIZE(keys), why, sizeof(why)) < 0 ||
	    field_str(body, "image", &image, why, sizeof(why)) < 0 ||
	    field_uint(body, "cpus", 1, HV_MAX_CPUS, 1, &cpus, why, sizeof(why)) < 0 ||
	    field_uint(body, "memory", HV_MIN_MEMORY_MIB, 64 * 1024, LG_DEFAULT_MEMORY_MIB, &memory,
		       why, sizeof(why)) < 0 ||
	    field_uint(body, "disk", HV_MIN_LAYER_MIB, HV_MAX_LAYER_MIB, LG_DEFAULT_DISK_MIB, &disk,
		       why, sizeof(why)) < 0 ||
	    field_uint(body, "idle_timeout", 0, MAX_IDLE_S, 0, &idle, why, sizeof(why)) < 0) {
		json_decref(body);
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "%s", why);
	}
	if (parse_network(body, &allow, &ask, why, sizeof(why)) < 0) {
		json_decref(body);
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "%s", why);
	}
	eph = json_object_get(body, "ephemeral");
	if (eph != NULL && !json_is_boolean(eph)) {
		free(allow);
		json_decref(body);
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST,
				   "\"ephemeral\" must be true or false");
	}
	/* The arguments as MCP's sandbox_create takes them, for the policy and the audit log. */
	args = json_pack("{s:I, s:I, s:I}", "cpus", (json_int_t)cpus, "memory", (json_int_t)memory,
			 "disk", (json_int_t)disk);
	if (image != NULL)
		json_object_set_new(args, "image", json_string(image));
	if (json_object_get(body, "idle_timeout") != NULL)
		json_object_set_new(args, "timeout", json_integer((json_int_t)idle));
	if (json_is_true(eph))
		json_object_set_new(args, "ephemeral", json_true());
	if (allow != NULL) {
		json_object_set_new(args, "network_allow", json_string(allow));
		json_object_set_new(args, "network_ask", json_boolean(ask));
	}

	struct lg_gate_req gr = {
	    .who = "api", .tool = "sandbox_create", .args = args, .request_id = req->rid};
	if (!lg_gate_enter(a->gate, &gr, &denial)) {
		ret = denied(req, c, denial);
		goto out;
	}
	struct lg_create_req cr = {
	    .image = image,
	    .cpus = (unsigned)cpus,
	    .memory_mib = memory,
	    .disk_mib = disk,
	    .owner = NULL,
	    .owner_name = "api",
	    .request_id = req->rid,
	    /* An explicit 0 is "never", as for MCP's sandbox_create; absent is the service's. */
	    .idle_timeout_s = !json_is_integer(json_object_get(body, "idle_timeout")) ? 0
			      : idle == 0 ? LG_IDLE_NEVER
					  : (unsigned)idle,
	    /*
	     * Not the stop pipe: the agent client keeps the boot's cancel fd for
	     * every later wait of the sandbox, and at stop its commands are to
	     * end with their exit status, not be cut off.
	     */
	    .cancel_fd = -1,
	};
	/*
	 * With network: a destination off the allowlist is asked through the
	 * broker's channels (`luminaguard approvals`, the approvals routes),
	 * as a red action of who "api".
	 */
	struct lg_gate_net *gn = NULL;
	struct lg_sandbox_net sn;
	if (allow != NULL) {
		struct lg_gate_net_opts no = {
		    .gate = a->gate,
		    .who = "api",
		    .connections = lg_service_std(a->svc)->egress_connections,
		};
		gn = lg_gate_net_new(&no);
		sn = (struct lg_sandbox_net){.allow = allow,
					     .ask = ask ? lg_gate_net_ask
							: NULL, /* NULL: off the list is refused */
					     .log = lg_gate_net_log,
					     .ctx = gn};
		cr.net = &sn;
		cr.front = gn;
		cr.on_close = net_close;
		cr.on_free = net_free;
	}
	r = lg_service_create(a->svc, &cr, &e, &err);
	if (r < 0) {
		unsigned status = r == -EAGAIN			 ? 429
				  : is_stopping(a)		 ? MHD_HTTP_SERVICE_UNAVAILABLE
				  : r == -ENOENT || r == -EINVAL ? MHD_HTTP_BAD_REQUEST
								 : MHD_HTTP_INTERNAL_SERVER_ERROR;

		lg_gate_outcome(a->gate, &gr, "error",
				json_pack("{s:s}", "error", err != NULL ? err->msg : "failed"));
		ret = reply_error(req, c, status, "cannot create a sandbox: %s",
				  err != NULL ? err->msg : "failed");
		lg_err_free(&err);
		goto out;
	}
	snprintf(id, sizeof(id), "%s", lg_entry_id(e));
	if (gn != NULL)
		lg_gate_net_set_sandbox(gn, id);
	/* Known as throw-away before anyone can see its id. */
	if (json_is_true(eph))
		ephemeral_add(a, id);
	lg_service_put(a->svc, e);
	lg_gate_outcome(a->gate, &gr, "ok", json_pack("{s:s}", "sandbox_id", id));
	d = lg_service_describe(a->svc, id, NULL);
	if (d == NULL) /* destroyed at once (by another client or an idle timeout of 0) */
		d = json_pack("{s:s, s:s}", "id", id, "state", "destroyed");
	mark_ephemeral(a, d);
	lg_info("api: created %s (%s, %lld ms)", id,
		json_string_value(json_object_get(d, "spawn_path")) ?: "?",
		(long long)json_integer_value(json_object_get(d, "spawn_ms")));
	ret = reply_json(req, c, MHD_HTTP_CREATED, d);
out:
	free(allow);
	json_decref(args);
	json_decref(body);
	return ret;
}

static enum MHD_Result do_delete(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	bool dirty = false, lost = false;
	char *denial = NULL;
	json_t *args, *ctx;
	enum MHD_Result ret;
	int r;

	if (lg_service_facts(a->svc, req->m.id, NULL, &dirty, &lost) < 0)
		return reply_error(req, c, MHD_HTTP_NOT_FOUND, "no sandbox '%s'", req->m.id);
	args = json_pack("{s:s}", "sandbox_id", req->m.id);
	ctx = facts_context(dirty, lost);
	if (ephemeral_has(a, req->m.id))
		json_object_set_new(ctx, "sandbox_ephemeral", json_true());
	struct lg_gate_req gr = {.who = "api",
				 .tool = "sandbox_destroy",
				 .args = args,
				 .context = ctx,
				 .request_id = req->rid};
	if (!lg_gate_enter(a->gate, &gr, &denial)) {
		ret = denied(req, c, denial);
	} else if ((r = lg_service_destroy(a->svc, req->m.id, NULL)) < 0) {
		lg_gate_outcome(
		    a->gate, &gr, "error",
		    json_pack("{s:s, s:s}", "sandbox_id", req->m.id, "error", "no such sandbox"));
		ret = reply_error(req, c, MHD_HTTP_NOT_FOUND, "no sandbox '%s'", req->m.id);
	} else {
		ephemeral_drop(a, req->m.id);
		lg_gate_outcome(a->gate, &gr, "ok", json_pack("{s:s}", "sandbox_id", req->m.id));
		ret = reply_json(req, c, MHD_HTTP_OK,
				 json_pack("{s:s, s:b}", "id", req->m.id, "deleted", 1));
	}
	json_decref(args);
	json_decref(ctx);
	return ret;
}

/* Fills j from an exec body; -1 with why. */
static int parse_exec(const json_t *body, struct exec_job *j, char *why, size_t whylen)
{
	static const char *const keys[] = {"argv", "command", "env",   "cwd",
					   "user", "timeout", "stdin", "stdin_b64"};
	json_t *argv = json_object_get(body, "argv"), *env = json_object_get(body, "env");
	const char *command, *cwd, *user, *in, *in_b64;
	uint64_t timeout;

	if (only_fields(body, keys, ARRAY_SIZE(keys), why, whylen) < 0 ||
	    field_str(body, "command", &command, why, whylen) < 0 ||
	    field_str(body, "cwd", &cwd, why, whylen) < 0 ||
	    field_str(body, "user", &user, why, whylen) < 0 ||
	    field_str(body, "stdin_b64", &in_b64, why, whylen) < 0 ||
	    field_uint(body, "timeout", 0, MAX_TIMEOUT_S, 0, &timeout, why, whylen) < 0)
		return -1;
	/* An "argv" of JSON null counts as given here: the API takes no nulls for it. */
	if (lg_gate_exec_command(argv, command, env, MAX_EXEC_ARGS, &j->argv, &j->env, why,
				 whylen) < 0)
		return -1;
	if (cwd != NULL && check_guest_path("\"cwd\"", cwd, why, whylen) < 0)
		return -1;
	if (user != NULL && !lg_exec_user_valid(user)) {
		cleanup_free char *cu = clean(user, 64);
		snprintf(why, whylen, "\"user\" '%s' is not a user name or a numeric uid", cu);
		return -1;
	}
	/* stdin is text and may hold NULs (JSON \u0000); stdin_b64 is any bytes. */
	in = json_string_value(json_object_get(body, "stdin"));
	if (json_object_get(body, "stdin") != NULL &&
	    !json_is_null(json_object_get(body, "stdin")) && in == NULL) {
		snprintf(why, whylen, "\"stdin\" must be a string");
		return -1;
	}
	if (in != NULL && in_b64 != NULL) {
		snprintf(why, whylen, "give \"stdin\" or \"stdin_b64\", not both");
		return -1;
	}
	if (in != NULL) {
		j->stdin_len = json_string_length(json_object_get(body, "stdin"));
		j->stdin_data = xmalloc(j->stdin_len + 1);
		memcpy(j->stdin_data, in, j->stdin_len);
	} else if (in_b64 != NULL &&
		   lg_base64_decode(in_b64, strlen(in_b64), &j->stdin_data, &j->stdin_len) < 0) {
		snprintf(why, whylen, "\"stdin_b64\" is not valid base64");
		return -1;
	}
	j->cwd = cwd != NULL ? xstrdup(cwd) : NULL;
	j->user = user != NULL ? xstrdup(user) : NULL;
	j->timeout_ms = (uint32_t)(timeout * 1000u);
	return 0;
}

static struct exec_job *job_new(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	struct exec_job *j = xzalloc(sizeof(*j));

	j->a = a;
	j->cancel_pipe[0] = j->cancel_pipe[1] = -1;
	snprintf(j->rid, sizeof(j->rid), "%s", req->rid);
	snprintf(j->id, sizeof(j->id), "%s", req->m.id);
	j->conn_fd = lg_mhd_conn_fd(c);
	pthread_mutex_init(&j->lock, NULL);
	lg_cond_init_mono(&j->cond);
	return j;
}

/* JSON for captured bytes: "KEY" as text, or "KEY_b64" when they are not UTF-8. */
static void set_captured(json_t *o, const char *key, const struct capture *cap)
{
	const uint8_t *p = cap->data != NULL ? cap->data : (const uint8_t *)"";

	if (lg_utf8_valid(p, cap->len)) {
		json_object_set_new(o, key, json_stringn((const char *)p, cap->len));
	} else {
		cleanup_free char *b64 = lg_base64_encode(p, cap->len);
		cleanup_free char *k = xasprintf("%s_b64", key);
		json_object_set_new(o, k, json_string(b64));
	}
}

/* ?wait=1: waits for the job on this connection's thread, watching for a hang-up. */
static enum MHD_Result exec_wait(struct lg_api *a, struct api_req *req, struct MHD_Connection *c,
				 struct exec_job *j)
{
	enum MHD_Result ret;
	json_t *o;

	pthread_mutex_lock(&j->lock);
	while (!j->done) {
		lg_cond_wait_ms(&j->cond, &j->lock, PEER_CHECK_MS);
		if (!j->done && !j->abandoned && lg_fd_peer_gone(j->conn_fd)) {
			pthread_mutex_unlock(&j->lock);
			job_cancel(j, true);
			pthread_mutex_lock(&j->lock);
		}
	}
	pthread_mutex_unlock(&j->lock);
	/* done: the exec thread writes nothing more to j but its reference. */
	if (j->ret < 0) {
		bool dirty, lost = false;

		lg_service_facts(a->svc, j->id, NULL, &dirty, &lost);
		ret = reply_error(req, c,
				  lost		   ? MHD_HTTP_CONFLICT
				  : is_stopping(a) ? MHD_HTTP_SERVICE_UNAVAILABLE
						   : MHD_HTTP_INTERNAL_SERVER_ERROR,
				  "exec failed: %s", j->error);
	} else {
		o = json_pack("{s:i, s:i, s:b, s:I}", "exit_code", j->res.exit_code, "signal",
			      j->res.signal, "timed_out", j->res.timed_out, "duration_ms",
			      (json_int_t)j->duration_ms);
		set_captured(o, "stdout", &j->out[0]);
		set_captured(o, "stderr", &j->out[1]);
		if (j->out[0].cut || j->out[1].cut)
			json_object_set_new(o, "truncated", json_true());
		ret = reply_json(req, c, MHD_HTTP_OK, o);
	}
	job_put(j);
	return ret;
}

static enum MHD_Result do_exec(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	const char *w = query(c, "wait");
	bool wait_all = false, dirty = false;
	char why[512];
	char *denial = NULL;
	enum MHD_Result ret;
	struct exec_job *j;
	struct MHD_Response *r;
	pthread_attr_t attr;
	pthread_t t;
	json_t *body;
	int e;

	if (w != NULL && lg_route_parse_flag(w, &wait_all) < 0)
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "?wait= must be 1 or 0");
	body = body_object(req, false, why, sizeof(why));
	if (body == NULL)
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "%s", why);
	j = job_new(a, req, c);
	j->wait_mode = wait_all;
	if (parse_exec(body, j, why, sizeof(why)) < 0) {
		json_decref(body);
		job_free(j);
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "%s", why);
	}
	if (sandbox_facts(a, req, c, &dirty, &ret) < 0) {
		json_decref(body);
		job_free(j);
		return ret;
	}
	/* The arguments as MCP's sandbox_exec takes them. */
	j->gate_args = json_deep_copy(body);
	json_decref(body);
	json_object_set_new(j->gate_args, "sandbox_id", json_string(req->m.id));
	j->gr = (struct lg_gate_req){.who = "api",
				     .tool = "sandbox_exec",
				     .args = j->gate_args,
				     .context = facts_context(dirty, false),
				     .request_id = j->rid};
	if (!lg_gate_enter(a->gate, &j->gr, &denial)) {
		job_free(j);
		return denied(req, c, denial);
	}
	if (pipe2(j->cancel_pipe, O_CLOEXEC) < 0) {
		lg_gate_outcome(a->gate, &j->gr, "error", json_pack("{s:s}", "error", "pipe"));
		job_free(j);
		return reply_error(req, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "pipe: %s",
				   strerror(errno));
	}

	pthread_mutex_lock(&a->lock);
	if (a->stopping) {
		pthread_mutex_unlock(&a->lock);
		lg_gate_outcome(a->gate, &j->gr, "error",
				json_pack("{s:s}", "error", "the service is stopping"));
		job_free(j);
		return reply_error(req, c, MHD_HTTP_SERVICE_UNAVAILABLE, "the service is stopping");
	}
	j->refs = 2; /* this connection and the thread */
	j->next = a->jobs;
	a->jobs = j;
	a->jobs_running++;
	pthread_mutex_unlock(&a->lock);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	e = pthread_create(&t, &attr, job_main, j);
	pthread_attr_destroy(&attr);
	if (e != 0) {
		lg_gate_outcome(a->gate, &j->gr, "error",
				json_pack("{s:s}", "error", "cannot start a thread"));
		pthread_mutex_lock(&a->lock);
		a->jobs_running--;
		j->refs--; /* the thread's */
		pthread_cond_broadcast(&a->cond);
		pthread_mutex_unlock(&a->lock);
		job_put(j);
		return reply_error(req, c, MHD_HTTP_INTERNAL_SERVER_ERROR,
				   "cannot start the exec thread: %s", strerror(e));
	}
	/* The thread takes the sandbox (it may be destroyed or lost meanwhile). */
	pthread_mutex_lock(&j->lock);
	while (!j->started)
		pthread_cond_wait(&j->cond, &j->lock);
	unsigned start_status = j->start_status;
	pthread_mutex_unlock(&j->lock);
	if (start_status != 0) {
		ret = reply_error(req, c, start_status, "%s", j->error);
		job_put(j);
		return ret;
	}
	if (wait_all)
		return exec_wait(a, req, c, j);

	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, job_read, j, NULL);
	if (r == NULL) {
		job_cancel(j, true);
		job_put(j);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	/* A command may be silent for longer than CONN_TIMEOUT_S: see there. */
	MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
	req->job = j; /* the connection's reference, dropped when the request completes */
	return queue(req, c, MHD_HTTP_OK, r);
}

/* ---- files ---- */

/* The agent failed: if its channel is gone, so is the VM. */
static unsigned agent_failure(struct lg_api *a, struct lg_entry *e, int r)
{
	if (r == -EREMOTEIO)
		return MHD_HTTP_BAD_REQUEST; /* the guest refused: no such file, ... */
	if (r == -ECONNRESET || r == -EPIPE || r == -EPROTO || r == -ETIMEDOUT) {
		lg_entry_mark_lost(a->svc, e, LOST_WHY);
		return MHD_HTTP_CONFLICT;
	}
	return is_stopping(a) ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_INTERNAL_SERVER_ERROR;
}

static struct lg_agent *entry_agent(struct lg_entry *e)
{
	return lg_sandbox_agent(lg_entry_sandbox(e));
}

static const char *ftype_name(uint32_t t)
{
	switch (t) {
	case LG_FTYPE_FILE:
		return "file";
	case LG_FTYPE_DIR:
		return "dir";
	case LG_FTYPE_SYMLINK:
		return "symlink";
	default:
		return "other";
	}
}

/* lg_gate_read_fn: a file's content before a write, for the card. */
static int read_before(void *ctx, const char *path, uint8_t **out, size_t *len)
{
	struct api_req *req = ctx;
	struct lg_api *a = req->l->a;
	struct lg_entry *e = lg_service_get(a->svc, req->m.id, NULL);
	int r = -1;

	if (e == NULL)
		return -2;
	if (lg_entry_sandbox(e) != NULL &&
	    lg_agent_read_file(entry_agent(e), path, 1u << 20, out, len, NULL) == 0)
		r = 0;
	lg_service_put(a->svc, e);
	return r;
}

static enum MHD_Result do_files(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	const char *path = query(c, "path"), *lq = query(c, "list"), *mq = query(c, "mode");
	bool put = req->mbit == LG_METHOD_PUT, list = false, dirty = false;
	uint32_t mode = 0644;
	char why[600];
	char *denial = NULL;
	const char *tool;
	struct lg_err *err = NULL;
	struct lg_entry *e;
	enum MHD_Result ret;
	json_t *args, *ctx;
	int r;

	if (path == NULL)
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST,
				   "?path= (an absolute path in the sandbox) is required");
	if (check_guest_path("path", path, why, sizeof(why)) < 0)
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "%s", why);
	if (lq != NULL && (put || lg_route_parse_flag(lq, &list) < 0))
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST,
				   put ? "?list= is for GET" : "?list= must be 1 or 0");
	if (mq != NULL && (!put || lg_route_parse_mode(mq, &mode) < 0))
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST,
				   put ? "?mode= must be an octal file mode up to 07777"
				       : "?mode= is for PUT");
	if (sandbox_facts(a, req, c, &dirty, &ret) < 0)
		return ret;

	args = json_pack("{s:s, s:s}", "sandbox_id", req->m.id, "path", path);
	if (put) {
		const uint8_t *p =
		    req->body != NULL ? (const uint8_t *)req->body : (const uint8_t *)"";

		tool = "sandbox_fs_write";
		/* As MCP's sandbox_fs_write takes it: the policy and the card see the content. */
		if (lg_utf8_valid(p, req->len)) {
			json_object_set_new(args, "content",
					    json_stringn((const char *)p, req->len));
		} else {
			cleanup_free char *b64 = lg_base64_encode(p, req->len);
			json_object_set_new(args, "content", json_string(b64));
			json_object_set_new(args, "encoding", json_string("base64"));
		}
		json_object_set_new(args, "mode", json_integer(mode));
	} else {
		tool = list ? "sandbox_fs_list" : "sandbox_fs_read";
	}
	ctx = facts_context(dirty, false);
	struct lg_gate_req gr = {.who = "api",
				 .tool = tool,
				 .args = args,
				 .context = ctx,
				 .request_id = req->rid,
				 .read_before = put ? read_before : NULL,
				 .read_ctx = req};
	if (!lg_gate_enter(a->gate, &gr, &denial)) {
		ret = denied(req, c, denial);
		goto out;
	}
	e = take_entry(a, req, c, &gr, &ret);
	if (e == NULL)
		goto out;

	if (put) {
		lg_entry_mark_dirty(a->svc, e);
		r = lg_agent_write_file(entry_agent(e), path, req->body != NULL ? req->body : "",
					req->len, mode, LG_WRITE_MKDIRS, &err);
		if (r == 0)
			ret = reply_json(
			    req, c, MHD_HTTP_OK,
			    json_pack("{s:s, s:I}", "path", path, "bytes", (json_int_t)req->len));
	} else if (list) {
		struct lg_dirent *ents;
		size_t n;

		r = lg_agent_list_dir(entry_agent(e), path, &ents, &n, &err);
		if (r == 0) {
			json_t *arr = json_array();

			for (size_t i = 0; i < n; i++) {
				size_t nl;
				cleanup_free char *name = lg_utf8_sanitize(
				    (const uint8_t *)ents[i].name, strlen(ents[i].name), &nl);
				json_array_append_new(
				    arr, json_pack("{s:s%, s:s, s:I, s:I}", "name", name, nl,
						   "type", ftype_name(ents[i].ftype), "mode",
						   (json_int_t)(ents[i].mode & 07777), "size",
						   (json_int_t)ents[i].size));
			}
			lg_dirents_free(ents, n);
			ret = reply_json(req, c, MHD_HTTP_OK,
					 json_pack("{s:s, s:o}", "path", path, "entries", arr));
		}
	} else {
		uint8_t *data = NULL;
		size_t len = 0;

		r = lg_agent_read_file(entry_agent(e), path, LG_API_MAX_FILE, &data, &len, &err);
		if (r == 0) {
			struct MHD_Response *resp =
			    MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
			if (resp == NULL)
				free(data);
			else
				MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
							"application/octet-stream");
			ret = queue(req, c, MHD_HTTP_OK, resp);
		}
	}
	if (r < 0) {
		unsigned status = agent_failure(a, e, r);

		lg_gate_outcome(
		    a->gate, &gr, "error",
		    json_pack("{s:s, s:s}", "sandbox_id", req->m.id, "error", err->msg));
		/* The agent client's message names the operation and the path. */
		ret = reply_error(req, c, status, "%s", err->msg);
		lg_err_free(&err);
	} else {
		lg_gate_outcome(a->gate, &gr, "ok", json_pack("{s:s}", "sandbox_id", req->m.id));
	}
	lg_service_put(a->svc, e);
out:
	json_decref(args);
	json_decref(ctx);
	return ret;
}

/* ---- approvals ---- */

static enum MHD_Result do_approvals(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	json_t *list = approval_list_pending(a->broker);

	return reply_json(req, c, MHD_HTTP_OK,
			  json_pack("{s:o}", "pending", list != NULL ? list : json_array()));
}

static uid_t peer_uid(struct MHD_Connection *c)
{
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	int fd = lg_mhd_conn_fd(c);

	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    clen != sizeof(cred))
		return (uid_t)-1;
	return cred.uid;
}

static enum MHD_Result do_approval(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	static const char *const keys[] = {"approve", "reason"};
	const char *reason;
	struct lg_err *err = NULL;
	cleanup_free char *decider = NULL;
	enum MHD_Result ret;
	char why[512];
	json_t *body;
	bool approve;
	int r;

	if (req->mbit == LG_METHOD_GET) {
		json_t *shown = approval_show(a->broker, req->m.id);

		if (shown == NULL)
			return reply_error(req, c, MHD_HTTP_NOT_FOUND, "no pending approval '%s'",
					   req->m.id);
		return reply_json(req, c, MHD_HTTP_OK, shown);
	}
	/* A decision is the human's: over TCP anything that has the token could approve. */
	if (req->l->tcp)
		return reply_error(req, c, MHD_HTTP_FORBIDDEN,
				   "approvals are decided over the unix socket only (luminaguard "
				   "approvals, or curl --unix-socket)");
	body = body_object(req, false, why, sizeof(why));
	if (body == NULL)
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "%s", why);
	if (only_fields(body, keys, ARRAY_SIZE(keys), why, sizeof(why)) < 0 ||
	    field_str(body, "reason", &reason, why, sizeof(why)) < 0) {
		json_decref(body);
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST, "%s", why);
	}
	if (!json_is_boolean(json_object_get(body, "approve"))) {
		json_decref(body);
		return reply_error(req, c, MHD_HTTP_BAD_REQUEST,
				   "\"approve\" (true or false) is required");
	}
	approve = json_is_true(json_object_get(body, "approve"));
	/* The uid comes from the kernel, not from the request. */
	decider = xasprintf("api:uid=%u", (unsigned)peer_uid(c));
	r = approval_decide(a->broker, req->m.id, approve, APPROVAL_CH_CLI, decider, reason, &err);
	if (r < 0) {
		ret = reply_error(req, c, r == -ENOENT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_FORBIDDEN,
				  "%s", err != NULL ? err->msg : "cannot decide");
		lg_err_free(&err);
	} else {
		lg_info("approval %s %s by %s", req->m.id, approve ? "approved" : "denied",
			decider);
		ret = reply_json(req, c, MHD_HTTP_OK,
				 json_pack("{s:s, s:s}", "id", req->m.id, "state",
					   approve ? "approved" : "denied"));
	}
	json_decref(body);
	return ret;
}

/* ---- service-wide ---- */

static enum MHD_Result do_healthz(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	json_t *list = lg_service_list(a->svc, NULL);
	json_t *pools = lg_service_pools(a->svc);
	json_t *o = json_pack("{s:s, s:s, s:i, s:I, s:o}", "status", "ok", "version", LG_VERSION,
			      "pid", (int)getpid(), "sandboxes", (json_int_t)json_array_size(list),
			      "pools", pools != NULL ? pools : json_array());

	json_decref(list);
	return reply_json(req, c, MHD_HTTP_OK, o);
}

static enum MHD_Result do_metrics(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	char *text = lg_service_metrics_render(a->svc);

	if (text == NULL)
		return reply_error(req, c, MHD_HTTP_INTERNAL_SERVER_ERROR,
				   "cannot render the metrics");
	return queue(req, c, MHD_HTTP_OK, text_body(text, "text/plain; version=0.0.4"));
}

static enum MHD_Result dispatch(struct lg_api *a, struct api_req *req, struct MHD_Connection *c)
{
	switch (req->m.route) {
	case LG_ROUTE_HEALTHZ:
		return do_healthz(a, req, c);
	case LG_ROUTE_METRICS:
		return do_metrics(a, req, c);
	case LG_ROUTE_SANDBOXES:
		return req->mbit == LG_METHOD_GET ? do_list(a, req, c) : do_create(a, req, c);
	case LG_ROUTE_SANDBOX:
		return req->mbit == LG_METHOD_GET ? do_get(a, req, c) : do_delete(a, req, c);
	case LG_ROUTE_EXEC:
		return do_exec(a, req, c);
	case LG_ROUTE_FILES:
		return do_files(a, req, c);
	case LG_ROUTE_APPROVALS:
		return do_approvals(a, req, c);
	case LG_ROUTE_APPROVAL:
		return do_approval(a, req, c);
	case LG_ROUTE_NONE:
		break;
	}
	return reply_error(req, c, MHD_HTTP_NOT_FOUND, "no route %s %s", req->method, req->url);
}

/* ---- requests ---- */

static bool origin_allowed(const struct api_listener *l, const char *origin)
{
	for (size_t i = 0; i < ARRAY_SIZE(l->origins) && l->origins[i] != NULL; i++)
		if (strcasecmp(origin, l->origins[i]) == 0)
			return true;
	return false;
}

static bool authorized(const struct api_listener *l, const char *auth)
{
	return lg_http_bearer_ok(auth, l->token);
}

/* How much of an oversized body is read and dropped so that its 413 arrives. */
static size_t discard_limit(const struct api_req *req)
{
	return 4 * (size_t)req->limit;
}

/* Checks that need only the request line and headers; the body comes later. */
static enum MHD_Result on_headers(struct api_listener *l, struct api_req *req,
				  struct MHD_Connection *c)
{
	struct lg_api *a = l->a;
	const char *origin = header(c, "Origin");
	const char *len = header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
	uint64_t n = UINT64_MAX;

	if (!l->tcp) {
		/*
		 * The socket is 0600 in a 0700 directory; this is the last wall,
		 * for a socket reached some other way (a descriptor passed on, a
		 * directory made looser).
		 */
		uid_t uid = (uid_t)-1;

		if (!lg_usock_peer_ok_uid(lg_mhd_conn_fd(c), &uid)) {
			lg_warn("api: refused a connection from uid %d", (int)uid);
			return reply_error(req, c, MHD_HTTP_FORBIDDEN, "permission denied");
		}
	} else {
		if (origin != NULL && !origin_allowed(l, origin)) {
			cleanup_free char *co = clean(origin, 100);
			lg_warn("api: refused a request from origin %s", co);
			return reply_error(req, c, MHD_HTTP_FORBIDDEN,
					   "origin not allowed (only this server's own)");
		}
		if (!authorized(l, header(c, MHD_HTTP_HEADER_AUTHORIZATION)))
			return reply_error_h(req, c, MHD_HTTP_UNAUTHORIZED,
					     MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
					     "a valid bearer token is required "
					     "(Authorization: Bearer TOKEN)");
	}
	if (is_stopping(a))
		return reply_error(req, c, MHD_HTTP_SERVICE_UNAVAILABLE, "the service is stopping");
	if (req->m.route == LG_ROUTE_NONE)
		return reply_error(req, c, MHD_HTTP_NOT_FOUND, "no route %s %s (see docs/api.md)",
				   req->method, req->url);
	if ((lg_route_methods(req->m.route) & req->mbit) == 0)
		return reply_error_h(req, c, MHD_HTTP_METHOD_NOT_ALLOWED, MHD_HTTP_HEADER_ALLOW,
				     lg_route_allow(req->m.route),
				     "%s is not allowed on %s (only %s)", req->method, req->url,
				     lg_route_allow(req->m.route));
	req->limit = req->m.route == LG_ROUTE_FILES ? LG_API_MAX_FILE : LG_API_MAX_BODY;
	if (len != NULL && (lg_parse_u64(len, 0, UINT64_MAX, &n) < 0 || n > req->limit)) {
		/*
		 * A client that sends its body at once would lose a 413 sent
		 * now (closing with unread data resets the connection, and the
		 * reset wipes the response), so a body up to discard_limit() is
		 * read and dropped first; a client that waits for 100 Continue
		 * gets the 413 at once.
		 */
		if (n <= discard_limit(req) && header(c, MHD_HTTP_HEADER_EXPECT) == NULL) {
			req->too_large = true;
			return MHD_YES;
		}
		return reply_error(req, c, MHD_HTTP_CONTENT_TOO_LARGE,
				   "the body is too large: at most %zu bytes here", req->limit);
	}
	return MHD_YES;
}

static struct api_req *req_new(struct api_listener *l, struct MHD_Connection *c, const char *url,
			       const char *method)
{
	struct api_req *req = xzalloc(sizeof(*req));
	const char *rid = header(c, "X-Request-Id");
	size_t n;

	req->l = l;
	req->t0 = lg_now_ms();
	if (lg_request_id_ok(rid))
		snprintf(req->rid, sizeof(req->rid), "%s", rid);
	else
		lg_random_hex(req->rid, 8);
	snprintf(req->method, sizeof(req->method), "%s", method);
	cleanup_free char *cu = lg_utf8_sanitize((const uint8_t *)url, strnlen(url, 150), &n);
	snprintf(req->url, sizeof(req->url), "%s", cu);
	for (char *p = req->url; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
			*p = '?';
	for (char *p = req->method; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	lg_route_parse(url, &req->m);
	req->mbit = lg_route_method(method);
	return req;
}

/* Frees req's body buffer and gives its bytes back to the budget. */
static void body_drop(struct lg_api *a, struct api_req *req)
{
	__atomic_sub_fetch(&a->body_bytes, req->cap, __ATOMIC_RELAXED);
	free(req->body);
	req->body = NULL;
	req->len = req->cap = 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct api_listener *l = cls;
	struct api_req *req = *con_cls;

	if (req == NULL) {
		*con_cls = req = req_new(l, c, url, method);
		lg_log_set_request_id(req->rid);
		return on_headers(l, req, c);
	}
	if (*upload_size > 0) {
		size_t n = *upload_size;

		*upload_size = 0;
		if (req->too_large || req->over_budget || n > req->limit - req->len) {
			/* Grew past the limit: dropped up to a point, then the connection is cut.
			 */
			if (!req->over_budget)
				req->too_large = true;
			req->discarded += n;
			body_drop(l->a, req);
			return req->discarded > discard_limit(req) ? MHD_NO : MHD_YES;
		}
		if (req->len + n > req->cap) {
			size_t cap = req->cap ? req->cap : 16384;
			while (cap < req->len + n)
				cap *= 2;
			cap = cap < req->limit ? cap : req->limit;
			/*
			 * Every connection may hold up to its limit, but not all at
			 * once: past the service-wide budget this body is dropped
			 * (read and discarded, as a too-large one) and answered 503.
			 */
			if (__atomic_add_fetch(&l->a->body_bytes, cap - req->cap,
					       __ATOMIC_RELAXED) > LG_API_MAX_BODIES) {
				__atomic_sub_fetch(&l->a->body_bytes, cap - req->cap,
						   __ATOMIC_RELAXED);
				req->over_budget = true;
				req->discarded += n;
				body_drop(l->a, req);
				return MHD_YES;
			}
			req->cap = cap;
			req->body = xrealloc(req->body, req->cap + 1);
		}
		memcpy(req->body + req->len, upload, n);
		req->len += n;
		return MHD_YES;
	}
	if (req->too_large)
		return reply_error(req, c, MHD_HTTP_CONTENT_TOO_LARGE,
				   "the body is too large: at most %zu bytes here", req->limit);
	if (req->over_budget)
		return reply_error(req, c, MHD_HTTP_SERVICE_UNAVAILABLE,
				   "too many request bodies in flight (%u MiB in all); try again",
				   LG_API_MAX_BODIES >> 20);
	return dispatch(l->a, req, c);
}

/* One log line per request, with its id. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct api_req *req = *con_cls;

	if (req == NULL)
		return;
	*con_cls = NULL;
	lg_log_set_request_id(req->rid);
	if (req->job != NULL) {
		/* A stream that ended early: its client is gone, so is the command's point. */
		job_cancel(req->job, true);
		job_put(req->job);
		/* The connection may serve more requests: idle, it times out again. */
		MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, CONN_TIMEOUT_S);
	}
	lg_info("api: %s %s -> %u%s in %llu ms", req->method, req->url, req->status,
		toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (cut short)",
		(unsigned long long)(lg_now_ms() - req->t0));
	lg_log_set_request_id(NULL);
	body_drop(req->l->a, req);
	free(req);
}

/* ---- listeners ---- */

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	lg_debug("libmicrohttpd: %s", msg);
}

static int start_daemon(struct api_listener *l, int fd, const char *where, struct lg_err **err)
{
	l->d = MHD_start_daemon(MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD |
				    MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG | MHD_USE_ITC,
				0, NULL, NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
				l, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED,
				on_completed, l, MHD_OPTION_CONNECTION_LIMIT, CONN_LIMIT,
				MHD_OPTION_CONNECTION_TIMEOUT, CONN_TIMEOUT_S, MHD_OPTION_END);
	if (l->d == NULL) {
		/* Whether a failed start closed the socket it was given depends on where it failed.
		 */
		if (fcntl(fd, F_GETFD) >= 0)
			close(fd);
		return lg_err_msg(err, EIO, "cannot start the HTTP server on %s (libmicrohttpd)",
				  where);
	}
	return 0;
}

int lg_api_new(const struct lg_api_opts *o, struct lg_api **out, struct lg_err **err)
{
	struct lg_api *a;

	*out = NULL;
	if (o->service == NULL || o->gate == NULL || o->broker == NULL)
		return lg_err_msg(err, EINVAL, "api: a service, a gate and a broker are required");
	a = xzalloc(sizeof(*a));
	a->svc = o->service;
	a->gate = o->gate;
	a->broker = o->broker;
	a->unix_l.a = a->tcp_l.a = a;
	a->tcp_l.tcp = true;
	pthread_mutex_init(&a->lock, NULL);
	lg_cond_init_mono(&a->cond);
	*out = a;
	return 0;
}

int lg_api_listen_unix(struct lg_api *a, const char *path, struct lg_err **err)
{
	cleanup_free char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	struct stat st;
	int fd, r;

	if (a->unix_l.d != NULL)
		return lg_err_msg(err, EBUSY, "api: already serving on a unix socket");
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		r = lg_mkdir_p(dir, 0700);
		if (r < 0)
			return lg_err_set(err, -r, "create the directory `%s`", dir);
		/* Ours and closed to everyone else: the socket's first wall. */
		if (lstat(dir, &st) < 0)
			return lg_err_sys(err, "stat `%s`", dir);
		if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
			return lg_err_msg(err, EPERM, "`%s` is not a directory of ours", dir);
		if ((st.st_mode & 077) != 0 && chmod(dir, 0700) < 0)
			return lg_err_sys(err, "chmod 700 `%s`", dir);
	}
	/* 0600 from birth; a socket left by a service that died is removed. */
	fd = lg_usock_listen(path, &a->unix_l.dev, &a->unix_l.ino, err);
	if (fd < 0)
		return fd;
	a->unix_l.path = xstrdup(path);
	r = start_daemon(&a->unix_l, fd, path, err);
	if (r < 0) {
		lg_usock_unlink(path, a->unix_l.dev, a->unix_l.ino);
		free(a->unix_l.path);
		a->unix_l.path = NULL;
	}
	return r;
}

int lg_api_listen_tcp(struct lg_api *a, const char *bind_spec, const char *token, unsigned *port,
		      struct lg_err **err)
{
	struct api_listener *l = &a->tcp_l;
	struct sockaddr_storage sa, got;
	socklen_t salen = 0, gotlen = sizeof(got);
	char host[INET6_ADDRSTRLEN + 8];
	cleanup_close int fd = -1;
	int one = 1, r;

	if (l->d != NULL)
		return lg_err_msg(err, EBUSY, "api: already serving on TCP");
	if (lg_route_parse_bind(bind_spec, &sa, &salen, host, sizeof(host)) < 0)
		return lg_err_msg(err, EINVAL,
				  "--http `%s`: expected HOST:PORT with a numeric address "
				  "(127.0.0.1:8080, [::1]:8080, localhost:8080)",
				  bind_spec != NULL ? bind_spec : "");
	/* Off loopback anyone on the network can reach the API, and it runs commands. */
	if (!lg_route_bind_loopback(&sa) && (token == NULL || *token == '\0'))
		return lg_err_msg(err, EPERM,
				  "refusing to serve the API on %s without a bearer token: a "
				  "non-loopback address needs --token-file",
				  bind_spec);
	fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return lg_err_sys(err, "socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&sa, salen) < 0)
		return lg_err_sys(err, "bind %s", bind_spec);
	if (listen(fd, 64) < 0)
		return lg_err_sys(err, "listen on %s", bind_spec);
	if (getsockname(fd, (struct sockaddr *)&got, &gotlen) < 0)
		return lg_err_sys(err, "getsockname");
	*port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
					       : ((struct sockaddr_in6 *)&got)->sin6_port);
	l->token = token != NULL && *token != '\0' ? xstrdup(token) : NULL;
	/* A browser page may call us only from our own origin (DNS rebinding). */
	l->origins[0] = xasprintf("http://%s:%u", host, *port);
	if (lg_route_bind_loopback(&sa)) {
		l->origins[1] = xasprintf("http://localhost:%u", *port);
		l->origins[2] = xasprintf("http://127.0.0.1:%u", *port);
		l->origins[3] = xasprintf("http://[::1]:%u", *port);
	}
	r = start_daemon(l, steal_fd(&fd), bind_spec, err);
	return r;
}

/* Denies what waits for a human: nobody will be there to answer it. */
static void deny_pending(struct lg_api *a)
{
	json_t *list = approval_list_pending(a->broker), *item;
	size_t i;

	json_array_foreach(list, i, item)
	{
		const char *id = json_string_value(json_object_get(item, "id"));
		if (id != NULL)
			approval_decide(a->broker, id, false, APPROVAL_CH_CLI, "serve",
					"the service is stopping", NULL);
	}
	json_decref(list);
}

static void wait_jobs(struct lg_api *a, unsigned ms)
{
	uint64_t deadline = lg_now_ms() + ms;

	pthread_mutex_lock(&a->lock);
	while (a->jobs_running > 0 && lg_now_ms() < deadline)
		lg_cond_wait_ms(&a->cond, &a->lock, 100);
	pthread_mutex_unlock(&a->lock);
}

void lg_api_stop(struct lg_api *a)
{
	struct api_listener *ls[] = {&a->unix_l, &a->tcp_l};

	pthread_mutex_lock(&a->lock);
	if (a->stopped) {
		pthread_mutex_unlock(&a->lock);
		return;
	}
	a->stopping = true;
	pthread_mutex_unlock(&a->lock);
	/* No new connections; the ones open get 503 for new requests. */
	for (size_t i = 0; i < ARRAY_SIZE(ls); i++)
		if (ls[i]->d != NULL) {
			MHD_socket s = MHD_quiesce_daemon(ls[i]->d);
			if (s != MHD_INVALID_SOCKET)
				close(s);
		}
	deny_pending(a);
	/* Cancel every command; one whose guest does not answer has its VM killed. */
	pthread_mutex_lock(&a->lock);
	for (struct exec_job *j = a->jobs; j != NULL; j = j->next)
		j->refs++;
	struct exec_job *jobs = a->jobs;
	pthread_mutex_unlock(&a->lock);
	for (struct exec_job *j = jobs, *next; j != NULL; j = next) {
		pthread_mutex_lock(&a->lock);
		next = j->next;
		pthread_mutex_unlock(&a->lock);
		job_cancel(j, false);
	}
	wait_jobs(a, STOP_GRACE_MS);
	pthread_mutex_lock(&a->lock);
	bool left = a->jobs_running > 0;
	pthread_mutex_unlock(&a->lock);
	if (left) {
		/*
		 * A client that does not read keeps its command waiting for room
		 * in the stream: its output is dropped now, and what still runs
		 * loses its VM.
		 */
		lg_warn("api: stopping: killing the VMs of commands that did not end");
		for (struct exec_job *j = jobs, *next; j != NULL; j = next) {
			pthread_mutex_lock(&a->lock);
			next = j->next;
			pthread_mutex_unlock(&a->lock);
			job_cancel(j, true);
		}
		lg_service_kill_busy(a->svc, NULL);
		wait_jobs(a, 30000);
	}
	for (struct exec_job *j = jobs, *next; j != NULL; j = next) {
		pthread_mutex_lock(&a->lock);
		next = j->next;
		pthread_mutex_unlock(&a->lock);
		job_put(j);
	}
	/* Joins every connection thread: their streams have ended. */
	for (size_t i = 0; i < ARRAY_SIZE(ls); i++)
		if (ls[i]->d != NULL) {
			MHD_stop_daemon(ls[i]->d);
			ls[i]->d = NULL;
		}
	/* Remove the socket only if it is still ours. */
	if (a->unix_l.path != NULL)
		lg_usock_unlink(a->unix_l.path, a->unix_l.dev, a->unix_l.ino);
	pthread_mutex_lock(&a->lock);
	a->stopped = true;
	pthread_mutex_unlock(&a->lock);
}

void lg_api_free(struct lg_api *a)
{
	if (a == NULL)
		return;
	lg_api_stop(a);
	free(a->unix_l.path);
	if (a->tcp_l.token != NULL)
		explicit_bzero(a->tcp_l.token, strlen(a->tcp_l.token));
	free(a->tcp_l.token);
	for (size_t i = 0; i < ARRAY_SIZE(a->tcp_l.origins); i++)
		free(a->tcp_l.origins[i]);
	while (a->ephemeral != NULL) {
		struct ephemeral *e = a->ephemeral;
		a->ephemeral = e->next;
		free(e);
	}
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	free(a);
}
