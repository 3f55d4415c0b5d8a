/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MCP Streamable HTTP on libmicrohttpd, with one thread per connection.
 *
 * Why threads: a POST that starts a tools/call keeps its SSE stream open
 * until the call (a VM boot, a command) ends, and a GET stream stays open
 * for the session's life.  With MHD_USE_THREAD_PER_CONNECTION the content
 * reader of such a stream simply blocks on a condition variable until the
 * session sends something, and only its own connection waits.  (Suspend
 * and resume would save the threads but turn every send() into a
 * cross-thread resume; an MCP server has few connections.)
 *
 * Locking: one mutex, h->lock, guards the session table, every session's
 * transport state and every stream's queue; each stream has a condition
 * variable of its own on it.  The core is never called with h->lock held:
 * the core calls send() (which takes h->lock) with its own locks held.
 *
 * The core never sees our pointers as its `stream`: it gets a number that
 * is never reused, which send() looks up.  A stream whose connection is
 * gone is simply not found, so no stream memory has to outlive its
 * connection however long a tool call runs.
 */
#include "mcp/http.h"

#include "common/httpd.h"
#include "common/sync.h"
#include "common/log.h"
#include "common/util.h"
#include "common/usock.h"
#include "mcp/mcp.h"
#include "mcp/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define MCP_PATH	"/mcp"
#define METRICS_PATH	"/metrics"
#define ALLOWED_METHODS "GET, POST, DELETE"
#define DEFAULT_IDLE_S	3600u
/* Idle streams get a keep-alive this often (see stream_read). */
#define PING_MS 15000u
/* How often a blocked stream looks whether its client hung up. */
#define PEER_CHECK_MS 1000u
#define STREAM_BLOCK  (64u << 10)
/* JSON-RPC's implementation-defined server error: over the session cap. */
#define MCP_SERVER_BUSY (-32000)
/* A client that reads nothing while we queue this much is dropped. */
#define MAX_QUEUED (8u * MCP_MAX_MESSAGE)
/* Each connection is a thread; bounds them. */
#define CONN_LIMIT 256u
/* Idle keep-alive connections and stalled uploads are closed after this. */
#define CONN_TIMEOUT_S 120u

enum msg_kind { MSG_REQUEST, MSG_NOTIFICATION, MSG_RESPONSE };

/* A message waiting for its stream; SSE framing is added as it goes out. */
struct out_msg {
	struct out_msg *next;
	char *text;
	size_t len;
};

/* An HTTP response body that carries messages of one session. */
struct hstream {
	struct hstream *next; /* in hs->streams */
	struct hsess *hs;
	uintptr_t token; /* what the core sees as `stream`; 0 until attached */
	bool is_get;	 /* the standalone stream; else a POST's */
	bool sse;	 /* text/event-stream; else one application/json body */
	int fd;		 /* the connection's socket, polled for hang-ups */
	pthread_cond_t cond;
	struct out_msg *head, **tail;
	size_t queued; /* bytes in the queue */
	int expected;  /* responses this POST gets; -1 until the core said */
	int answered;  /* responses queued so far */
	int others;    /* requests and notifications queued so far */
	bool ended;    /* session closed or server stopping: end now */
	bool overflow; /* the client stopped reading */
	char *cur;     /* the chunk being written, cur_off bytes of it done */
	size_t cur_len, cur_off;
	uint64_t last_write_ms;
};

struct rsess;

/* The transport's side of one MCP session. */
struct hsess {
	struct hsess *next; /* in h->sessions while not closing */
	struct mcp_http *h;
	struct mcp_session *ss; /* in-process; NULL once closed */
	struct rsess *rs;	/* or carried to the service; NULL once closed */
	bool remote_gone;	/* the service ended it: the reaper closes it */
	char id[72];
	int refs;     /* the table, and each request that looked it up */
	int users;    /* threads inside a call on ss: closing waits for them */
	bool closing; /* out of the table; no new users or streams */
	uint64_t last_ms;
	uint64_t next_event; /* SSE event ids, unique within the session */
	int orphans;	     /* responses still owed to POST streams whose client left */
	struct hstream *streams;
	struct hstream *get;
};

struct mcp_http {
	struct mcp_server *srv; /* NULL when sessions are the service's */
	char *service_sock;	/* its MCP socket, or NULL */
	struct MHD_Daemon *d;
	unsigned port;
	char *token;
	char **origins; /* NULL: the local ones */
	size_t max_body;
	uint64_t idle_ms;
	unsigned max_sessions;
	unsigned n_sessions; /* in h->sessions, plus ones being created */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* session users leaving; the reaper's clock */
	struct hsess *sessions;
	uintptr_t next_token;
	bool stopping;
	pthread_t reaper;
	bool reaper_started;
};

/* One HTTP request (MHD's con_cls). */
struct hreq {
	char *body;
	size_t len, cap;
	bool too_large;
	size_t discarded;
	struct hsess *hs;   /* a reference, once the session is known */
	struct hstream *st; /* the stream MHD is reading, if any */
	bool close_session; /* a failed initialize: its session goes when done */
};

/* ---- request checks ---- */

static const char *header(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/*
 * The default origins: a page served from this machine.  Anything else a
 * browser sends came from a site that may have re-pointed a DNS name at
 * 127.0.0.1 to reach us (DNS rebinding), so it is refused.
 */
static bool origin_is_local(const char *o)
{
	static const char *const schemes[] = {"http://", "https://"};
	static const char *const hosts[] = {"localhost", "127.0.0.1", "[::1]"};
	const char *p = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(schemes) && p == NULL; i++)
		if (strncasecmp(o, schemes[i], strlen(schemes[i])) == 0)
			p = o + strlen(schemes[i]);
	if (p == NULL)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(hosts); i++) {
		size_t n = strlen(hosts[i]), digits = 0;
		const char *q = p + n;

		if (strncasecmp(p, hosts[i], n) != 0)
			continue;
		if (*q == '\0')
			return true;
		if (*q++ != ':')
			return false;
		while (q[digits] >= '0' && q[digits] <= '9')
			digits++;
		return digits > 0 && digits <= 5 && q[digits] == '\0';
	}
	return false;
}

static bool origin_allowed(const struct mcp_http *h, const char *origin)
{
	if (h->origins == NULL)
		return origin_is_local(origin);
	for (char **o = h->origins; *o != NULL; o++)
		if (strcasecmp(*o, origin) == 0)
			return true;
	return false;
}

static bool authorized(const struct mcp_http *h, const char *auth)
{
	return lg_http_bearer_ok(auth, h->token);
}

static bool accepts(struct MHD_Connection *c, const char *type)
{
	const char *a = header(c, MHD_HTTP_HEADER_ACCEPT);
	return a != NULL && strcasestr(a, type) != NULL;
}

static bool content_type_json(struct MHD_Connection *c)
{
	const char *t = header(c, MHD_HTTP_HEADER_CONTENT_TYPE);
	static const char json[] = "application/json";

	return t != NULL && strncasecmp(t, json, sizeof(json) - 1) == 0 &&
	       strchr("; \t", t[sizeof(json) - 1]) != NULL; /* strchr finds the NUL too */
}

/*
 * A present MCP-Protocol-Version must be one we speak; without it the
 * spec says to assume 2025-03-26, which we speak.
 */
static bool protocol_header_ok(struct MHD_Connection *c)
{
	const char *v = header(c, "MCP-Protocol-Version");
	return v == NULL || mcp_protocol_supported(v);
}

/* ---- responses ---- */

static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
	enum MHD_Result ret;

	if (r == NULL)
		return MHD_NO;
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static struct MHD_Response *json_body(char *text)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);

	if (r == NULL) {
		free(text);
		return NULL;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	return r;
}

