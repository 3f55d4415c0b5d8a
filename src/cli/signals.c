/* SPDX-License-Identifier: Apache-2.0 */
#include "cli/signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

/*
 * `caught` is written by the handler (on whichever thread took the signal)
 * and read by any thread: volatile sig_atomic_t is safe only for the
 * handler and the thread it interrupted, so a C11 atomic, which is also
 * async-signal-safe when lock-free (checked below).
 */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal flag needs a lock-free atomic int");
static int sig_pipe[2] = {-1, -1};
static atomic_int caught;

static void on_signal(int sig)
{
	int saved = errno;
	char c = (char)sig;
	int none = 0;

	atomic_compare_exchange_strong(&caught, &none, sig);
	/* Non-blocking: a full pipe already says "stop". */
	if (write(sig_pipe[1], &c, 1) < 0) {
	}
	errno = saved;
}

int lg_signals_install(struct lg_err **err)
{
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
	struct sigaction sa;

	if (sig_pipe[0] < 0 && pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return lg_err_sys(err, "pipe");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL) < 0)
			return lg_err_sys(err, "sigaction");
	/* A closed stdout must show up as EPIPE on write, not kill us mid-teardown. */
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

int lg_signals_fd(void)
{
	return sig_pipe[0];
}

int lg_signals_caught(void)
{
	return atomic_load(&caught);
}
