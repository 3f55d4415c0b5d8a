/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `luminaguard approvals`: lists and decides the pending approval requests
 * of a running server, through its control socket (one JSON line each way,
 * see docs/approvals.md).  The server knows who we are from the socket
 * itself (SO_PEERCRED); nothing we send can claim to be someone else.
 */
#include "cli/commands.h"
#include "cli/commands_approvals.h"

#include "approval/approval.h"
#include "approval/tty.h"
#include "common/env.h"
#include "common/err.h"
#include "common/util.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PROG	      "luminaguard"
#define REPLY_MAX     (16u << 20) /* a list of 1024 cards with before/after */
#define TIMEOUT_MS    10000
#define SUMMARY_WIDTH 60

static const char approvals_usage[] =
    "Usage: luminaguard approvals COMMAND [OPTIONS]\n"
    "\n"
    "Lists and decides the actions of a running luminaguard server (luminaguard mcp)\n"
    "that wait for a human's approval.  A request not decided in time is denied.\n"
    "\n"
    "Commands:\n"
    "  list [--json]                 pending requests: id, age, risk, tool, summary\n"
    "  show ID [--json]              one request in full: its card and the whole action\n"
    "  approve ID [--reason TEXT]    allow the action of request ID\n"
    "  deny ID [--reason TEXT]       refuse it\n"
    "\n"
    "Options:\n"
    "  -s, --socket PATH   the server's control socket (default:\n"
    "                      $LUMINAGUARD_CONTROL_SOCKET, else LUMINAGUARD_HOME/control.sock)\n"
    "  -r, --reason TEXT   why (recorded in the audit log with your uid)\n"
    "      --json          list, show: print JSON (cards and actions in full)\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 done, 1 refused or no server, 2 usage error.\n";

enum { OPT_JSON = 256 };

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s approvals: ", PROG);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see: %s approvals --help)\n", PROG);
	return 2;
}

static char *socket_path(const char *opt)
{
	const char *env = lg_env()->control_socket;

	if (opt != NULL)
		return xstrdup(opt);
	if (env != NULL)
		return xstrdup(env);
	return approval_control_default_path();
}

static int wait_fd(int fd, short events, uint64_t deadline, const char *path, struct lg_err **err)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		uint64_t now = lg_now_ms();
		int r;

		if (now >= deadline)
			return lg_err_msg(err, ETIMEDOUT,
					  "no answer from the server on %s within %d s", path,
					  TIMEOUT_MS / 1000);
		r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return lg_err_sys(err, "poll");
		if (r > 0)
			return 0;
	}
}

static int connect_server(const char *path, struct lg_err **err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	cleanup_close int fd = -1;

	if (strlen(path) >= sizeof(addr.sun_path))
		return lg_err_msg(err, ENAMETOOLONG, "control socket path `%s` is too long", path);
	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return lg_err_sys(err, "socket");
	if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
		if (errno == ENOENT || errno == ECONNREFUSED)
			return lg_err_msg(err, errno,
					  "no luminaguard server is listening on %s (start one "
					  "with: luminaguard mcp)",
					  path);
		if (errno == EAGAIN)
			return lg_err_msg(err, EAGAIN, "the server on %s is too busy to answer",
					  path);
		return lg_err_sys(err, "connect to %s", path);
	}
	return steal_fd(&fd);
}