/*
 * An HTTP error with a JSON-RPC error body (id null), as the official SDKs
 * answer, so a client can show the message whatever the status.
 */
static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, int code,
				   const char *hname, const char *hvalue, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, int code,
				   const char *hname, const char *hvalue, const char *fmt, ...)
{
	struct MHD_Response *r;
	char msg[256];
	json_t *e;
	char *text;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e = json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error", "code", code,
		      "message", msg);
	text = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;
	json_decref(e);
	if (text == NULL)
		return MHD_NO;
	r = json_body(text);
	if (r != NULL && hname != NULL)
		MHD_add_response_header(r, hname, hvalue);
	return queue(c, status, r);
}

/* GET /metrics: the Prometheus text format 0.0.4 (docs/metrics.md). */
static enum MHD_Result reply_metrics(struct mcp_http *h, struct MHD_Connection *c)
{
	struct MHD_Response *r;
	char *text;

	if (h->srv == NULL)
		return reply_error(c, MHD_HTTP_NOT_FOUND, MCP_INVALID_REQUEST, NULL, NULL,
				   "Not Found: the sandboxes are the service's: its metrics are "
				   "GET /metrics on its API socket (DATA/serve.sock)");
	text = mcp_server_metrics(h->srv);
	r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
	return queue(c, MHD_HTTP_OK, r);
}

static enum MHD_Result reply_empty(struct MHD_Connection *c, unsigned status)
{
	return queue(c, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

/* ---- streams ---- */

static struct hstream *stream_new(struct hsess *hs, bool is_get, bool sse, int fd)
{
	struct hstream *st = xzalloc(sizeof(*st));

	st->hs = hs;
	st->is_get = is_get;
	st->sse = sse;
	st->fd = fd;
	st->tail = &st->head;
	st->expected = -1;
	st->last_write_ms = lg_now_ms();
	lg_cond_init_mono(&st->cond);
	return st;
}

static void stream_free(struct hstream *st)
{
	struct out_msg *m;

	while ((m = st->head) != NULL) {
		st->head = m->next;
		free(m->text);
		free(m);
	}
	free(st->cur);
	pthread_cond_destroy(&st->cond);
	free(st);
}

/* Makes st reachable by send(). */
static int stream_attach(struct hstream *st)
{
	struct hsess *hs = st->hs;
	struct mcp_http *h = hs->h;
	int ret = 0;

	pthread_mutex_lock(&h->lock);
	if (h->stopping)
		ret = -ESHUTDOWN;
	else if (hs->closing)
		ret = -ENOENT;
	else if (st->is_get && hs->get != NULL)
		ret = -EBUSY;
	if (ret == 0) {
		st->token = ++h->next_token;
		st->next = hs->streams;
		hs->streams = st;
		if (st->is_get)
			hs->get = st;
	}
	pthread_mutex_unlock(&h->lock);
	return ret;
}

static void stream_detach_locked(struct hstream *st)
{
	struct hsess *hs = st->hs;

	for (struct hstream **pp = &hs->streams; *pp != NULL; pp = &(*pp)->next)
		if (*pp == st) {
			*pp = st->next;
			break;
		}
	if (hs->get == st)
		hs->get = NULL;
}

static bool stream_complete(const struct hstream *st)
{
	return st->expected >= 0 && st->answered >= st->expected;
}

/* The queued responses as one JSON text: the response, or an array of them. */
static char *stream_join(struct hstream *st)
{
	struct out_msg *m;
	size_t n = 0, total = 2;
	char *out, *p;

	for (m = st->head; m != NULL; m = m->next, n++)
		total += m->len + 1;
	if (n == 1) {
		out = st->head->text;
		st->head->text = NULL;
	} else {
		p = out = xmalloc(total + 1);
		*p++ = '[';
		for (m = st->head; m != NULL; m = m->next) {
			if (m != st->head)
				*p++ = ',';
			memcpy(p, m->text, m->len);
			p += m->len;
		}
		*p++ = ']';
		*p = '\0';
	}
	while ((m = st->head) != NULL) {
		st->head = m->next;
		free(m->text);
		free(m);
	}
	st->tail = &st->head;
	st->queued = 0;
	return out;
}

/*
 * MHD's content reader: blocks (this connection's thread only) until there
 * is something to write, the stream is complete, or the client is gone.
 */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct hstream *st = cls;
	struct mcp_http *h = st->hs->h;
	ssize_t ret;

	pthread_mutex_lock(&h->lock);
	for (;;) {
		if (st->cur != NULL) {
			size_t n = st->cur_len - st->cur_off;

			if (n > max)
				n = max;
			memcpy(buf, st->cur + st->cur_off, n);
			st->cur_off += n;
			if (st->cur_off == st->cur_len) {
				free(st->cur);
				st->cur = NULL;
			}
			st->last_write_ms = lg_now_ms();
			ret = (ssize_t)n;
			break;
		}
		if (st->overflow) {
			ret = MHD_CONTENT_READER_END_WITH_ERROR;
			break;
		}
		if (st->ended || h->stopping) {
			ret = MHD_CONTENT_READER_END_OF_STREAM;
			break;
		}
		if (st->head != NULL && (st->sse || stream_complete(st))) {
			struct out_msg *m = st->head;

			if (st->sse) {
				st->head = m->next;
				if (st->head == NULL)
					st->tail = &st->head;
				st->queued -= m->len;
				st->cur =
				    xasprintf("id: %llu\nevent: message\ndata: %s\n\n",
					      (unsigned long long)++st->hs->next_event, m->text);
				free(m->text);
				free(m);
			} else {
				st->cur = stream_join(st);
			}
			st->cur_len = strlen(st->cur);
			st->cur_off = 0;
			continue;
		}
		if (!st->is_get && stream_complete(st)) {
			ret = MHD_CONTENT_READER_END_OF_STREAM;
			break;
		}
		lg_cond_wait_ms(&st->cond, &h->lock, PEER_CHECK_MS);
		if (st->cur != NULL || st->head != NULL || st->ended || h->stopping ||
		    stream_complete(st))
			continue;
		if (lg_fd_peer_gone(st->fd)) {
			ret = MHD_CONTENT_READER_END_WITH_ERROR;
			break;
		}
		if (lg_now_ms() - st->last_write_ms >= PING_MS) {
			/*
			 * Clients time out reads (httpx: 30 s) during a long
			 * call.  An SSE comment is ignored by every parser;
			 * whitespace before a JSON value is valid JSON.
			 */
			st->cur = xstrdup(st->sse ? ": ping\n\n" : "\n");
			st->cur_len = strlen(st->cur);
			st->cur_off = 0;
		}
	}
	pthread_mutex_unlock(&h->lock);
	return ret;
}

/* ---- sessions ---- */

static struct hsess *session_find(struct mcp_http *h, const char *id)
{
	struct hsess *hs;

