/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard mcp`: the MCP server, over stdio or Streamable HTTP. */
#include "cli/commands.h"
#include "cli/server_opts.h"
#include "cli/signals.h"

#include "approval/approval.h"
#include "audit/audit.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/usock.h"
#include "common/util.h"
#include "mcp/http.h"
#include "mcp/mcp.h"
#include "jail/jail.h"
#include "mcp/sock.h"
#include "mcp/stdio.h"
#include "policy/policy.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ORIGINS 16

static const char usage[] =
    "Usage: luminaguard mcp [OPTIONS]\n"
    "\n"
    "Serves the Model Context Protocol: sandbox tools for any MCP client, with\n"
    "the approval cliff in front of every call.  stdio by default; stdout\n"
    "carries only protocol messages, logs go to stderr.\n"
    "\n"
    "Options:\n"
    "  --http HOST:PORT        serve Streamable HTTP at http://HOST:PORT/mcp instead\n"
    "                          (and Prometheus metrics at /metrics)\n"
    "  --token-file FILE       require 'Authorization: Bearer <contents of FILE>'\n"
    "                          (needed for any non-loopback --http address)\n"
    "  --allow-origin ORIGIN   a browser Origin to accept (repeatable; default:\n"
    "                          localhost, 127.0.0.1 and [::1] on any port)\n"
    "  --max-sessions N        at most N HTTP sessions open at once (default 64;\n"
    "                          a new one over the cap gets 503)\n"
    "  --standalone            serve here even when `luminaguard serve` runs (its\n"
    "                          sessions, on stdio or HTTP, otherwise go to the\n"
    "                          service, whose settings then apply)\n"
    "%s"
    "  -h, --help              this text\n"
    "\n"
    "DATA is $LUMINAGUARD_HOME or ~/.local/share/luminaguard.\n";

enum {
	OPT_HTTP = 256,
	OPT_TOKEN_FILE,
	OPT_ALLOW_ORIGIN,
	OPT_MAX_SESSIONS,
	OPT_STANDALONE,
};

static const struct option long_opts[] = {
    {"http", required_argument, NULL, OPT_HTTP},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"allow-origin", required_argument, NULL, OPT_ALLOW_ORIGIN},
    {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
    {"standalone", no_argument, NULL, OPT_STANDALONE},
    LG_SERVER_LONG_OPTS,
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_mcp(int argc, char **argv)
{
	const char *http = NULL, *token_file = NULL, *origins[MAX_ORIGINS + 1] = {NULL};
	size_t n_origins = 0;
	uint64_t max_sess = 0; /* 0: MCP_HTTP_DEFAULT_MAX_SESSIONS */
	struct lg_server_opts o;
	struct lg_server_approvals ap = {0};
	struct mcp_server_opts so = {0};
	cleanup_free char *token = NULL;
	struct mcp_server *srv = NULL;
	struct mcp_http *h = NULL;
	struct lg_err *err = NULL;
	bool standalone = false;
	int c, r, status = 1, n_opts = 0, n_http_opts = 0;
	cleanup_free char *service_sock = NULL;

	lg_server_opts_init(&o);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
		n_opts++;
		r = lg_server_opt(&o, "mcp", c, optarg);
		if (r < 0)
			return 2;
		if (r > 0)
			continue;
		switch (c) {
		case OPT_HTTP:
			http = optarg;
			n_http_opts++;
			break;
		case OPT_TOKEN_FILE:
			token_file = optarg;
			n_http_opts++;
			break;
		case OPT_ALLOW_ORIGIN:
			n_http_opts++;
			if (n_origins >= MAX_ORIGINS) {
				fprintf(stderr, "luminaguard: mcp: at most %d --allow-origin\n",
					MAX_ORIGINS);
				return 2;
			}
			origins[n_origins++] = optarg;
			break;
		case OPT_MAX_SESSIONS:
			n_http_opts++;
			if (lg_parse_u64(optarg, 1, MCP_HTTP_MAX_SESSIONS_LIMIT, &max_sess) < 0) {
				fprintf(stderr,
					"luminaguard: mcp: --max-sessions: '%s' is not 1..%u\n",
					optarg, MCP_HTTP_MAX_SESSIONS_LIMIT);
				return 2;
			}
			break;
		case OPT_STANDALONE:
			standalone = true;
			n_http_opts++;
			break;
		case 'h':
			printf(usage, lg_server_opts_help);
			return 0;
		default:
			fprintf(stderr, "luminaguard: mcp: unknown option or missing value: '%s'\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "luminaguard: mcp: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	/*
	 * On stdio, a running service (`luminaguard serve`) hosts the session,
	 * so its sandboxes live beside every other front end's: this process
	 * only carries the bytes.  The service's policy, limits and network
	 * apply then, not these options.
	 */
	if (http == NULL && !standalone) {
		cleanup_free char *sock = lg_serve_mcp_socket_path();
		r = mcp_sock_bridge(sock, STDIN_FILENO, STDOUT_FILENO, lg_signals_fd(), &err);

		if (r != 0 && n_opts > 0)
			lg_log(LG_LOG_ERROR, "mcp: a service is running: its settings apply, not "
					     "these options (--standalone to use them here)");
		if (r < 0) {
			lg_err_report("luminaguard", &err);
			return 1;
		}
		if (r == 1)
			return 0;
	}
	/*
	 * Over HTTP too: each HTTP session is carried over its own connection
	 * to the service's MCP socket.  The HTTP options (address, token,
	 * origins, session cap) are this process's; the rest is the service's.
	 */
	if (http != NULL && !standalone) {
		char *sock = lg_serve_mcp_socket_path();
		int fd = lg_usock_connect(sock);

		if (fd >= 0) {
			close(fd);
			service_sock = sock;
			if (n_opts > n_http_opts)
				lg_log(LG_LOG_ERROR,
				       "mcp: a service is running: its settings apply, not these "
				       "options (--standalone to use them here)");
			lg_info("mcp: HTTP sessions go to the running service (%s)", sock);
		} else if (fd == -ENOENT || fd == -ECONNREFUSED) {
			free(sock);
		} else {
			fprintf(stderr,
				"luminaguard: mcp: cannot connect to the service's MCP socket %s: "
				"%s\n",
				sock, strerror(-fd));
			free(sock);
			return 1;
		}
	}
	if (token_file != NULL && http == NULL) {
		fprintf(stderr, "luminaguard: mcp: --token-file needs --http\n");
		return 2;
	}
	if (max_sess != 0 && http == NULL) {
		fprintf(stderr, "luminaguard: mcp: --max-sessions needs --http (stdio is one "
				"session)\n");
		return 2;
	}

	if (lg_signals_install(&err) < 0)
		goto out;
	if (service_sock != NULL)
		goto serve_http; /* no server of ours: the service's policy, approvals and log */
	if (lg_server_approvals_start(&o, "mcp", &ap, &err) < 0)
		goto out;

	so.policy = ap.policy;
	so.audit = ap.audit;
	so.broker = ap.broker;
	so.idle_timeout_s = (unsigned)o.idle_timeout_s;
	so.max_sandboxes = (unsigned)o.max_sandboxes;
	so.max_vcpus = (unsigned)o.max_vcpus;
	so.max_memory_mib = o.max_memory_mib;
	so.default_image = o.image;
	so.accel = o.accel;
	so.jail = &o.jail;
	so.net_allow = o.net_allow;
	if (mcp_server_new(&so, &srv, &err) < 0)
		goto out;

serve_http:
	if (http == NULL) {
		if (mcp_stdio_serve(srv, STDIN_FILENO, STDOUT_FILENO, lg_signals_fd(), &err) < 0)
			goto out;
	} else {
		struct mcp_http_opts ho = {.bind = http,
					   .allowed_origins = n_origins ? origins : NULL,
					   .max_sessions = (unsigned)max_sess,
					   .service_sock = service_sock};
		struct pollfd pfd = {.fd = lg_signals_fd(), .events = POLLIN};

		if (token_file != NULL && lg_server_read_token(token_file, &token, &err) < 0)
			goto out;
		ho.token = token;
		if (mcp_http_start(srv, &ho, &h, &err) < 0)
			goto out;
		/* The one line a script waits for: where to connect. */
		fprintf(stderr, "luminaguard: mcp: listening on http://%s/mcp (port %u)%s\n", http,
			mcp_http_port(h),
			service_sock != NULL ? ", sessions in the running service" : "");
		while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
			;
	}
	status = 0;
out:
	if (err != NULL)
		lg_err_report("luminaguard", &err);
	mcp_http_stop(h);
	mcp_server_free(srv);
	lg_server_approvals_stop(&ap);
	if (lg_signals_caught() != 0)
		return 0; /* asked to stop: a clean stop */
	return status;
}
