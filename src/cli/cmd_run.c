/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard run`: one command in one throw-away micro-VM. */
#include "cli/commands.h"
#include "cli/run_opts.h"
#include "cli/signals.h"

#include "common/log.h"
#include "common/paths.h"
#include "common/util.h"
#include "host/sandbox.h"
#include "approval/tty.h"
#include "policy/policy.h"

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

/* The cliff for `run`: the command is classified as the MCP tool sandbox_run would be. */
static int cliff(const struct run_opts *o, struct lg_err **err)
{
	struct policy *p = NULL;
	struct policy_decision d;
	json_t *args, *argv_json = json_array();
	bool approved = false;
	int r;

	if (o->policy != NULL) {
		if (policy_load_file(o->policy, &p, err) < 0)
			return -1;
	} else {
		p = policy_default();
	}
	for (size_t i = 0; o->command[i] != NULL; i++)
		json_array_append_new(argv_json, json_string(o->command[i]));
	args = json_pack("{s:o, s:i, s:I}", "argv", argv_json, "cpus", (int)o->cpus, "memory",
			 (json_int_t)o->memory_mib);
	if (o->workdir != NULL)
		json_object_set_new(args, "cwd", json_string(o->workdir));
	if (o->image != NULL)
		json_object_set_new(args, "image", json_string(o->image));
	policy_classify(p, "sandbox_run", args, NULL, &d);
	if (d.verdict == POLICY_GREEN) {
		r = 0;
		goto out;
	}
	if (!o->approve_tty) {
		r = lg_err_set(
		    err, 0,
		    "the policy needs a human's approval for this command (risk %s, rule "
		    "%s: %s); rerun with --approve tty to be asked",
		    policy_risk_name(d.risk), d.rule, d.reason);
		goto out;
	}
	{
		char *argv_text = json_dumps(argv_json, JSON_COMPACT);
		json_t *card =
		    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "tool", "sandbox_run", "summary",
			      argv_text ? argv_text : "?", "where", "a new sandbox", "risk",
			      policy_risk_name(d.risk), "rule", d.rule, "reason", d.reason);
		free(argv_text);
		/* A human at a terminal, or no one: piped stdin is not a person's answer. */
		if (!isatty(STDIN_FILENO))
			r = lg_err_set(err, 0, "--approve tty needs stdin to be a terminal");
		else
			r = approval_tty_prompt_fds(card, o->approval_timeout_s, STDIN_FILENO,
						    STDERR_FILENO, lg_signals_fd(), &approved, err);
		json_decref(card);
	}
	if (r >= 0 && !approved)
		r = lg_err_set(err, 0, "%s",
			       r == 1 ? "not approved in time; the command did not run"
				      : "denied; the command did not run");
	else if (r >= 0)
		r = 0;
out:
	policy_decision_clear(&d);
	json_decref(args);
	policy_free(p);
	return r;
}

int cmd_run(int argc, char **argv)
{
	struct lg_sandbox_opts so = {0};
	struct lg_sandbox *sb = NULL;
	struct lg_exec_opts eo = {.cancel_fd = -1};
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

	if (cliff(&o, &err) < 0)
		goto out_err;

	so.image = o.image;
	so.backend = o.backend;
	so.accel = o.accel;
	so.cpus = o.cpus;
	so.memory_mib = o.memory_mib;
	so.jail = &o.jail;
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