	pthread_mutex_lock(&h->lock);
	for (hs = h->sessions; hs != NULL; hs = hs->next)
		if (lg_secret_equal(id, hs->id))
			break;
	if (hs != NULL) {
		hs->refs++;
		hs->last_ms = lg_now_ms();
	}
	pthread_mutex_unlock(&h->lock);
	return hs;
}

static void session_put(struct hsess *hs)
{
	struct mcp_http *h = hs->h;
	bool last;

	pthread_mutex_lock(&h->lock);
	last = --hs->refs == 0;
	pthread_mutex_unlock(&h->lock);
	/* The table's reference goes last, after mcp_session_close(). */
	if (last)
		free(hs);
}

static int http_send(void *transport, void *stream, const char *json);
static struct rsess *rsess_open(struct hsess *hs, const char *path, struct lg_err **err);
static int rsess_handle(struct rsess *rs, const json_t *msg, uintptr_t stream);
static const char *rsess_protocol(const struct rsess *rs);
static void rsess_close(struct rsess *rs);

/*
 * A new session with a reference for the caller in *out; -ESHUTDOWN when
 * stopping, -EUSERS when max_sessions are open.  The slot is taken before
 * the core's session is made, so concurrent initializes cannot overshoot.
 */
static int session_create(struct mcp_http *h, struct hsess **out)
{
	struct hsess *hs;

	*out = NULL;
	pthread_mutex_lock(&h->lock);
	if (h->stopping) {
		pthread_mutex_unlock(&h->lock);
		return -ESHUTDOWN;
	}
	if (h->n_sessions >= h->max_sessions) {
		pthread_mutex_unlock(&h->lock);
		lg_warn("mcp http: refused a new session: %u sessions open (the cap)",
			h->max_sessions);
		return -EUSERS;
	}
	h->n_sessions++;
	pthread_mutex_unlock(&h->lock);

	hs = xzalloc(sizeof(*hs));
	hs->h = h;
	hs->refs = 2; /* the table and the caller */
	hs->last_ms = lg_now_ms();
	if (h->service_sock != NULL) {
		struct lg_err *err = NULL;

		/* Ours to make: the service's session id never leaves the socket. */
		lg_random_hex(hs->id, 16);
		hs->id[32] = '\0';
		hs->rs = rsess_open(hs, h->service_sock, &err);
		if (hs->rs == NULL) {
			lg_warn("mcp http: refused a new session: %s", err->msg);
			lg_err_free(&err);
			pthread_mutex_lock(&h->lock);
			h->n_sessions--;
			pthread_mutex_unlock(&h->lock);
			free(hs);
			return -EHOSTDOWN;
		}
	} else {
		hs->ss = mcp_session_new(h->srv, http_send, hs);
		snprintf(hs->id, sizeof(hs->id), "%s", mcp_session_id(hs->ss));
	}
	pthread_mutex_lock(&h->lock);
	if (h->stopping) {
		h->n_sessions--;
		pthread_mutex_unlock(&h->lock);
		if (hs->rs != NULL)
			rsess_close(hs->rs);
		else
			mcp_session_close(hs->ss);
		free(hs);
		return -ESHUTDOWN;
	}
	hs->next = h->sessions;
	h->sessions = hs;
	pthread_mutex_unlock(&h->lock);
	lg_debug("mcp http: session %s opened", hs->id);
	*out = hs;
	return 0;
}

/* Whether the session may be called (it is not closing); then session_unuse() after. */
static bool session_use(struct hsess *hs)
{
	struct mcp_http *h = hs->h;
	bool ok;

	pthread_mutex_lock(&h->lock);
	ok = !hs->closing && (hs->ss != NULL || hs->rs != NULL);
	if (ok)
		hs->users++;
	pthread_mutex_unlock(&h->lock);
	return ok;
}

/* mcp_session_handle() on the session, in-process or the service's.  Between use and unuse. */
static int session_handle(struct hsess *hs, const json_t *msg, uintptr_t stream)
{
	if (hs->rs != NULL)
		return rsess_handle(hs->rs, msg, stream);
	return mcp_session_handle(hs->ss, msg, (void *)stream);
}

static const char *session_protocol(struct hsess *hs)
{
	return hs->rs != NULL ? rsess_protocol(hs->rs) : mcp_session_protocol(hs->ss);
}

static void session_unuse(struct hsess *hs)
{
	struct mcp_http *h = hs->h;

	pthread_mutex_lock(&h->lock);
	if (--hs->users == 0 && hs->closing)
		pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

/*
 * Ends the session: out of the table (new requests get 404), its streams
 * end, and mcp_session_close() destroys its sandboxes.  The caller holds a
 * reference.  Blocks until the core is done; a second caller returns at once.
 */
static void session_close(struct hsess *hs, const char *why)
{
	struct mcp_http *h = hs->h;
	struct mcp_session *ss;
	struct rsess *rs;

	pthread_mutex_lock(&h->lock);
	if (hs->closing) {
		pthread_mutex_unlock(&h->lock);
		return;
	}
	hs->closing = true;
	for (struct hsess **pp = &h->sessions; *pp != NULL; pp = &(*pp)->next)
		if (*pp == hs) {
			*pp = hs->next;
			h->n_sessions--;
			break;
		}
	for (struct hstream *st = hs->streams; st != NULL; st = st->next) {
		st->ended = true;
		pthread_cond_broadcast(&st->cond);
	}
	while (hs->users > 0)
		pthread_cond_wait(&h->cond, &h->lock);
	ss = hs->ss;
	rs = hs->rs;
	pthread_mutex_unlock(&h->lock);

	lg_info("mcp http: closing session %s: %s", hs->id, why);
	if (rs != NULL)
		rsess_close(rs);
	else
		mcp_session_close(ss);

	pthread_mutex_lock(&h->lock);
	hs->ss = NULL;
	hs->rs = NULL;
	pthread_mutex_unlock(&h->lock);
	session_put(hs); /* the table's */
}

/* ---- the core's send() ---- */

static enum msg_kind classify(const json_t *msg)
{
	if (json_is_array(msg))
		return MSG_RESPONSE; /* the only batches a server sends */
	if (json_object_get(msg, "method") == NULL)
		return json_is_object(msg) ? MSG_RESPONSE : MSG_NOTIFICATION;
	return json_object_get(msg, "id") != NULL ? MSG_REQUEST : MSG_NOTIFICATION;
}

static int enqueue_locked(struct hstream *st, enum msg_kind kind, const char *json)
{
	struct out_msg *m;

	if (st->queued > MAX_QUEUED) {
		st->overflow = true;
		pthread_cond_broadcast(&st->cond);
		return -ENOBUFS;
	}
	m = xzalloc(sizeof(*m));
	m->text = xstrdup(json);
	m->len = strlen(m->text);
	*st->tail = m;
	st->tail = &m->next;
	st->queued += m->len;
	if (kind == MSG_RESPONSE)
		st->answered++;
	else
		st->others++;
	pthread_cond_broadcast(&st->cond);
	return 0;
}

/*
 * Where a message goes: to the POST stream it belongs to (a JSON-mode POST
 * takes only its responses); requests and notifications without a stream
 * that takes them go to the GET stream.  The spec forbids responses on the
 * GET stream, so a response whose POST stream is gone is dropped.
 */
static int http_send(void *transport, void *stream, const char *json)
{
	struct hsess *hs = transport;
	struct mcp_http *h = hs->h;
	uintptr_t token = (uintptr_t)stream;
	json_t *msg = json_loads(json, JSON_DECODE_ANY, NULL);
	enum msg_kind kind = classify(msg);
	char *flat = NULL;
	struct hstream *st = NULL;
	int ret;

	/* An SSE data line ends at a newline: a message must be one line. */
	if (msg != NULL && strpbrk(json, "\r\n") != NULL)
		json = flat = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(msg);
	if (json == NULL)
		return -ENOMEM;

	pthread_mutex_lock(&h->lock);
	if (token != 0)
		for (st = hs->streams; st != NULL && st->token != token; st = st->next)
			;
	if (st != NULL && !st->ended && (st->sse || kind == MSG_RESPONSE)) {
		ret = enqueue_locked(st, kind, json);
	} else if (kind == MSG_RESPONSE) {
		if (st == NULL && token != 0 && hs->orphans > 0)
			hs->orphans--;
		ret = -EPIPE;
	} else if (hs->get != NULL && !hs->get->ended) {
		ret = enqueue_locked(hs->get, kind, json);
	} else {
		/*
		 * A notification nobody listens for is lost, as the spec
		 * allows; a request fails, so the core can ask elsewhere.
		 */
		ret = kind == MSG_REQUEST ? -ENOTCONN : 0;
	}
	pthread_mutex_unlock(&h->lock);
	free(flat);
	return ret;
}

/* ---- remote sessions: carried over a connection to the service's MCP socket ---- */

/*
 * With a running service (`luminaguard serve`) each HTTP session is one
 * connection to its MCP socket (mcp/sock.h), where the service runs an MCP
 * session of its own, so the sandboxes live in the service.  The service
 * speaks newline-delimited JSON-RPC there, as on stdio, and knows nothing
 * of our streams, so this side routes: each request of the client goes out
 * under an id of ours (a counter), and its response comes back to that
 * request's stream under the client's id.  Two requests with the same id
 * (the client's to choose) cannot be confused, and a session can only ever
 * reach its own connection.  The service's own requests and notifications
 * (elicitation/create, notifications/cancelled) go to the stream of the
 * one tools/call in progress if there is exactly one, else where a message
 * of no request goes (the GET stream).
 */

/* How long a request other than tools/call may wait for its answer in handle(). */
#define REMOTE_QUICK_MS 30000u
/* How long closing waits for the service to end the session (destroy its sandboxes). */
#define REMOTE_CLOSE_MS 60000u
/* A service that takes no bytes this long has hung: the session ends. */
#define REMOTE_SEND_TIMEOUT_S 30

/* A request of the client the service still owes a response. */
struct rpend {
	struct rpend *next;
	int64_t wire; /* our id on the connection */
	json_t *id;   /* the client's */
	uintptr_t stream;
	bool is_call; /* tools/call: may run long */
	bool is_init;
};

struct rsess {
	struct hsess *hs; /* messages go out through http_send(hs, ...) */
	int fd;
	pthread_t reader;
	pthread_mutex_t lock;  /* pend, next_wire, delivering, gone, eof */
	pthread_mutex_t wlock; /* one line at a time on fd */
	pthread_cond_t cond;   /* a request answered; gone; eof */
	struct rpend *pend;
	int64_t next_wire;
	int64_t delivering;   /* the wire id of the response being delivered, or 0 */
	const char *protocol; /* an mcp_protocol_versions entry, NULL before initialize; atomic */
	bool gone;	      /* the connection ended: requests are answered here */
	bool eof;	      /* the reader is done */
};

/* A JSON-RPC error answered on this side.  Returns 1: one response. */
static int local_error(struct hsess *hs, uintptr_t stream, const json_t *id, int code,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int local_error(struct hsess *hs, uintptr_t stream, const json_t *id, int code,
		       const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	json_t *e;
	char *text;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
		      id != NULL ? id : json_null(), "error", "code", code, "message", msg);
	text = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;
	json_decref(e);
	if (text != NULL)
		http_send(hs, (void *)stream, text);
	free(text);
	return 1;
}

static struct rpend *pend_find_locked(struct rsess *rs, int64_t wire)
{
	struct rpend *p;

	for (p = rs->pend; p != NULL && p->wire != wire; p = p->next)
		;
	return p;
}

static void pend_unlink_locked(struct rsess *rs, struct rpend *p)
{
	for (struct rpend **pp = &rs->pend; *pp != NULL; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
}

static void pend_free(struct rpend *p)
{
	json_decref(p->id);
	free(p);
}

/* Tells the reaper to close the session: the service ended it. */
static void remote_gone(struct hsess *hs)
{
	struct mcp_http *h = hs->h;

	pthread_mutex_lock(&h->lock);
	hs->remote_gone = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

/* A response of the service to one of our requests. */
static void remote_response(struct rsess *rs, json_t *msg)
{
	const json_t *id = json_object_get(msg, "id");
	const json_t *result = json_object_get(msg, "result");
	struct rpend *p = NULL;
	uintptr_t stream = 0;
	char *text;

	pthread_mutex_lock(&rs->lock);
	if (json_is_integer(id))
		p = pend_find_locked(rs, json_integer_value(id));
	if (p != NULL) {
		/* Ours now; a waiter in remote_request() waits while it is delivered. */
		pend_unlink_locked(rs, p);
		rs->delivering = p->wire;
		stream = p->stream;
	}
	pthread_mutex_unlock(&rs->lock);
	if (p == NULL) {
		lg_debug("mcp http: session %s: dropped a response of the service to no request "
			 "of ours",
			 rs->hs->id);
		return;
	}
	if (p->is_init && json_is_object(result)) {
		const char *v = json_string_value(json_object_get(result, "protocolVersion"));
		const char *ours = NULL;

		for (size_t i = 0; v != NULL && mcp_protocol_versions[i] != NULL; i++)
			if (strcmp(v, mcp_protocol_versions[i]) == 0)
				ours = mcp_protocol_versions[i];
		if (ours != NULL) {
			__atomic_store_n(&rs->protocol, ours, __ATOMIC_RELEASE);
		} else {
			local_error(rs->hs, stream, p->id, MCP_INTERNAL_ERROR,
				    "the service answered with a protocol version this transport "
				    "does not speak");
			msg = NULL;
		}
	}
	if (msg != NULL) {
		json_object_set(msg, "id", p->id);
		text = json_dumps(msg, JSON_COMPACT);
		if (text != NULL)
			http_send(rs->hs, (void *)stream, text);
		free(text);
	}
	pthread_mutex_lock(&rs->lock);
	rs->delivering = 0;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
	pend_free(p);
}

/* One line from the service. */
static void remote_line(struct rsess *rs, const char *line, size_t len)
{
	json_t *msg = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	uintptr_t stream = 0;
	unsigned calls = 0;

	if (!json_is_object(msg)) {
		lg_warn("mcp http: session %s: the service sent something that is not a JSON-RPC "
			"message: dropped",
			rs->hs->id);
		json_decref(msg);
		return;
	}
	if (json_object_get(msg, "method") == NULL) {
		remote_response(rs, msg);
		json_decref(msg);
		return;
	}
	/* Its own request or notification: to the one call in progress, if one. */
	pthread_mutex_lock(&rs->lock);
	for (struct rpend *p = rs->pend; p != NULL; p = p->next)
		if (p->is_call) {
			calls++;
			stream = p->stream;
		}
	pthread_mutex_unlock(&rs->lock);
	json_decref(msg);
	if (http_send(rs->hs, (void *)(calls == 1 ? stream : 0), line) < 0)
		lg_debug("mcp http: session %s: no stream takes a message of the service",
			 rs->hs->id);
}

static void *remote_reader(void *arg)
{
	struct rsess *rs = arg;
	struct mcp_lines lines;
	const char *why = "the service ended the session";
	struct rpend *left;
	char *line;
	size_t len;
	int r;

	mcp_lines_init(&lines, MCP_MAX_MESSAGE);
	while ((r = mcp_lines_next(&lines, rs->fd, &line, &len)) > 0)
		if (len > 0)
			remote_line(rs, line, len);
	if (r == -E2BIG) {
		why = "the service sent a message over the size limit";
		lg_warn("mcp http: session %s: the service sent a line over %u bytes: session "
			"ended",
			rs->hs->id, MCP_MAX_MESSAGE);
	} else if (r < 0) {
		lg_warn("mcp http: session %s: reading from the service: %s", rs->hs->id,
			strerror(-r));
	}
	mcp_lines_free(&lines);
	/* Nothing more comes: stop the service's side too (a no-op after its EOF). */
	shutdown(rs->fd, SHUT_RDWR);

	pthread_mutex_lock(&rs->lock);
	rs->gone = true;
	left = rs->pend;
	rs->pend = NULL;
	pthread_mutex_unlock(&rs->lock);
	/* Whatever the service still owed is answered here, so no stream waits forever. */
	while (left != NULL) {
		struct rpend *p = left;
		left = p->next;
		local_error(rs->hs, p->stream, p->id, MCP_INTERNAL_ERROR, "%s", why);
		pend_free(p);
	}
	remote_gone(rs->hs);
	pthread_mutex_lock(&rs->lock);
	rs->eof = true;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
	return NULL;
}

/* Writes msg as one line.  -E2BIG when too long (nothing written), <0 when the connection broke. */
static int remote_write(struct rsess *rs, const json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t n;
	int r = 0;

	if (text == NULL)
		return -ENOMEM;
	n = strlen(text);
	if (n > MCP_MAX_MESSAGE) {
		free(text);
		return -E2BIG;
	}
	text[n++] = '\n'; /* over json_dumps' NUL: the length is known */
	pthread_mutex_lock(&rs->wlock);
	for (size_t done = 0; done < n;) {
		/* MSG_NOSIGNAL: a service that went away is an error here, not SIGPIPE. */
		ssize_t w = send(rs->fd, text + done, n - done, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			/* Gone, or SO_SNDTIMEO: the reader sees the end and answers what is owed.
			 */
			r = -EPIPE;
			shutdown(rs->fd, SHUT_RDWR);
			break;
		}
		done += (size_t)w;
	}
	pthread_mutex_unlock(&rs->wlock);
	free(text);
	return r;
}

static int remote_request(struct rsess *rs, const json_t *msg, uintptr_t stream, const char *method)
{
	struct rpend *p;
	json_t *out;
	int64_t wire;
	bool quick = strcmp(method, "tools/call") != 0;
	int r;

	pthread_mutex_lock(&rs->lock);
	if (rs->gone) {
		pthread_mutex_unlock(&rs->lock);
		return local_error(rs->hs, stream, json_object_get(msg, "id"), MCP_INTERNAL_ERROR,
				   "the service ended this session");
	}
	p = xzalloc(sizeof(*p));
	p->wire = wire = ++rs->next_wire;
	p->id = json_deep_copy(json_object_get(msg, "id"));
	p->stream = stream;
	p->is_call = !quick;
	p->is_init = strcmp(method, "initialize") == 0;
	p->next = rs->pend;
	rs->pend = p;
	pthread_mutex_unlock(&rs->lock);

	out = json_copy((json_t *)msg);
	json_object_set_new(out, "id", json_integer(wire));
	r = remote_write(rs, out);
	json_decref(out);
	if (r == -E2BIG) {
		bool ours;

		pthread_mutex_lock(&rs->lock);
		p = pend_find_locked(rs, wire);
		ours = p != NULL;
		if (ours)
			pend_unlink_locked(rs, p);
		pthread_mutex_unlock(&rs->lock);
		if (ours) {
			local_error(rs->hs, stream, p->id, MCP_INVALID_REQUEST,
				    "message larger than %u bytes", MCP_MAX_MESSAGE);
			pend_free(p);
		}
		return 1;
	}
	if (quick) {
		/*
		 * The service answers these at once: waiting lets the answer be
		 * one JSON body, and initialize's tells whether there is a session.
		 */
		uint64_t start = lg_now_ms();

		pthread_mutex_lock(&rs->lock);
		while ((pend_find_locked(rs, wire) != NULL || rs->delivering == wire) &&
		       lg_now_ms() - start < REMOTE_QUICK_MS)
			lg_cond_wait_ms(&rs->cond, &rs->lock, 1000);
		pthread_mutex_unlock(&rs->lock);
	}
	return 1;
}

/*
 * Validates what the service would answer with an id we could not route
 * (id null), answers that here, rewrites ids, and forwards.  Returns what
 * mcp_session_handle() does.
 */
static int rsess_handle(struct rsess *rs, const json_t *msg, uintptr_t stream)
{
	struct hsess *hs = rs->hs;
	const json_t *id = json_object_get(msg, "id");
	const json_t *method = json_object_get(msg, "method");
	const char *jsonrpc = json_string_value(json_object_get(msg, "jsonrpc"));
	const json_t *good_id = json_is_string(id) || json_is_integer(id) ? id : NULL;

	if (json_is_array(msg))
		return local_error(hs, stream, NULL, MCP_INVALID_REQUEST,
				   "batched messages are not supported");
	if (!json_is_object(msg))
		return local_error(hs, stream, NULL, MCP_INVALID_REQUEST,
				   "a JSON-RPC message must be an object");
	if (jsonrpc == NULL || strcmp(jsonrpc, "2.0") != 0)
		return local_error(hs, stream, good_id, MCP_INVALID_REQUEST,
				   "jsonrpc must be \"2.0\"");
	if (method == NULL) {
		if (json_object_get(msg, "result") == NULL && json_object_get(msg, "error") == NULL)
			return local_error(hs, stream, NULL, MCP_INVALID_REQUEST,
					   "neither a request nor a response");
		/* An answer to the service's request: its id is the service's. */
		remote_write(rs, msg);
		return 0;
	}
	if (id != NULL && good_id == NULL)
		return local_error(hs, stream, NULL, MCP_INVALID_REQUEST,
				   "id must be a string or an integer");
	if (id != NULL && json_is_string(method))
		return remote_request(rs, msg, stream, json_string_value(method));
	if (id != NULL) /* a bad method: the service answers under our id */
		return remote_request(rs, msg, stream, "");
	/* A notification.  A cancellation names a request by the client's id. */
	if (json_is_string(method) &&
	    strcmp(json_string_value(method), "notifications/cancelled") == 0) {
		const json_t *params = json_object_get(msg, "params");
		const json_t *rid = json_object_get(params, "requestId");
		json_t *out;
		int64_t wire = 0;

		struct rpend *p;

		/*
		 * A cancelled request gets no response (MCP: cancellation), so it
		 * is forgotten now; it must not count as a call in progress.
		 */
		pthread_mutex_lock(&rs->lock);
		for (p = rs->pend; p != NULL && rid != NULL; p = p->next)
			if (json_equal(p->id, (json_t *)rid))
				break;
		if (p != NULL && rid != NULL) {
			wire = p->wire;
			pend_unlink_locked(rs, p);
			pend_free(p);
		}
		pthread_mutex_unlock(&rs->lock);
		if (wire == 0)
			return 0; /* nothing of ours to cancel */
		out = json_deep_copy(msg);
		json_object_set_new(json_object_get(out, "params"), "requestId",
				    json_integer(wire));
		remote_write(rs, out);
		json_decref(out);
		return 0;
	}
	remote_write(rs, msg);
	return 0;
}

static const char *rsess_protocol(const struct rsess *rs)
{
	return __atomic_load_n(&rs->protocol, __ATOMIC_ACQUIRE);
}

static struct rsess *rsess_open(struct hsess *hs, const char *path, struct lg_err **err)
{
	struct timeval tv = {.tv_sec = REMOTE_SEND_TIMEOUT_S};
	struct rsess *rs;
	int fd = lg_usock_connect(path);

	if (fd < 0) {
		lg_err_set(err, -fd, "cannot reach the service's MCP socket %s", path);
		return NULL;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	rs = xzalloc(sizeof(*rs));
	rs->hs = hs;
	rs->fd = fd;
	pthread_mutex_init(&rs->lock, NULL);
	pthread_mutex_init(&rs->wlock, NULL);
	lg_cond_init_mono(&rs->cond);
	if (pthread_create(&rs->reader, NULL, remote_reader, rs) != 0) {
		lg_err_set(err, EAGAIN, "cannot start a thread for a session");
		close(fd);
		pthread_mutex_destroy(&rs->lock);
		pthread_mutex_destroy(&rs->wlock);
		pthread_cond_destroy(&rs->cond);
		free(rs);
		return NULL;
	}
	return rs;
}

/*
 * Ends the connection: the service sees its end, closes its session and
 * destroys the sandboxes, then closes its side, which is what we wait for.
 */
static void rsess_close(struct rsess *rs)
{
	uint64_t start = lg_now_ms();

	shutdown(rs->fd, SHUT_WR);
	pthread_mutex_lock(&rs->lock);
	while (!rs->eof && lg_now_ms() - start < REMOTE_CLOSE_MS)
		lg_cond_wait_ms(&rs->cond, &rs->lock, 1000);
	if (!rs->eof)
		lg_warn("mcp http: session %s: the service did not end the session within %u s",
			rs->hs->id, REMOTE_CLOSE_MS / 1000);
	pthread_mutex_unlock(&rs->lock);
	shutdown(rs->fd, SHUT_RDWR);
	pthread_join(rs->reader, NULL);
	while (rs->pend != NULL) {
		struct rpend *p = rs->pend;
		rs->pend = p->next;
		pend_free(p);
	}
	close(rs->fd);
	pthread_mutex_destroy(&rs->lock);
	pthread_mutex_destroy(&rs->wlock);
	pthread_cond_destroy(&rs->cond);
	free(rs);
}

/* ---- methods ---- */

static struct hsess *require_session(struct mcp_http *h, struct MHD_Connection *c,
				     enum MHD_Result *ret)
{
	const char *sid = header(c, "Mcp-Session-Id");
	struct hsess *hs;

	if (sid == NULL) {
		*ret = reply_error(c, MHD_HTTP_BAD_REQUEST, MCP_INVALID_REQUEST, NULL, NULL,
				   "Bad Request: Mcp-Session-Id header is required");
		return NULL;
	}
	hs = session_find(h, sid);
	if (hs == NULL) {
		*ret = reply_error(c, MHD_HTTP_NOT_FOUND, MCP_INVALID_REQUEST, NULL, NULL,
				   "Session not found");
		return NULL;
	}
	if (!protocol_header_ok(c)) {
		session_put(hs);
		*ret = reply_error(c, MHD_HTTP_BAD_REQUEST, MCP_INVALID_REQUEST, NULL, NULL,
				   "Bad Request: unsupported MCP-Protocol-Version");
		return NULL;
	}
	return hs;
}

static enum MHD_Result attach_failed(struct MHD_Connection *c, int err)
{
	if (err == -EBUSY)
		return reply_error(c, MHD_HTTP_CONFLICT, MCP_INVALID_REQUEST, NULL, NULL,
				   "Conflict: this session already has a GET stream");
	if (err == -ENOENT)
		return reply_error(c, MHD_HTTP_NOT_FOUND, MCP_INVALID_REQUEST, NULL, NULL,
				   "Session not found");
	return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, MCP_INTERNAL_ERROR, NULL, NULL,
			   "the server is stopping");
}

static struct MHD_Response *stream_response(struct hstream *st)
{
	struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK,
								   stream_read, st, NULL);
	if (r == NULL)
		return NULL;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
				st->sse ? "text/event-stream" : "application/json");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	return r;
}

/*
 * 503 with Retry-After: the cap is a matter of load, not of this request, and
 * a session ending (DELETE, the idle reaper) frees a slot.
 */
static enum MHD_Result reply_session_cap(struct MHD_Connection *c, const struct mcp_http *h,
					 const json_t *id)
{
	struct MHD_Response *r;
	char msg[160];
	json_t *e;
	char *text;

	snprintf(msg, sizeof(msg),
		 "Service Unavailable: too many sessions (at most %u); end one with DELETE or "
		 "retry later",
		 h->max_sessions);
	e = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
		      json_is_string(id) || json_is_integer(id) ? id : json_null(), "error", "code",
		      MCP_SERVER_BUSY, "message", msg);
	text = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;
	json_decref(e);
	if (text == NULL)
		return MHD_NO;
	r = json_body(text);
	if (r != NULL)
		MHD_add_response_header(r, "Retry-After", "5");
	return queue(c, MHD_HTTP_SERVICE_UNAVAILABLE, r);
}

static enum MHD_Result do_post(struct mcp_http *h, struct hreq *req, struct MHD_Connection *c)
{
	json_error_t jerr;
	json_t *msg = json_loadb(req->body != NULL ? req->body : "", req->len,
				 JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	const char *method = json_string_value(json_object_get(msg, "method"));
	bool is_init = method != NULL && strcmp(method, "initialize") == 0 &&
		       json_object_get(msg, "id") != NULL;
	bool created = false, init_ok = true, complete, usable;
	struct MHD_Response *r;
	struct hstream *st;
	enum MHD_Result ret;
	int n, others, err;

	if (msg == NULL)
		return reply_error(c, MHD_HTTP_BAD_REQUEST, MCP_PARSE_ERROR, NULL, NULL,
				   "Parse error: %s", jerr.text);
	if (header(c, "Mcp-Session-Id") == NULL && is_init) {
		/* A version header on initialize says nothing yet: the body negotiates. */
		int cr = session_create(h, &req->hs);
		if (cr == -EUSERS) {
			/* Over the cap: a JSON-RPC error the client can show, with this id. */
			ret = reply_session_cap(c, h, json_object_get(msg, "id"));
			json_decref(msg);
			return ret;
		}
		if (cr == -EHOSTDOWN) {
			json_decref(msg);
			return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, MCP_INTERNAL_ERROR,
					   NULL, NULL,
					   "Service Unavailable: cannot reach the service's MCP "
					   "socket (is `luminaguard serve` running?)");
		}
		if (cr < 0) {
			json_decref(msg);
			return attach_failed(c, cr);
		}
		created = true;
	} else {
		req->hs = require_session(h, c, &ret);
		if (req->hs == NULL) {
			json_decref(msg);
			return ret;
		}
	}

