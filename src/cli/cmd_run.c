/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard run`: one command in one throw-away micro-VM. */
#include "cli/commands.h"
#include "cli/run_opts.h"
#include "cli/signals.h"

#include "common/log.h"
#include "common/paths.h"
#include "common/util.h"
#include "host/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_TIMEOUT  124
#define EXIT_INTERNAL 125
#define EXIT_USAGE    2

static int write_output(void *ctx, enum lg_stream stream, const uint8_t *p, size_t n)
{
	ssize_t r = lg_write_all(stream == LG_STREAM_STDOUT ? STDOUT_FILENO : STDERR_FILENO, p, n);
	return r < 0 ? (int)r : 0;
}

/*
 * The accelerator note (e.g. "PVM: using TCG") is said once per host, not
 * on every run: a marker in the data directory remembers it was shown.
 * `luminaguard doctor` always says it.
 */
static void note_once(const char *note)
{
	cleanup_free char *home = lg_home_dir();
	cleanup_free char *marker = xasprintf("%s/.accel-note-shown", home);
	int fd;

	if (access(marker, F_OK) == 0)
		return;
	lg_log(LG_LOG_ERROR, "note: %s (said once; `luminaguard doctor` repeats it)", note);
	if (lg_mkdir_p(home, 0700) == 0) {
		fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
	}
}

int cmd_run(int argc, char **argv)
{
	struct lg_sandbox_opts so = {0};
	struct lg_sandbox *sb = NULL;
	struct lg_exec_opts eo = {0};
	struct lg_exec_result res;
	struct lg_err *err = NULL;
	struct run_opts o;
	int status;
	int r;

	if (run_opts_parse(argc, argv, &o, &err) < 0) {
		lg_err_report("luminaguard", &err);
		return EXIT_USAGE;
	}
	if (o.help) {
		fputs(run_usage, stdout);
		return 0;
	}

	r = lg_signals_install(&err);
	if (r < 0) {
		lg_err_report("luminaguard", &err);
		return EXIT_INTERNAL;
	}

	so.image = o.image;
	so.backend = o.backend;
	so.accel = o.accel;
	so.cpus = o.cpus;
	so.memory_mib = o.memory_mib;
	so.cancel_fd = lg_signals_fd();
	so.console_fd = o.console ? STDERR_FILENO : -1;
	so.on_note = note_once;
	r = lg_sandbox_create(&so, &sb, &err);
	if (r < 0)
		goto out_err;

	eo.argv = o.command;
	eo.env = o.n_env ? o.env : NULL;
	eo.cwd = o.workdir;
	eo.timeout_ms = o.timeout_s * 1000u;
	eo.stdin_fd = o.no_stdin ? -1 : STDIN_FILENO;
	eo.on_output = write_output;
	r = lg_agent_exec(sb->agent, &eo, &res, &err);
	if (r < 0)
		goto out_err;

	lg_sandbox_destroy(sb);
	if (res.timed_out) {
		lg_error("the command timed out after %u s and was killed", o.timeout_s);
		return EXIT_TIMEOUT;
	}
	if (res.signal != 0)
		return 128 + res.signal;
	return res.exit_code;

out_err:
	lg_sandbox_destroy(sb);
	status = lg_signals_caught();
	if (status != 0) {
		lg_err_free(&err);
		lg_error("interrupted by signal %d; the VM was destroyed", status);
		return 128 + status;
	}
	lg_err_report("luminaguard", &err);
	return EXIT_INTERNAL;
}
