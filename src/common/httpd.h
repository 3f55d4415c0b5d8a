/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small pieces the two HTTP servers (MCP's Streamable HTTP, mcp/http.c,
 * and the service's API, serve/api.c) share: the bearer-token check, the
 * hang-up test of a connection.
 */
#ifndef LG_COMMON_HTTPD_H
#define LG_COMMON_HTTPD_H

#include <stdbool.h>

struct MHD_Connection;

/*
 * Compares a secret with what a client sent in time that depends only on
 * the secret's length, so timing tells nothing about how much matched.
 */
bool lg_secret_equal(const char *given, const char *secret);

/*
 * Whether an Authorization header value carries the bearer token: "Bearer"
 * (any case), spaces, then the token.  Always true when token is NULL (no
 * token required).
 */
bool lg_http_bearer_ok(const char *authorization, const char *token);

/* The socket of an MHD connection, or -1. */
int lg_mhd_conn_fd(struct MHD_Connection *c);

/* Whether the peer of a connected socket hung up (without blocking). */
bool lg_fd_peer_gone(int fd);

#endif