	st = stream_new(req->hs, false, accepts(c, "text/event-stream"), lg_mhd_conn_fd(c));
	err = stream_attach(st);
	usable = err == 0 && session_use(req->hs);
	if (!usable) {
		if (err == 0) {
			pthread_mutex_lock(&h->lock);
			stream_detach_locked(st);
			pthread_mutex_unlock(&h->lock);
		}
		stream_free(st);
		json_decref(msg);
		return attach_failed(c, err != 0 ? err : -ENOENT);
	}
	n = session_handle(req->hs, msg, st->token);
	if (created)
		init_ok = session_protocol(req->hs) != NULL;
	session_unuse(req->hs);
	json_decref(msg);
	/* An initialize that failed leaves a session nobody can name: drop it. */
	req->close_session = created && !init_ok;

	pthread_mutex_lock(&h->lock);
	st->expected = n > 0 ? n : 0;
	complete = stream_complete(st);
	others = st->others;
	if (n <= 0 || (complete && (!st->sse || others == 0)))
		stream_detach_locked(st);
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&h->lock);

	if (n < 0) {
		stream_free(st);
		return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, MCP_INTERNAL_ERROR, NULL,
				   NULL, "the message could not be handled");
	}
	if (n == 0) {
		/* Notifications and responses: nothing to answer. */
		stream_free(st);
		return reply_empty(c, MHD_HTTP_ACCEPTED);
	}
	if (complete && (!st->sse || others == 0)) {
		/* Answered already (every method but tools/call): one plain JSON body. */
		r = json_body(stream_join(st));
		stream_free(st);
	} else {
		r = stream_response(st);
		if (r != NULL) {
			req->st = st; /* freed when the request completes */
		} else {
			pthread_mutex_lock(&h->lock);
			stream_detach_locked(st);
			pthread_mutex_unlock(&h->lock);
			stream_free(st);
		}
	}
	if (r != NULL && created && init_ok)
		MHD_add_response_header(r, "Mcp-Session-Id", req->hs->id);
	return queue(c, MHD_HTTP_OK, r);
}