/* Sends one request line and reads one reply line: the whole protocol. */
static int request(const char *path, json_t *req, json_t **resp, struct lg_err **err)
{
	cleanup_free char *line = json_dumps(req, JSON_COMPACT);
	cleanup_free char *buf = NULL;
	cleanup_close int fd = -1;
	uint64_t deadline = lg_now_ms() + TIMEOUT_MS;
	size_t len = 0;
	size_t cap = 0;
	size_t off = 0;
	json_error_t jerr;
	int r;

	json_decref(req);
	if (line == NULL)
		return lg_err_msg(err, EINVAL,
				  "cannot encode the request (is the reason valid UTF-8?)");
	fd = connect_server(path, err);
	if (fd < 0)
		return fd;
	line = xrealloc(line, strlen(line) + 2);
	strcat(line, "\n");
	len = strlen(line);
	while (off < len) {
		ssize_t n;

		r = wait_fd(fd, POLLOUT, deadline, path, err);
		if (r < 0)
			return r;
		n = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return lg_err_sys(err, "send to %s", path);
		off += (size_t)n;
	}
	len = 0;
	for (;;) {
		ssize_t n;

		if (len == cap) {
			if (cap >= REPLY_MAX)
				return lg_err_msg(err, E2BIG, "the reply from %s is too long",
						  path);
			cap = cap ? cap * 2 : 4096;
			buf = xrealloc(buf, cap + 1);
		}
		r = wait_fd(fd, POLLIN, deadline, path, err);
		if (r < 0)
			return r;
		n = recv(fd, buf + len, cap - len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return lg_err_sys(err, "read from %s", path);
		if (n == 0)
			break;
		len += (size_t)n;
		if (memchr(buf + len - (size_t)n, '\n', (size_t)n) != NULL)
			break;
	}
	if (len == 0)
		return lg_err_msg(err, EPROTO,
				  "the server on %s closed the connection without answering", path);
	*resp = json_loadb(buf, len, JSON_DISABLE_EOF_CHECK, &jerr);
	if (*resp == NULL || !json_is_object(*resp)) {
		json_decref(*resp);
		*resp = NULL;
		return lg_err_msg(err, EPROTO, "malformed reply from %s: %s", path, jerr.text);
	}
	return 0;
}

/* The server's refusal as one line: "luminaguard: approvals approve: MESSAGE". */
static int refused(const char *cmd, json_t *resp)
{
	const char *msg = json_string_value(json_object_get(resp, "error"));

	fprintf(stderr, "%s: approvals %s: ", PROG, cmd);
	approval_print_sanitized(stderr, msg != NULL ? msg : "refused", false);
	fputc('\n', stderr);
	json_decref(resp);
	return 1;
}

static void format_age(long long s, char out[32])
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(out, 32, "%llds", s);
	else if (s < 3600)
		snprintf(out, 32, "%lldm%02llds", s / 60, s % 60);
	else
		snprintf(out, 32, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
}

/* Prints a card field cut to width code points (agent text: sanitized). */
static void print_cell(const json_t *v, size_t width, bool last)
{
	const char *s = json_string_value(v);
	cleanup_free char *cut = NULL;
	size_t cps = 0;
	size_t i = 0;

	if (s == NULL)
		s = "-";
	for (; s[i] != '\0' && cps < width; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			cps++;
	while (s[i] != '\0' && ((unsigned char)s[i] & 0xc0) == 0x80)
		i++;
	cut = xmalloc(i + 1);
	memcpy(cut, s, i);
	cut[i] = '\0';
	approval_print_sanitized(stdout, cut, false);
	if (s[i] != '\0')
		fputs("...", stdout);
	else if (!last)
		for (; cps < width; cps++)
			fputc(' ', stdout);
	fputc(last ? '\n' : ' ', stdout);
}

static int do_list(const char *path, bool as_json)
{
	struct lg_err *err = NULL;
	json_t *resp = NULL;
	json_t *pending;
	json_t *item;
	size_t i;

	if (request(path, json_pack("{s:s}", "op", "list"), &resp, &err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	if (!json_is_true(json_object_get(resp, "ok")))
		return refused("list", resp);
	pending = json_object_get(resp, "pending");
	if (!json_is_array(pending)) {
		json_decref(resp);
		fprintf(stderr, "%s: approvals list: malformed reply from %s\n", PROG, path);
		return 1;
	}
	if (as_json) {
		json_dumpf(pending, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
	} else if (json_array_size(pending) == 0) {
		printf("no pending approvals\n");
	} else {
		printf("%-15s %-7s %-8s %-16s %s\n", "ID", "AGE", "RISK", "TOOL", "SUMMARY");
		json_array_foreach(pending, i, item)
		{
			json_t *card = json_object_get(item, "card");
			char age[32];

			format_age((long long)time(NULL) - (long long)json_integer_value(
							       json_object_get(item, "created")),
				   age);
			print_cell(json_object_get(item, "id"), 15, false);
			printf("%-7s ", age);
			print_cell(json_object_get(card, "risk"), 8, false);
			print_cell(json_object_get(card, "tool"), 16, false);
			print_cell(json_object_get(card, "summary"), SUMMARY_WIDTH, true);
		}
		/* The table cuts; say where the whole of each request is. */
		printf("(a summary is only the start: see all of a request with `%s approvals show "
		       "ID` before deciding)\n",
		       PROG);
	}
	json_decref(resp);
	return 0;
}

/*
 * One request in full: the card as the terminal prompt shows it, then the
 * whole action as JSON.  Everything came from the agent: the card is
 * escaped by the renderer, and the JSON is printed ASCII-only, so no byte
 * of it can be a terminal control sequence.
 */
static int do_show(const char *path, const char *id, bool as_json)
{
	struct lg_err *err = NULL;
	json_t *resp = NULL;
	json_t *ap;
	cleanup_free char *body = NULL;
	cleanup_free char *action = NULL;

	if (request(path, json_pack("{s:s, s:s}", "op", "show", "id", id), &resp, &err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	if (!json_is_true(json_object_get(resp, "ok")))
		return refused("show", resp);
	ap = json_object_get(resp, "approval");
	if (!json_is_object(ap)) {
		json_decref(resp);
		fprintf(stderr, "%s: approvals show: malformed reply from %s\n", PROG, path);
		return 1;
	}
	if (as_json) {
		json_dumpf(ap, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
		fputc('\n', stdout);
		json_decref(resp);
		return 0;
	}
	fputs("approval ", stdout);
	approval_print_sanitized(stdout, json_string_value(json_object_get(ap, "id")), false);
	printf(" (times out in %" JSON_INTEGER_FORMAT " s)\n",
	       json_integer_value(json_object_get(ap, "expires_in_s")));
	body = approval_card_render(json_object_get(ap, "card"));
	fputs(body != NULL ? body : "", stdout);
	if (!json_is_null(json_object_get(ap, "action"))) {
		action = json_dumps(json_object_get(ap, "action"),
				    JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_SORT_KEYS);
		printf("the whole action, as the agent sent it:\n%s\n",
		       action != NULL ? action : "?");
	}
	json_decref(resp);
	return 0;
}

static int do_decide(const char *path, const char *cmd, const char *id, const char *reason)
{
	struct lg_err *err = NULL;
	json_t *resp = NULL;

	if (request(path, json_pack("{s:s, s:s, s:s?}", "op", cmd, "id", id, "reason", reason),
		    &resp, &err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	if (!json_is_true(json_object_get(resp, "ok")))
		return refused(cmd, resp);
	json_decref(resp);
	printf("%s %s\n", strcmp(cmd, "approve") == 0 ? "approved" : "denied", id);
	return 0;
}

int cmd_approvals(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"reason", required_argument, NULL, 'r'},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	cleanup_free char *path = NULL;
	const char *socket_opt = NULL;
	const char *reason = NULL;
	const char *sub;
	bool as_json = false;
	int c;

	if (argc < 2) {
		fputs(approvals_usage, stderr);
		return 2;
	}
	sub = argv[1];
	if (cli_is_help(sub) || strcmp(sub, "help") == 0) {
		fputs(approvals_usage, stdout);
		return 0;
	}
	if (strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0 && strcmp(sub, "approve") != 0 &&
	    strcmp(sub, "deny") != 0)
		return usage_error("unknown command `%s`", sub);

	optind = 0;
	while ((c = getopt_long(argc - 1, argv + 1, ":s:r:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			socket_opt = optarg;
			break;
		case 'r':
			reason = optarg;
			break;
		case OPT_JSON:
			as_json = true;
			break;
		case 'h':
			fputs(approvals_usage, stdout);
			return 0;
		case ':':
			return usage_error("option `%s` needs a value", argv[optind]);
		default:
			return usage_error("unknown option `%s`", argv[optind]);
		}
	}
	argc -= 1 + optind;
	argv += 1 + optind;
	if (strcmp(sub, "list") == 0) {
		if (argc > 0)
			return usage_error("unexpected argument `%s`", argv[0]);
		if (reason != NULL)
			return usage_error("list takes no --reason");
		path = socket_path(socket_opt);
		return do_list(path, as_json);
	}
	if (as_json && strcmp(sub, "show") != 0)
		return usage_error("--json is for list and show");
	if (argc == 0)
		return usage_error("%s: missing the request ID", sub);
	if (argc > 1)
		return usage_error("unexpected argument `%s`", argv[1]);
	path = socket_path(socket_opt);
	if (strcmp(sub, "show") == 0) {
		if (reason != NULL)
			return usage_error("show takes no --reason");
		return do_show(path, argv[0], as_json);
	}
	return do_decide(path, sub, argv[0], reason);
}
