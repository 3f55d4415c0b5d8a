/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small HTTP/1.1 client for the API of `luminaguard serve` on its unix
 * socket (docs/api.md): one request per connection (Connection: close),
 * request bodies with a Content-Length, responses framed by Content-Length,
 * chunked transfer coding or the end of the connection, JSON bodies and
 * NDJSON streams (exec output).
 *
 * The service runs as the same user, but its bytes are parsed as if they
 * were hostile: the head, the framing, each stream line and each body are
 * bounded and strictly checked, and the parsers below (pure functions of
 * the bytes, no I/O) are fuzzed by fuzz/fuzz_client.c.
 */
#ifndef LG_CLI_CLIENT_H
#define LG_CLI_CLIENT_H

#include "common/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LG_CLIENT_MAX_HEAD	 (16u << 10) /* status line and header fields */
#define LG_CLIENT_MAX_FIELDS	 64u
#define LG_CLIENT_MAX_BODY	 (16u << 20) /* a body read whole (JSON, a file) */
#define LG_CLIENT_MAX_LINE	 (8u << 20)  /* one NDJSON line of a stream */
#define LG_CLIENT_MAX_CHUNK_LINE 1024u	     /* a chunk-size line with its extensions */
#define LG_CLIENT_MAX_TRAILER	 4096u	     /* all trailer fields together */
#define LG_CLIENT_CONNECT_MS	 2000

/* ---- parsers (no I/O) ---- */

struct lg_client_head {
	int status; /* 200..599: a 1xx is refused (we never send Expect) */
	bool chunked;
	bool has_length;
	uint64_t content_length;
	bool ndjson;	     /* Content-Type: application/x-ndjson */
	char request_id[65]; /* X-Request-Id when it is [A-Za-z0-9._-]{1,64}, else "" */
};

/*
 * Parses a response head at the start of p[0..n).  Returns its length
 * (through the blank line) when it is complete, 0 when more bytes are
 * needed, or -EBADMSG with a one-line *err when it is malformed or longer
 * than LG_CLIENT_MAX_HEAD.  Refused: anything but HTTP/1.0 or 1.1, a
 * status outside 200..599, bare LF line ends, folded or malformed fields,
 * control characters, more than LG_CLIENT_MAX_FIELDS fields, a transfer
 * coding other than chunked, a bad or conflicting Content-Length, and
 * Content-Length together with Transfer-Encoding.
 */
ssize_t lg_client_parse_head(const char *p, size_t n, struct lg_client_head *h,
			     struct lg_err **err);

/* Where decoded body bytes go; <0 (with *err) stops the decoder. */
typedef int (*lg_client_sink)(void *ctx, const uint8_t *p, size_t n, struct lg_err **err);

/* A body's framing, decoded incrementally. */
struct lg_client_body {
	int mode;  /* length, chunked, to EOF, none */
	int state; /* of the chunked decoder */
	uint64_t left;
	unsigned digits;   /* hex digits of the current chunk size */
	unsigned line;	   /* bytes of the current chunk-size line */
	unsigned trailers; /* bytes of trailer fields */
	bool done;
};

/* Sets b up for the body that follows head h (no body for 204 and 304). */
void lg_client_body_init(struct lg_client_body *b, const struct lg_client_head *h);
/*
 * Decodes in[0..n), handing the body's bytes to sink.  Returns the bytes
 * of input used (fewer than n only once the body is complete: the rest is
 * not ours), or <0 with *err: -EBADMSG for bad framing, else the sink's.
 */
ssize_t lg_client_body_feed(struct lg_client_body *b, const uint8_t *in, size_t n,
			    lg_client_sink sink, void *ctx, struct lg_err **err);
/* The connection ended: 0 if the body is complete, else -EBADMSG (cut short). */
int lg_client_body_eof(const struct lg_client_body *b, struct lg_err **err);

/* An NDJSON stream cut into lines, each a JSON object. */
typedef int (*lg_client_line_fn)(void *ctx, json_t *obj, struct lg_err **err);
struct lg_client_lines {
	char *buf; /* a line not yet ended */
	size_t len, cap;
	lg_client_line_fn on_line; /* gets a borrowed object */
	void *ctx;
};

/*
 * A sink (ctx: struct lg_client_lines): splits bytes at '\n' and hands each
 * line, parsed, to on_line.  Blank lines are skipped; a line over
 * LG_CLIENT_MAX_LINE, or one that is not a JSON object, is -EBADMSG.
 */
int lg_client_lines_feed(void *lines, const uint8_t *p, size_t n, struct lg_err **err);
/* The stream ended: -EBADMSG if a line was left unfinished. */
int lg_client_lines_end(struct lg_client_lines *l, struct lg_err **err);
void lg_client_lines_clear(struct lg_client_lines *l);

/* A sandbox id as the API takes it in a path: [A-Za-z0-9._-]{1,64}. */
bool lg_client_id_ok(const char *s);

/* ---- one request ---- */

/*
 * Connects to the unix socket at path within timeout_ms.  -ENOENT: no
 * socket there; -ECONNREFUSED: nobody listens on it (a stale socket file);
 * other errors <0 with *err.  *fd is non-blocking and close-on-exec.
 */
int lg_client_connect(const char *path, int timeout_ms, int *fd, struct lg_err **err);

struct lg_client_req {
	const char *method; /* "GET", "POST", "DELETE", ... */
	const char *target; /* "/v1/sandboxes": bytes sent as they are, so callers build it */
	const char *body;   /* NULL: none */
	size_t body_len;
	const char *request_id; /* sent as X-Request-Id when non-NULL */
	int cancel_fd;		/* readable = give up (-EINTR); -1: none */
	/*
	 * > 0: once cancel_fd is readable, wait this much longer for the
	 * answer (then resp->interrupted) before giving up: a create that
	 * is cut off could leave a sandbox nobody knows the id of.
	 */
	int grace_ms;
	int timeout_ms; /* for the whole exchange; 0: none */
	/*
	 * With on_line, a 2xx application/x-ndjson body goes to it line by
	 * line; anything else is read whole (up to LG_CLIENT_MAX_BODY).
	 */
	lg_client_line_fn on_line;
	void *ctx;
};

struct lg_client_resp {
	int status;
	char request_id[65];
	char *body; /* read whole: NUL-terminated (NULs inside kept); NULL when streamed */
	size_t body_len;
	json_t *json;	  /* the body parsed as JSON, or NULL */
	bool interrupted; /* cancel_fd fired during the grace period */
};

/*
 * Sends rq on fd and reads the response; fd is closed either way.
 * Returns 0 with *resp filled (any status), or <0 with *err: -EINTR when
 * cancel_fd became readable, -ETIMEDOUT, -EBADMSG for a malformed reply,
 * -EPIPE/-ECONNRESET when the service went away, or on_line's error.
 */
int lg_client_do(int fd, const struct lg_client_req *rq, struct lg_client_resp *resp,
		 struct lg_err **err);
/* Connects (as lg_client_connect, its -ENOENT and -ECONNREFUSED included), then lg_client_do. */
int lg_client_call(const char *sock_path, const struct lg_client_req *rq,
		   struct lg_client_resp *resp, struct lg_err **err);
void lg_client_resp_clear(struct lg_client_resp *r);

/*
 * What the service said went wrong, for one line on a terminal: the
 * reply's "error" string, else "HTTP STATUS"; control characters become
 * '?' and it is cut at 512 bytes.  New string.
 */
char *lg_client_error_text(const struct lg_client_resp *r);

/* Text from the service made safe for a terminal (as above, cut at max bytes).  New string. */
char *lg_client_printable(const char *s, size_t max);

#endif