static enum MHD_Result do_get(struct mcp_http *h, struct hreq *req, struct MHD_Connection *c)
{
	struct MHD_Response *r;
	struct hstream *st;
	enum MHD_Result ret;
	int err;

	/* The spec's answer for a GET that cannot be an SSE stream. */
	if (!accepts(c, "text/event-stream"))
		return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, MCP_INVALID_REQUEST,
				   MHD_HTTP_HEADER_ALLOW, ALLOWED_METHODS,
				   "Method Not Allowed: GET needs Accept: text/event-stream");
	req->hs = require_session(h, c, &ret);
	if (req->hs == NULL)
		return ret;
	st = stream_new(req->hs, true, true, lg_mhd_conn_fd(c));
	err = stream_attach(st);
	if (err < 0) {
		stream_free(st);
		return attach_failed(c, err);
	}
	r = stream_response(st);
	if (r == NULL) {
		pthread_mutex_lock(&h->lock);
		stream_detach_locked(st);
		pthread_mutex_unlock(&h->lock);
		stream_free(st);
		return MHD_NO;
	}
	req->st = st;
	return queue(c, MHD_HTTP_OK, r);
}

static enum MHD_Result do_delete(struct mcp_http *h, struct hreq *req, struct MHD_Connection *c)
{
	enum MHD_Result ret;

