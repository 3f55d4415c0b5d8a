/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON HTTP API of `luminaguard serve` (docs/api.md) on
 * libmicrohttpd: always on an owner-only unix socket, and optionally on
 * TCP.  Every sandbox operation goes through the approval gate as the MCP
 * tool of the same meaning, with who = "api"; exec output streams as
 * NDJSON.
 *
 * Threads: one per connection (MHD_USE_THREAD_PER_CONNECTION), so a
 * handler may block on a boot, an approval or a command; a streamed exec
 * runs on a thread of its own that fills a bounded buffer the
 * connection's content reader drains.
 */
#ifndef LG_SERVE_API_H
#define LG_SERVE_API_H

#include "common/err.h"

#include <stddef.h>

struct lg_service;
struct lg_gate;
struct approval_broker;
struct lg_api;

/* Bodies: a file PUT up to 8 MiB, anything else up to 1 MiB (413 beyond). */
#define LG_API_MAX_BODY (1u << 20)
#define LG_API_MAX_FILE (8u << 20)
/*
 * Request bodies held at once, over every connection (503 beyond): each
 * connection's own limit times the connection limit would be gigabytes.
 */
#define LG_API_MAX_BODIES (64u << 20)
/* ?wait=1 keeps at most this much of each output stream ("truncated": true). */
#define LG_API_MAX_CAPTURE (1u << 20)
/* Bytes of NDJSON an exec may get ahead of its client before its output blocks. */
#define LG_API_STREAM_BUFFER (256u << 10)

struct lg_api_opts {
	struct lg_service *service;	/* borrowed, required */
	const struct lg_gate *gate;	/* borrowed, required */
	struct approval_broker *broker; /* borrowed, required: /v1/approvals */
};

int lg_api_new(const struct lg_api_opts *o, struct lg_api **out, struct lg_err **err);

/*
 * Serves on a unix socket at path: created 0600 (under a umask, so never
 * looser for an instant) in its directory, which must be ours and is made
 * 0700.  Whatever is at path is removed first, so the caller must hold
 * the lock that makes it the only service of this data directory.  Each
 * request's peer (SO_PEERCRED) must be our uid or root.
 */
int lg_api_listen_unix(struct lg_api *a, const char *path, struct lg_err **err);

/*
 * Serves on TCP at bind ("HOST:PORT", "[V6]:PORT", "localhost:PORT"; port
 * 0 picks one).  token (copied) NULL or "": no token, refused (EPERM) off
 * loopback.  *port gets the port bound.
 */
int lg_api_listen_tcp(struct lg_api *a, const char *bind, const char *token, unsigned *port,
		      struct lg_err **err);

/*
 * Stops serving: new requests get 503 (boots in progress finish), pending
 * approvals are denied, running commands are cancelled (their VMs killed
 * if they do not end), and every listener is closed; returns once no
 * request of ours runs.  The unix socket file is removed.
 */
void lg_api_stop(struct lg_api *a);
/* Stops if needed, then frees.  NULL ok. */
void lg_api_free(struct lg_api *a);

#endif
