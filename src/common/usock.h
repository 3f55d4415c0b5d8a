/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owner-only unix sockets: the approval control socket, the service's API
 * socket and its MCP socket.  Who may connect is the whole point, so it is
 * checked three times over: the directory is 0700, the socket is 0600 from
 * the moment it exists, and each connection's peer uid (SO_PEERCRED, which
 * the kernel fills in at connect time and the client cannot forge) must be
 * ours or root's.
 */
#ifndef LG_COMMON_USOCK_H
#define LG_COMMON_USOCK_H

#include "common/err.h"

#include <stdbool.h>
#include <sys/types.h>

/*
 * Binds and listens on path (its directory is made 0700 if missing).  A
 * stale socket nobody answers on is removed; a live one is -EADDRINUSE
 * ("another luminaguard server is using PATH").  Returns the listening fd
 * (close-on-exec, non-blocking) or <0 with *err; *dev and *ino (may be NULL)
 * identify the socket file, so that only that file is removed at the end.
 */
int lg_usock_listen(const char *path, dev_t *dev, ino_t *ino, struct lg_err **err);

/* Removes path if it is still the socket (dev, ino) we bound. */
void lg_usock_unlink(const char *path, dev_t dev, ino_t ino);

/*
 * Whether the peer of a connected unix socket is our uid or root (its uid
 * in *uid, which may be NULL).  Root
 * may because root can anyway (it can ptrace us); any other user who got a
 * connection through (a too-open directory, a socket passed on) must not.
 */
bool lg_usock_peer_ok(int fd);
bool lg_usock_peer_ok_uid(int fd, uid_t *uid);

/*
 * Connects to path.  Returns the fd, or -ENOENT (no socket) / -ECONNREFUSED
 * (a stale one: nobody listens) / another -errno.
 */
int lg_usock_connect(const char *path);

#endif