	req->hs = require_session(h, c, &ret);
	if (req->hs == NULL)
		return ret;
	/* Answers after the sandboxes are gone, so a 200 means they are. */
	session_close(req->hs, "deleted by the client");
	return reply_empty(c, MHD_HTTP_OK);
}

/* Checks that need only the headers; the POST body comes later. */
/* How much of an oversized body is read and dropped so that its 413 arrives. */
static size_t discard_limit(const struct mcp_http *h)
{
	return 4 * h->max_body;
}

static enum MHD_Result on_headers(struct mcp_http *h, struct hreq *req, struct MHD_Connection *c,
				  const char *url, const char *method)
{
	const char *origin = header(c, "Origin");
	const char *len = header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
	uint64_t n;

	if (strcmp(url, MCP_PATH) != 0 && strcmp(url, METRICS_PATH) != 0)
		return reply_error(c, MHD_HTTP_NOT_FOUND, MCP_INVALID_REQUEST, NULL, NULL,
				   "Not Found: the MCP endpoint is " MCP_PATH);
	if (origin != NULL && !origin_allowed(h, origin)) {
		lg_warn("mcp http: refused a request from origin %.100s", origin);
		return reply_error(c, MHD_HTTP_FORBIDDEN, MCP_INVALID_REQUEST, NULL, NULL,
				   "Forbidden: origin not allowed");
	}
	if (!authorized(h, header(c, MHD_HTTP_HEADER_AUTHORIZATION)))
		return reply_error(c, MHD_HTTP_UNAUTHORIZED, MCP_INVALID_REQUEST,
				   MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
				   "Unauthorized: a valid bearer token is required");
	/* Same origin and token rules as the MCP endpoint: counts of sandboxes are the server's. */
	if (strcmp(url, METRICS_PATH) == 0)
		return strcmp(method, MHD_HTTP_METHOD_GET) == 0
			   ? reply_metrics(h, c)
			   : reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, MCP_INVALID_REQUEST,
					 MHD_HTTP_HEADER_ALLOW, "GET", "Method Not Allowed");
	if (strcmp(method, MHD_HTTP_METHOD_GET) == 0)
		return do_get(h, req, c);
	if (strcmp(method, MHD_HTTP_METHOD_DELETE) == 0)
		return do_delete(h, req, c);
	if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
		return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, MCP_INVALID_REQUEST,
				   MHD_HTTP_HEADER_ALLOW, ALLOWED_METHODS, "Method Not Allowed");
	if (!content_type_json(c))
		return reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, MCP_INVALID_REQUEST, NULL,
				   NULL,
				   "Unsupported Media Type: Content-Type must be application/json");
	if (len != NULL && (lg_parse_u64(len, 0, UINT64_MAX, &n) < 0 || n > h->max_body)) {
		/*
		 * A client that sends its body at once (fetch does) would lose a
		 * 413 sent now: closing with unread data makes the kernel reset
		 * the connection, and the reset wipes the response.  So a body
		 * up to discard_limit() is read and dropped first; beyond that
		 * the connection is not worth keeping.
		 */
		const char *expect = header(c, MHD_HTTP_HEADER_EXPECT);
		/* A client that waits for 100 Continue gets the 413 instead, at once. */
		if (len != NULL && n <= discard_limit(h) && expect == NULL) {
			req->too_large = true;
			return MHD_YES;
		}
		return reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, MCP_INVALID_REQUEST, NULL, NULL,
				   "Payload Too Large: at most %zu bytes", h->max_body);
	}
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct mcp_http *h = cls;
	struct hreq *req = *con_cls;

	if (req == NULL) {
		*con_cls = req = xzalloc(sizeof(*req));
		return on_headers(h, req, c, url, method);
	}
	if (*upload_size > 0) {
		size_t n = *upload_size;

		*upload_size = 0;
		if (req->too_large || n > h->max_body - req->len) {
			/*
			 * A chunked body grew past the limit: the rest is read
			 * and dropped so the 413 reaches the client, up to a
			 * point where the connection is just cut.
			 */
			req->too_large = true;
			req->discarded += n;
			free(req->body);
			req->body = NULL;
			req->len = req->cap = 0;
			return req->discarded > discard_limit(h) ? MHD_NO : MHD_YES;
		}
		if (req->len + n > req->cap) {
			size_t cap = req->cap ? req->cap : 16384;
			while (cap < req->len + n)
				cap *= 2;
			req->cap = cap < h->max_body ? cap : h->max_body;
			req->body = xrealloc(req->body, req->cap);
		}
		memcpy(req->body + req->len, upload, n);
		req->len += n;
		return MHD_YES;
	}
	if (req->too_large)
		return reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, MCP_INVALID_REQUEST, NULL, NULL,
				   "Payload Too Large: at most %zu bytes", h->max_body);
	return do_post(h, req, c);
}

