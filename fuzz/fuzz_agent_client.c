/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the host's agent client with a hostile guest: the input is what
 * the "guest" sends on the channel, then it hangs up.  The client runs a
 * handshake, an exec, file operations and ADOPT over it, then the same
 * bytes again as a restored guest's answers (attach, ADOPT); every outcome
 * must be a result or an error, never a crash or a hang.
 */
#include "host/agent_client.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int sink(void *ctx, enum lg_stream s, const uint8_t *p, size_t n)
{
	size_t *total = ctx;
	*total += n;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int once;
	struct lg_agent *a = NULL;
	struct lg_err *err = NULL;
	int sv[2];
	size_t total = 0;

	if (!once) {
		signal(SIGPIPE, SIG_IGN);
		once = 1;
	}
	/* The socket buffer must hold the whole input: the writer does not wait. */
	if (size > 100000)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	int big = 1 << 20;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	if (size > 0 && write(sv[1], data, size) != (ssize_t)size) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	close(sv[1]);

	if (lg_agent_connect(sv[0], -1, 1000, &a, &err) == 0) {
		/* More stdin than one window: the STDIN_ACK checks come into play. */
		static uint8_t in[LG_STDIN_WINDOW + 1000];
		char *argv[] = {(char *)"x", NULL};
		struct lg_exec_opts o = {.cancel_fd = -1,
					 .argv = argv,
					 .stdin_fd = -1,
					 .stdin_data = in,
					 .stdin_len = sizeof(in),
					 .on_output = sink,
					 .ctx = &total};
		struct lg_exec_result res;
		uint8_t *buf = NULL;
		size_t len = 0;
		struct lg_dirent *ents = NULL;
		size_t count = 0;
		struct lg_stat st;

		lg_agent_exec(a, &o, &res, &err);
		lg_err_free(&err);
		if (lg_agent_read_file(a, "/f", 1 << 20, &buf, &len, &err) == 0)
			free(buf);
		lg_err_free(&err);
		if (lg_agent_list_dir(a, "/", &ents, &count, &err) == 0)
			lg_dirents_free(ents, count);
		lg_err_free(&err);
		lg_agent_stat(a, "/", &st, &err);
		lg_err_free(&err);
		/* ADOPT's strict reply parser (protocol 4). */
		lg_agent_adopt(a, "fz", NULL, &err);
		lg_err_free(&err);
		lg_agent_ping(a, &err);
		lg_err_free(&err);
		lg_agent_free(a);
	}
	lg_err_free(&err);
	close(sv[0]);

	/* The same bytes as what a restored guest answers: attach (PING) and adopt. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	if (size > 0 && write(sv[1], data, size) != (ssize_t)size) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	close(sv[1]);
	if (lg_agent_attach(sv[0], -1, 1000, &a, &err) == 0) {
		uint32_t flags;
		lg_agent_adopt(a, NULL, &flags, &err);
		lg_err_free(&err);
		lg_agent_free(a);
	}
	lg_err_free(&err);
	close(sv[0]);
	return 0;
}
