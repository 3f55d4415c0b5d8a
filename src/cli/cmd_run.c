/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard run`: one command in one throw-away micro-VM. */
#include "cli/commands.h"
#include "cli/run_opts.h"
#include "cli/run_remote.h"
#include "cli/signals.h"

#include "common/encoding.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/util.h"
#include "host/sandbox.h"
#include "approval/gate.h"
#include "approval/gate_net.h"
#include "approval/tty.h"
#include "audit/audit.h"
#include "net/egress.h"
#include "policy/policy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

/*
 * A command-line string as JSON.  Not every argv byte string is UTF-8, and
 * json_string() would return NULL for it, which would silently drop the
 * argument from what the policy and the card see: invalid bytes become
 * U+FFFD instead, so the argument is still there, visibly odd.
 */
static json_t *card_string(const char *s)
{
	size_t n;
	cleanup_free char *clean = lg_utf8_sanitize((const uint8_t *)s, strlen(s), &n);

	return json_stringn(clean, n);
}

/* ---- the approval cliff: lg_gate, with the terminal as its asker ---- */

/* What the cliff holds from the request to the outcome. */
struct run_cliff {
	struct policy *policy;
	struct audit_log *audit;
	struct approval_broker *broker;
	struct lg_gate g;
	struct lg_gate_req req;
	json_t *args;
	bool entered; /* the command may run: its outcome is still to be audited */
};

/*
 * The terminal asker, for the command and for its network (--net, through
 * approval/gate_net.h: tool "network").  It asks inline, within the
 * broker's timeout: `run` has no control socket, so no other channel could
 * answer meanwhile.  With no one to ask (--approve none, or no terminal)
 * it says no at once, with what to do instead, rather than letting the
 * request time out.  One prompt at a time: the guest may open many
 * connections at once, and two cards interleaved on one terminal could
 * get one answer meant for the other.
 */
static pthread_mutex_t tty_lock = PTHREAD_MUTEX_INITIALIZER;

static void *tty_ask(void *ctx, struct approval *a, const json_t *broker_card)
{
	const struct run_opts *o = ctx;
	json_t *card = json_deep_copy(broker_card);
	struct lg_err *err = NULL;
	bool approved = false;
	const char *tool = json_string_value(json_object_get(card, "tool"));
	bool net = tool != NULL && strcmp(tool, "network") == 0;
	int in_fd = STDIN_FILENO, out_fd = STDERR_FILENO, tty = -1;
	int r;

	if (!o->approve_tty) {
		cleanup_free char *why = xasprintf(
		    "the policy needs a human's approval for this command (risk %s, rule %s: %s); "
		    "rerun with --approve tty to be asked",
		    json_string_value(json_object_get(card, "risk")),
		    json_string_value(json_object_get(card, "rule")),
		    json_string_value(json_object_get(card, "reason")));
		approval_decide_ref(a, false, APPROVAL_CH_TTY, "--approve none", why);
		json_decref(card);
		return NULL;
	}
	/*
	 * A human at a terminal, or no one: piped stdin is not a person's
	 * answer to run the command.  A network question comes while the
	 * command runs, and is asked on the controlling terminal then
	 * (O_NOCTTY: asking must never acquire one).
	 */
	if (!isatty(STDIN_FILENO) && net)
		tty = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (!isatty(STDIN_FILENO) && tty < 0) {
		approval_decide_ref(a, false, APPROVAL_CH_TTY, "--approve tty",
				    net ? "--approve tty: no terminal to ask on"
					: "--approve tty needs stdin to be a terminal");
		json_decref(card);
		return NULL;
	}
	if (tty >= 0)
		in_fd = out_fd = tty;
	/* No control socket here: `approvals show ID` and other channels do not apply. */
	json_object_del(card, "approval");
	json_object_del(card, "channels");
	/* Not an argument the policy sees, but the human should know. */
	if (!net)
		json_object_set_new(card, "stdin",
				    json_string(o->no_stdin ? "none (--no-stdin)"
							    : "what you type on this terminal"));
	pthread_mutex_lock(&tty_lock);
	r = approval_tty_prompt_fds(card, o->approval_timeout_s, in_fd, out_fd, lg_signals_fd(),
				    &approved, &err);
	pthread_mutex_unlock(&tty_lock);
	if (tty >= 0)
		close(tty);
	json_decref(card);
	if (r == -ECANCELED)
		approval_cancel(a); /* interrupted: run_main reports the signal */
	else if (r < 0)
		approval_decide_ref(a, false, APPROVAL_CH_TTY, "the terminal", err->msg);
	else if (r == 0)
		approval_decide_ref(a, approved, APPROVAL_CH_TTY, "the terminal", NULL);
	/* r == 1: no answer in time; the broker's own timeout says so. */
	lg_err_free(&err);
	return NULL;
}

static const struct lg_asker_ops tty_asker_ops = {.ask = tty_ask};

static void cliff_free(struct run_cliff *c)
{
	approval_broker_free(c->broker);
	audit_close(c->audit);
	policy_free(c->policy);
	json_decref(c->args);
	memset(c, 0, sizeof(*c));
}

/*
 * The cliff for `run`: the command is classified as the MCP tool
 * sandbox_run would be, with the same arguments (env and timeout too: an
 * LD_PRELOAD in --env or a workdir changes what runs), and every request,
 * decision and outcome goes to the audit log.  On success the caller
 * audits the outcome with cliff_done().
 */
static int cliff(const struct run_opts *o, struct run_cliff *c, struct lg_err **err)
{
	cleanup_free char *default_audit = NULL;
	json_t *env, *argv_json;
	const char *audit_path = o->audit_log;
	struct lg_asker asker = {.ops = &tty_asker_ops, .ctx = (void *)o};
	char *denial = NULL;

	memset(c, 0, sizeof(*c));
	if (o->policy != NULL) {
		if (policy_load_file(o->policy, &c->policy, err) < 0)
			goto fail;
	} else {
		c->policy = policy_default();
	}
	if (audit_path == NULL) {
		cleanup_free char *home = lg_home_dir();
		if (lg_mkdir_p(home, 0700) < 0) {
			lg_err_sys(err, "create `%s`", home);
			goto fail;
		}
		audit_path = default_audit = xasprintf("%s/audit.jsonl", home);
	}
	if (audit_open(audit_path, &c->audit, err) < 0)
		goto fail;
	c->broker = approval_broker_new(o->approval_timeout_s, c->audit);
	/* `run` serves no control socket and no client: the terminal is the one channel. */
	approval_broker_set_channels(
	    c->broker, (const unsigned[APPROVAL_RISKS]){APPROVAL_CH_TTY, APPROVAL_CH_TTY,
							APPROVAL_CH_TTY, APPROVAL_CH_TTY});

	argv_json = json_array();
	for (size_t i = 0; o->command[i] != NULL; i++)
		json_array_append_new(argv_json, card_string(o->command[i]));
	c->args = json_pack("{s:o, s:i, s:I}", "argv", argv_json, "cpus", (int)o->cpus, "memory",
			    (json_int_t)o->memory_mib);
	if (o->workdir != NULL)
		json_object_set_new(c->args, "cwd", json_string(o->workdir));
	if (o->image != NULL)
		json_object_set_new(c->args, "image", json_string(o->image));
	if (o->disk_mib != 0)
		json_object_set_new(c->args, "disk", json_integer((json_int_t)o->disk_mib));
	if (o->user != NULL)
		json_object_set_new(c->args, "user", json_string(o->user));
	env = json_object();
	for (size_t i = 0; i < o->n_env; i++) {
		const char *eq = strchr(o->env[i], '=');
		size_t klen;
		cleanup_free char *k = eq != NULL
					   ? xasprintf("%.*s", (int)(eq - o->env[i]), o->env[i])
					   : xstrdup(o->env[i]);
		cleanup_free char *kc = lg_utf8_sanitize((const uint8_t *)k, strlen(k), &klen);
		json_object_set_new(env, kc, card_string(eq != NULL ? eq + 1 : ""));
	}
	if (o->n_env > 0)
		json_object_set(c->args, "env", env);
	json_decref(env);
	if (o->timeout_s != 0)
		json_object_set_new(c->args, "timeout", json_integer(o->timeout_s));

	c->g = (struct lg_gate){.policy = c->policy, .audit = c->audit, .broker = c->broker};
	c->req = (struct lg_gate_req){
	    .who = "cli", .tool = "sandbox_run", .args = c->args, .askers = &asker, .n_askers = 1};
	if (!lg_gate_enter(&c->g, &c->req, &denial)) {
		lg_err_msg(err, EPERM, "%s", denial);
		free(denial);
		goto fail;
	}
	c->req.askers = NULL;
	c->req.n_askers = 0;
	c->entered = true;
	return 0;
fail:
	cliff_free(c);
	return -1;
}

/*
 * Audits what became of a command the cliff let through (once; a no-op
 * after a refusal), then closes the log.  `fields` (stolen, may be NULL).
 */
static void cliff_done(struct run_cliff *c, const char *outcome, json_t *fields)
{
	if (c->entered)
		lg_gate_outcome(&c->g, &c->req, outcome, fields);
	else
		json_decref(fields);
	cliff_free(c);
}

int cmd_run(int argc, char **argv)
{
	struct lg_sandbox_opts so = {0};
	struct lg_sandbox *sb = NULL;
	struct lg_exec_opts eo = {.cancel_fd = -1};
	struct lg_exec_result res;
	struct lg_err *err = NULL;
	struct lg_sandbox_net net;
	struct lg_gate_net *gn = NULL;
	struct run_cliff rc = {0};
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

	if (cliff(&o, &rc, &err) < 0)
		goto out_err;

	/*
	 * The fast path: a running service (`luminaguard serve`) hands out a
	 * warm sandbox.  Its own approval step sees the command too; what the
	 * API cannot express runs here as before (run_remote.h).
	 */
	r = run_via_service(&o, &status, &err);
	if (r < 0)
		goto out_err;
	if (r == 1) {
		cliff_done(&rc, "ok",
			   json_pack("{s:i, s:s}", "exit_code", status, "via", "service"));
		return status;
	}

	so.image = o.image;
	so.backend = o.backend;
	so.accel = o.accel;
	so.cpus = o.cpus;
	so.memory_mib = o.memory_mib;
	so.disk_mib = o.disk_mib;
	so.jail = &o.jail;
	so.cancel_fd = lg_signals_fd();
	so.console_fd = o.console ? STDERR_FILENO : -1;
	so.on_note = note_once;
	if (o.net_allow != NULL) {
		/*
		 * The sandbox owns its egress.  A destination off the list is
		 * a network approval through the cliff's gate, asked on the
		 * terminal (--approve none: refused without asking), and every
		 * connection is logged and audited (gate_net.h).
		 */
		struct lg_asker asker = {.ops = &tty_asker_ops, .ctx = &o};
		cleanup_free char *id = xasprintf("run-%d", (int)getpid());

		gn = lg_gate_net_new(&(struct lg_gate_net_opts){
		    .gate = &rc.g, .who = "cli", .askers = &asker, .n_askers = 1});
		lg_gate_net_set_sandbox(gn, id);
		net = (struct lg_sandbox_net){.allow = o.net_allow,
					      .ask = o.approve_tty ? lg_gate_net_ask : NULL,
					      .log = lg_gate_net_log,
					      .ctx = gn};
		so.net = &net;
	}
	r = lg_sandbox_create(&so, &sb, &err);
	if (r < 0)
		goto out_err;

	eo.argv = o.command;
	eo.env = o.n_env ? o.env : NULL;
	eo.cwd = o.workdir;
	eo.user = o.user;
	eo.timeout_ms = o.timeout_s * 1000u;
	eo.stdin_fd = o.no_stdin ? -1 : STDIN_FILENO;
	/*
	 * Network approvals are answered on the terminal while the command
	 * runs; if the command's stdin were that terminal too, its reader
	 * would swallow the answers (or the prompt the command's input).
	 */
	if (so.net != NULL && o.approve_tty && eo.stdin_fd >= 0 && isatty(STDIN_FILENO)) {
		lg_info("the terminal answers network approvals; the command's stdin is empty");
		eo.stdin_fd = -1;
	}
	eo.on_output = write_output;
	r = lg_sandbox_exec(sb, &eo, &res, &err);
	if (r < 0)
		goto out_err;

	/* Pending network questions cancelled first: the proxy's threads are joined. */
	lg_gate_net_close(gn);
	lg_sandbox_destroy(sb);
	lg_gate_net_free(gn);
	cliff_done(&rc, "ok",
		   json_pack("{s:i, s:i, s:b}", "exit_code", res.exit_code, "signal", res.signal,
			     "timed_out", res.timed_out));
	if (res.timed_out) {
		lg_error("the command timed out after %u s and was killed", o.timeout_s);
		return EXIT_TIMEOUT;
	}
	if (res.signal != 0)
		return 128 + res.signal;
	return res.exit_code;

out_err:
	lg_gate_net_close(gn);
	lg_sandbox_destroy(sb);
	lg_gate_net_free(gn);
	status = lg_signals_caught();
	cliff_done(&rc, "error",
		   json_pack("{s:s}", "error",
			     status != 0   ? "interrupted by a signal"
			     : err != NULL ? err->msg
					   : "failed"));
	if (status != 0) {
		lg_err_free(&err);
		lg_error("interrupted by signal %d; the VM was destroyed", status);
		return 128 + status;
	}
	lg_err_report("luminaguard", &err);
	return EXIT_INTERNAL;
}