/*
 * A request is done.  A POST stream that ended before all its responses
 * were written, or a GET stream, means the client hung up; see
 * docs/mcp-http.md ("Disconnects") for when that ends the session.
 */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct mcp_http *h = cls;
	struct hreq *req = *con_cls;
	struct hsess *hs;
	bool vanished = false;

	if (req == NULL)
		return;
	*con_cls = NULL;
	hs = req->hs;
	if (req->st != NULL) {
		struct hstream *st = req->st;

		pthread_mutex_lock(&h->lock);
		stream_detach_locked(st);
		bool dropped = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
			       toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN && !st->ended &&
			       !h->stopping;
		if (!st->is_get) {
			int owed = st->expected - st->answered;

			if (dropped && owed > 0) {
				hs->orphans += owed;
				vanished = hs->get == NULL;
			}
		} else {
			vanished = dropped && hs->orphans > 0;
		}
		pthread_mutex_unlock(&h->lock);
		stream_free(st);
	}
	if (hs != NULL) {
		if (vanished)
			session_close(hs, "the client disconnected during a call");
		else if (req->close_session)
			session_close(hs, "initialize failed");
		pthread_mutex_lock(&h->lock);
		hs->last_ms = lg_now_ms();
		pthread_mutex_unlock(&h->lock);
		session_put(hs);
	}
	free(req->body);
	free(req);
}

/* ---- the idle reaper ---- */

