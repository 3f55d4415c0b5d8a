/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard mcp`: the MCP server, over stdio or Streamable HTTP. */
#include "cli/commands.h"
#include "cli/signals.h"

#include "approval/approval.h"
#include "audit/audit.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/util.h"
#include "mcp/http.h"
#include "mcp/mcp.h"
#include "net/egress.h"
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
    "  --policy FILE           the approval policy (default: built in, see\n"
    "                          `luminaguard policy show`)\n"
    "  --audit-log FILE        the audit log (default: DATA/audit.jsonl)\n"
    "  --approval-timeout S    seconds a red action waits for a human (default 300;\n"
    "                          then it is denied)\n"
    "  --decide RISK=CHANNEL[,CHANNEL...]\n"
    "                          which channels may decide a request of RISK (low,\n"
    "                          medium, high, critical or all): elicitation (the\n"
    "                          client's report), cli (luminaguard approvals), tty;\n"
    "                          repeatable (default: all=elicitation,cli,tty), e.g.\n"
    "                          --decide critical=cli keeps the client out of it\n"
    "  --control-socket PATH   where `luminaguard approvals` reaches this server\n"
    "                          (default: DATA/control.sock)\n"
    "  --idle-timeout S        destroy sandboxes idle this long (default 600, 0: never)\n"
    "  --max-sandboxes N       at most N VMs at once, sandbox_run's included\n"
    "                          (default 16)\n"
    "  --max-vcpus N           at most N vCPUs over all VMs (default 4 per host CPU)\n"
    "  --max-memory MIB        at most MIB of guest memory plus each VMM's overhead\n"
    "                          (192 MiB) over all VMs (default half the host's)\n"
    "  --image NAME            default guest image (default: default)\n"
    "  --accel NAME            auto, kvm or tcg\n"
    "  --net none|allow=HOST[,HOST...]\n"
    "                          network of every sandbox (default none: no network\n"
    "                          device); allow= gives each guest an HTTP/HTTPS proxy\n"
    "                          that reaches only these hosts; any other host is a\n"
    "                          red action (approve = allowed for that sandbox)\n"
    "  --seccomp LEVEL         VMM syscall filter: strict (default), log, off\n"
    "  --no-jail               run VMMs without the jailer (debugging only)\n"
    "  --standalone            serve here even when `luminaguard serve` runs (on\n"
    "                          stdio its sessions otherwise go to the service,\n"
    "                          whose settings then apply)\n"
    "  -h, --help              this text\n"
    "\n"
    "DATA is $LUMINAGUARD_HOME or ~/.local/share/luminaguard.\n";

enum {
	OPT_HTTP = 256,
	OPT_TOKEN_FILE,
	OPT_ALLOW_ORIGIN,
	OPT_MAX_SESSIONS,
	OPT_POLICY,
	OPT_AUDIT_LOG,
	OPT_APPROVAL_TIMEOUT,
	OPT_CONTROL_SOCKET,
	OPT_DECIDE,
	OPT_IDLE_TIMEOUT,
	OPT_MAX_SANDBOXES,
	OPT_IMAGE,
	OPT_ACCEL,
	OPT_NET,
	OPT_MAX_VCPUS,
	OPT_MAX_MEMORY,
	OPT_NO_JAIL,
	OPT_SECCOMP,
	OPT_STANDALONE,
};

static const struct option long_opts[] = {
    {"http", required_argument, NULL, OPT_HTTP},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"allow-origin", required_argument, NULL, OPT_ALLOW_ORIGIN},
    {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
    {"policy", required_argument, NULL, OPT_POLICY},
    {"audit-log", required_argument, NULL, OPT_AUDIT_LOG},
    {"approval-timeout", required_argument, NULL, OPT_APPROVAL_TIMEOUT},
    {"control-socket", required_argument, NULL, OPT_CONTROL_SOCKET},
    {"decide", required_argument, NULL, OPT_DECIDE},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"max-sandboxes", required_argument, NULL, OPT_MAX_SANDBOXES},
    {"max-vcpus", required_argument, NULL, OPT_MAX_VCPUS},
    {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
    {"image", required_argument, NULL, OPT_IMAGE},
    {"accel", required_argument, NULL, OPT_ACCEL},
    {"net", required_argument, NULL, OPT_NET},
    {"no-jail", no_argument, NULL, OPT_NO_JAIL},
    {"seccomp", required_argument, NULL, OPT_SECCOMP},
    {"standalone", no_argument, NULL, OPT_STANDALONE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The token: the file's first line, which must not be empty. */
static int read_token(const char *path, char **out, struct lg_err **err)
{
	cleanup_file FILE *f = fopen(path, "re");
	char buf[1024];

	if (f == NULL)
		return lg_err_sys(err, "--token-file `%s`", path);
	if (fgets(buf, sizeof(buf), f) == NULL)
		buf[0] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (strlen(buf) < 16)
		return lg_err_set(
		    err, 0, "--token-file `%s`: the token must be at least 16 characters", path);
	*out = xstrdup(buf);
	return 0;
}

int cmd_mcp(int argc, char **argv)
{
	const char *http = NULL, *token_file = NULL, *policy_file = NULL, *audit_file = NULL;
	const char *control = NULL, *origins[MAX_ORIGINS + 1] = {NULL};
	size_t n_origins = 0;
	uint64_t max_sess = 0; /* 0: MCP_HTTP_DEFAULT_MAX_SESSIONS */
	uint64_t approval_timeout = 300, idle = 600, max_sb = 16, max_vcpus = 0, max_mem = 0;
	struct mcp_server_opts so = {.accel = HV_ACCEL_AUTO};
	struct jail_opts jail = {0};
	cleanup_free char *token = NULL, *default_audit = NULL, *default_control = NULL;
	struct policy *policy = NULL;
	struct audit_log *audit = NULL;
	struct approval_broker *broker = NULL;
	struct approval_control *ctl = NULL;
	unsigned decide[APPROVAL_RISKS] = {APPROVAL_CH_ALL, APPROVAL_CH_ALL, APPROVAL_CH_ALL,
					   APPROVAL_CH_ALL};
	struct mcp_server *srv = NULL;
	struct mcp_http *h = NULL;
	struct lg_err *err = NULL;
	bool standalone = false;
	int c, status = 1, n_opts = 0;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
		n_opts++;
		switch (c) {
		case OPT_HTTP:
			http = optarg;
			break;
		case OPT_TOKEN_FILE:
			token_file = optarg;
			break;
		case OPT_ALLOW_ORIGIN:
			if (n_origins >= MAX_ORIGINS) {
				fprintf(stderr, "luminaguard: mcp: at most %d --allow-origin\n",
					MAX_ORIGINS);
				return 2;
			}
			origins[n_origins++] = optarg;
			break;
		case OPT_POLICY:
			policy_file = optarg;
			break;
		case OPT_AUDIT_LOG:
			audit_file = optarg;
			break;
		case OPT_APPROVAL_TIMEOUT:
			if (lg_parse_u64(optarg, 1, 86400, &approval_timeout) < 0) {
				fprintf(
				    stderr,
				    "luminaguard: mcp: --approval-timeout: '%s' is not 1..86400\n",
				    optarg);
				return 2;
			}
			break;
		case OPT_CONTROL_SOCKET:
			control = optarg;
			break;
		case OPT_DECIDE:
			if (approval_decide_opt_parse(optarg, decide, &err) < 0) {
				fprintf(stderr, "luminaguard: mcp: %s\n", err->msg);
				lg_err_free(&err);
				return 2;
			}
			break;
		case OPT_IDLE_TIMEOUT:
			if (lg_parse_u64(optarg, 0, 86400 * 7, &idle) < 0) {
				fprintf(stderr,
					"luminaguard: mcp: --idle-timeout: '%s' is not a number "
					"of seconds\n",
					optarg);
				return 2;
			}
			break;
		case OPT_MAX_SESSIONS:
			if (lg_parse_u64(optarg, 1, MCP_HTTP_MAX_SESSIONS_LIMIT, &max_sess) < 0) {
				fprintf(stderr,
					"luminaguard: mcp: --max-sessions: '%s' is not 1..%u\n",
					optarg, MCP_HTTP_MAX_SESSIONS_LIMIT);
				return 2;
			}
			break;
		case OPT_MAX_SANDBOXES:
			if (lg_parse_u64(optarg, 1, 1024, &max_sb) < 0) {
				fprintf(stderr,
					"luminaguard: mcp: --max-sandboxes: '%s' is not 1..1024\n",
					optarg);
				return 2;
			}
			break;
		case OPT_MAX_VCPUS:
			if (lg_parse_u64(optarg, 1, 65536, &max_vcpus) < 0) {
				fprintf(stderr,
					"luminaguard: mcp: --max-vcpus: '%s' is not 1..65536\n",
					optarg);
				return 2;
			}
			break;
		case OPT_MAX_MEMORY:
			if (lg_parse_u64(optarg, HV_MIN_MEMORY_MIB + HV_VMM_OVERHEAD_MIB,
					 UINT64_C(1) << 32, &max_mem) < 0) {
				fprintf(
				    stderr,
				    "luminaguard: mcp: --max-memory: '%s' is not a number of MiB "
				    "(at least %u)\n",
				    optarg, HV_MIN_MEMORY_MIB + HV_VMM_OVERHEAD_MIB);
				return 2;
			}
			break;
		case OPT_IMAGE:
			so.default_image = optarg;
			break;
		case OPT_ACCEL:
			if (hv_accel_parse(optarg, &so.accel) < 0) {
				fprintf(stderr,
					"luminaguard: mcp: --accel: unknown accelerator '%s'\n",
					optarg);
				return 2;
			}
			break;
		case OPT_NET:
			if (lg_net_opt_parse(optarg, &so.net_allow, &err) < 0) {
				fprintf(stderr, "luminaguard: mcp: %s\n", err->msg);
				lg_err_free(&err);
				return 2;
			}
			break;
		case OPT_NO_JAIL:
			jail.disabled = true;
			break;
		case OPT_SECCOMP:
			if (lg_seccomp_level_parse(optarg, &jail.seccomp) < 0) {
				fprintf(
				    stderr,
				    "luminaguard: mcp: --seccomp: '%s' is not strict, log or off\n",
				    optarg);
				return 2;
			}
			break;
		case OPT_STANDALONE:
			standalone = true;
			break;
		case 'h':
			fputs(usage, stdout);
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
		int r = mcp_sock_bridge(sock, STDIN_FILENO, STDOUT_FILENO, lg_signals_fd(), &err);

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
	if (so.net_allow != NULL) {
		/* Checked now, so a typo is a usage error and not a failed sandbox later. */
		struct lg_allowlist *al = NULL;
		if (lg_allowlist_parse(so.net_allow, &al, &err) < 0) {
			fprintf(stderr, "luminaguard: mcp: --net: %s\n", err->msg);
			lg_err_free(&err);
			return 2;
		}
		lg_allowlist_free(al);
	}
	so.jail = &jail;
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
	if (policy_file != NULL) {
		if (policy_load_file(policy_file, &policy, &err) < 0)
			goto out;
	} else {
		policy = policy_default();
	}
	if (audit_file == NULL) {
		cleanup_free char *home = lg_home_dir();
		if (lg_mkdir_p(home, 0700) < 0) {
			lg_err_sys(&err, "create `%s`", home);
			goto out;
		}
		default_audit = xasprintf("%s/audit.jsonl", home);
		audit_file = default_audit;
	}
	if (audit_open(audit_file, &audit, &err) < 0)
		goto out;
	broker = approval_broker_new((unsigned)approval_timeout, audit);
	approval_broker_set_channels(broker, decide);
	if (control == NULL) {
		default_control = approval_control_default_path();
		control = default_control;
	}
	if (approval_control_start(broker, control, &ctl, &err) < 0) {
		/*
		 * Another server of this user (a second MCP client started one)
		 * holds the default socket: take a socket of our own rather than
		 * fail, and say where it is.
		 */
		if (default_control == NULL || lg_err_code(err) != -EADDRINUSE)
			goto out;
		lg_err_free(&err);
		cleanup_free char *home = lg_home_dir();
		free(default_control);
		default_control = xasprintf("%s/control-%d.sock", home, (int)getpid());
		control = default_control;
		if (approval_control_start(broker, control, &ctl, &err) < 0)
			goto out;
		lg_log(
		    LG_LOG_ERROR,
		    "mcp: another server has the default control socket; approvals for this one: "
		    "luminaguard approvals list --socket %s",
		    control);
	}

	so.policy = policy;
	so.audit = audit;
	so.broker = broker;
	so.idle_timeout_s = (unsigned)idle;
	so.max_sandboxes = (unsigned)max_sb;
	so.max_vcpus = (unsigned)max_vcpus;
	so.max_memory_mib = max_mem;
	if (mcp_server_new(&so, &srv, &err) < 0)
		goto out;

	if (http == NULL) {
		if (mcp_stdio_serve(srv, STDIN_FILENO, STDOUT_FILENO, lg_signals_fd(), &err) < 0)
			goto out;
	} else {
		struct mcp_http_opts ho = {.bind = http,
					   .allowed_origins = n_origins ? origins : NULL,
					   .max_sessions = (unsigned)max_sess};
		struct pollfd pfd = {.fd = lg_signals_fd(), .events = POLLIN};

		if (token_file != NULL && read_token(token_file, &token, &err) < 0)
			goto out;
		ho.token = token;
		if (mcp_http_start(srv, &ho, &h, &err) < 0)
			goto out;
		/* The one line a script waits for: where to connect. */
		fprintf(stderr, "luminaguard: mcp: listening on http://%s/mcp (port %u)\n", http,
			mcp_http_port(h));
		while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
			;
	}
	status = 0;
out:
	if (err != NULL)
		lg_err_report("luminaguard", &err);
	mcp_http_stop(h);
	mcp_server_free(srv);
	approval_control_stop(ctl);
	approval_broker_free(broker);
	audit_close(audit);
	policy_free(policy);
	if (lg_signals_caught() != 0)
		return 0; /* asked to stop: a clean stop */
	return status;
}
