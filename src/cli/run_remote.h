/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `luminaguard run` through a running service (`luminaguard serve`): the
 * fast path, a pooled sandbox in milliseconds instead of a cold boot.
 */
#ifndef LG_CLI_RUN_REMOTE_H
#define LG_CLI_RUN_REMOTE_H

#include "cli/run_opts.h"
#include "common/err.h"

/* Piped stdin the service path forwards; more goes the standalone way. */
#define LG_REMOTE_MAX_STDIN (512u << 10)
/* How long piped stdin may take to end before the standalone path takes it. */
#define LG_REMOTE_STDIN_WAIT_MS 2000

/*
 * Runs o's command in a sandbox of the service on lg_serve_socket_path():
 * creates it, runs the command with its output streamed to our stdout and
 * stderr, and destroys it, also on SIGINT, SIGTERM or SIGHUP.
 *
 * Returns 1 when the command ran (or was interrupted) through the service,
 * with *exit_code what run exits with: the command's status, 128+N for
 * signal N, 124 for --timeout, 128+N when we caught signal N.  Returns 0,
 * having consumed nothing of stdin that the standalone path will not see,
 * when the standalone path must run it: --standalone; no service (no
 * socket, or a stale one nobody listens on); an option the API cannot
 * express (--net, --approve tty, --console, --policy, --backend, --accel,
 * --no-jail, --seccomp, text that is not UTF-8); or piped stdin over
 * LG_REMOTE_MAX_STDIN or still open after LG_REMOTE_STDIN_WAIT_MS.
 * Returns <0 with a one-line *err when the service failed (run exits 125).
 *
 * Call it after the local approval cliff; it installs the signal pipe
 * (cli/signals.h) itself.
 */
int run_via_service(const struct run_opts *o, int *exit_code, struct lg_err **err);

#endif