static void *reaper_main(void *arg)
{
	struct mcp_http *h = arg;

	pthread_mutex_lock(&h->lock);
	while (!h->stopping) {
		uint64_t now = lg_now_ms();
		struct hsess *hs;

		/*
		 * refs == 1: only the table holds it, so no request or stream is
		 * open.  One the service ended goes at once.
		 */
		for (hs = h->sessions; hs != NULL; hs = hs->next)
			if ((hs->refs == 1 && now - hs->last_ms >= h->idle_ms) || hs->remote_gone)
				break;
		if (hs == NULL) {
			lg_cond_wait_ms(&h->cond, &h->lock, 1000);
			continue;
		}
		hs->refs++;
		pthread_mutex_unlock(&h->lock);
		session_close(hs, hs->remote_gone ? "ended by the service" : "idle");
		session_put(hs);
		pthread_mutex_lock(&h->lock);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

/* ---- start and stop ---- */

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

static bool is_loopback(const struct sockaddr_storage *sa)
{
	if (sa->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* "HOST:PORT", "[V6]:PORT" or "localhost:PORT"; numeric only, so no DNS. */
static int parse_bind(const char *spec, struct sockaddr_storage *sa, socklen_t *salen,
		      struct lg_err **err)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *start = spec, *port, *end;
	uint64_t p;
	size_t n;

	memset(sa, 0, sizeof(*sa));
	if (spec == NULL || *spec == '\0')
		return lg_err_set(err, EINVAL, "no address to serve HTTP on");
	if (spec[0] == '[') {
		end = strchr(spec, ']');
		if (end == NULL || end[1] != ':')
			return lg_err_set(err, EINVAL, "`%s`: expected [IPV6]:PORT", spec);
		start = spec + 1;
		n = (size_t)(end - start);
		port = end + 2;
	} else {
		end = strrchr(spec, ':');
		if (end == NULL)
			return lg_err_set(err, EINVAL, "`%s`: expected HOST:PORT", spec);
		n = (size_t)(end - spec);
		port = end + 1;
	}
	if (n == 0 || n >= sizeof(host))
		return lg_err_set(err, EINVAL, "`%s`: bad host", spec);
	memcpy(host, start, n);
	host[n] = '\0';
	/* "::1:80" could mean two things: IPv6 goes in brackets. */
	if (start == spec && strchr(host, ':') != NULL)
		return lg_err_set(err, EINVAL, "`%s`: write an IPv6 address as [ADDR]:PORT", spec);
	if (lg_parse_u64(port, 0, 65535, &p) < 0)
		return lg_err_set(err, EINVAL, "`%s`: bad port", port);
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");

	struct sockaddr_in *in = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)p);
		*salen = sizeof(*in);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		*salen = sizeof(*in6);
	} else {
		return lg_err_set(err, EINVAL,
				  "`%s`: not an IP address (IPv6 goes in brackets: [::1]:PORT)",
				  host);
	}
	return 0;
}

static int listen_on(const char *where, const struct sockaddr_storage *sa, socklen_t salen,
		     unsigned *port, struct lg_err **err)
{
	cleanup_close int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_storage got;
	socklen_t gotlen = sizeof(got);
	int one = 1;

	if (fd < 0)
		return lg_err_sys(err, "socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* [::] means IPv6 only: serve exactly the address that was asked for. */
	if (sa->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)sa, salen) < 0)
		return lg_err_sys(err, "bind %s", where);
	if (listen(fd, 64) < 0)
		return lg_err_sys(err, "listen on %s", where);
	if (getsockname(fd, (struct sockaddr *)&got, &gotlen) < 0)
		return lg_err_sys(err, "getsockname");
	*port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
					       : ((struct sockaddr_in6 *)&got)->sin6_port);
	return steal_fd(&fd);
}

static void http_free(struct mcp_http *h)
{
	if (h->origins != NULL)
		for (char **o = h->origins; *o != NULL; o++)
			free(*o);
	free(h->origins);
	if (h->token != NULL)
		explicit_bzero(h->token, strlen(h->token));
	free(h->token);
	free(h->service_sock);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	free(h);
}

int mcp_http_start(struct mcp_server *srv, const struct mcp_http_opts *o, struct mcp_http **out,
		   struct lg_err **err)
{
	struct sockaddr_storage sa;
	socklen_t salen = 0;
	struct mcp_http *h;
	unsigned port = 0;
	int fd;

	*out = NULL;
	if ((srv == NULL) == (o->service_sock == NULL))
		return lg_err_set(err, EINVAL, "mcp http: a server or a service socket, not both");
	if (parse_bind(o->bind, &sa, &salen, err) < 0)
		return lg_err_wrap(err, "--http");
	/*
	 * Off loopback anyone on the network can reach the endpoint, and the
	 * tools run commands: never without a secret.
	 */
	if (!is_loopback(&sa) && (o->token == NULL || *o->token == '\0'))
		return lg_err_set(err, EPERM,
				  "refusing to serve MCP on %s without a bearer token: a "
				  "non-loopback address needs --token-file",
				  o->bind);
	fd = listen_on(o->bind, &sa, salen, &port, err);
	if (fd < 0)
		return fd;

	h = xzalloc(sizeof(*h));
	h->srv = srv;
	h->service_sock = o->service_sock != NULL ? xstrdup(o->service_sock) : NULL;
	h->port = port;
	h->token = o->token != NULL && *o->token != '\0' ? xstrdup(o->token) : NULL;
	if (o->allowed_origins != NULL) {
		size_t n = 0;
		while (o->allowed_origins[n] != NULL)
			n++;
		h->origins = xzalloc((n + 1) * sizeof(*h->origins));
		for (size_t i = 0; i < n; i++)
			h->origins[i] = xstrdup(o->allowed_origins[i]);
	}
	h->max_body = o->max_body ? o->max_body : MCP_MAX_MESSAGE;
	h->idle_ms = (uint64_t)(o->session_idle_s ? o->session_idle_s : DEFAULT_IDLE_S) * 1000u;
	h->max_sessions = o->max_sessions ? o->max_sessions : MCP_HTTP_DEFAULT_MAX_SESSIONS;
	pthread_mutex_init(&h->lock, NULL);
	lg_cond_init_mono(&h->cond);

	h->d = MHD_start_daemon(MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD |
				    MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
				0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
				h, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED,
				on_completed, h, MHD_OPTION_CONNECTION_LIMIT, CONN_LIMIT,
				MHD_OPTION_CONNECTION_TIMEOUT, CONN_TIMEOUT_S, MHD_OPTION_END);
	if (h->d == NULL) {
		/* Whether a failed start closed the socket it was given depends on where it failed.
		 */
		if (fcntl(fd, F_GETFD) >= 0)
			close(fd);
		http_free(h);
		return lg_err_set(err, EIO, "cannot start the HTTP server on %s (libmicrohttpd)",
				  o->bind);
	}
	if (pthread_create(&h->reaper, NULL, reaper_main, h) != 0) {
		MHD_stop_daemon(h->d);
		http_free(h);
		return lg_err_set(err, EAGAIN, "cannot start the session reaper thread");
	}
	h->reaper_started = true;
	lg_debug("mcp http: serving on %s port %u, endpoint " MCP_PATH "%s", o->bind, port,
		 h->token != NULL ? " (bearer token required)" : "");
	*out = h;
	return 0;
}

unsigned mcp_http_port(const struct mcp_http *h)
{
	return h->port;
}

void mcp_http_stop(struct mcp_http *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	h->stopping = true;
	for (struct hsess *hs = h->sessions; hs != NULL; hs = hs->next)
		for (struct hstream *st = hs->streams; st != NULL; st = st->next)
			pthread_cond_broadcast(&st->cond);
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	if (h->reaper_started)
		pthread_join(h->reaper, NULL);
	/* Joins every connection thread: the streams have ended, so none blocks for long. */
	MHD_stop_daemon(h->d);

	for (;;) {
		struct hsess *hs;

		pthread_mutex_lock(&h->lock);
		hs = h->sessions;
		if (hs != NULL)
			hs->refs++;
		pthread_mutex_unlock(&h->lock);
		if (hs == NULL)
			break;
		session_close(hs, "the server is stopping");
		session_put(hs);
	}
	http_free(h);
}
