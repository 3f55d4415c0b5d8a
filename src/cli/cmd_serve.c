/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `luminaguard serve`: the long-running sandbox service.  One per data
 * directory (an flock on DATA/serve.lock held for life); the HTTP API on
 * the owner-only DATA/serve.sock (docs/api.md) and optionally on TCP; MCP
 * sessions on DATA/mcp.sock; approvals on the control socket.
 */
#include "cli/commands.h"
#include "cli/server_opts.h"
#include "cli/signals.h"

#include "approval/gate.h"
#include "common/env.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/util.h"
#include "host/snapshot.h"
#include "jail/cgroup.h"
#include "jail/uidpool.h"
#include "mcp/mcp.h"
#include "mcp/sock.h"
#include "serve/api.h"
#include "serve/route.h"
#include "service/service.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static const char usage[] =
    "Usage: luminaguard serve [OPTIONS]\n"
    "\n"
    "Runs the sandbox service: one owner of every sandbox, with a JSON HTTP API\n"
    "(docs/api.md) on DATA/serve.sock, MCP sessions on DATA/mcp.sock (used by\n"
    "`luminaguard mcp` on stdio), optional warm pools, and Prometheus metrics.\n"
    "One service per data directory.  SIGINT or SIGTERM destroys every sandbox\n"
    "and exits 0.\n"
    "\n"
    "  curl --unix-socket DATA/serve.sock http://lg/v1/sandboxes\n"
    "\n"
    "Options:\n"
    "  --http HOST:PORT        also serve the API on TCP (loopback needs no token;\n"
    "                          any other address needs --token-file)\n"
    "  --token-file FILE       require 'Authorization: Bearer <first line of FILE>'\n"
    "                          on TCP (at least 16 characters)\n"
    "  --pool IMAGE[:CPUS:MIB]=N\n"
    "                          keep N sandboxes of this shape booted and ready\n"
    "                          (repeatable, at most 8 pools, N at most 64); a\n"
    "                          miss grows the pool by one, up to 4N, and it\n"
    "                          shrinks back after 30 s without a miss\n"
    "  --snapshots             restore sandboxes from snapshots where the backend\n"
    "                          can (the default)\n"
    "  --no-snapshots          always boot\n"
    "%s"
    "  -h, --help              this text\n"
    "\n"
    "--net is for MCP sessions' sandboxes; the API's name their own network\n"
    "(\"network\" in a create, docs/api.md).\n"
    "\n"
    "DATA is $LUMINAGUARD_HOME or ~/.local/share/luminaguard.  Logs go to stderr,\n"
    "one line per request with its id (LUMINAGUARD_LOG_FORMAT=json for JSON lines;\n"
    "LUMINAGUARD_LOG=warn for fewer).\n";

enum {
	OPT_HTTP = 256,
	OPT_TOKEN_FILE,
	OPT_POOL,
	OPT_SNAPSHOTS,
	OPT_NO_SNAPSHOTS,
};

static const struct option long_opts[] = {
    {"http", required_argument, NULL, OPT_HTTP},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"pool", required_argument, NULL, OPT_POOL},
    {"snapshots", no_argument, NULL, OPT_SNAPSHOTS},
    {"no-snapshots", no_argument, NULL, OPT_NO_SNAPSHOTS},
    LG_SERVER_LONG_OPTS,
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/*
 * Makes this the one service of the data directory: an flock on
 * DATA/serve.lock, held until the process ends (the kernel drops it even
 * after a SIGKILL, so a dead service never blocks the next).  Returns the
 * lock's fd, or -1 having said why (exit 1).
 */
static int take_service_lock(const char *home)
{
	cleanup_free char *path = xasprintf("%s/serve.lock", home);
	char pid[32];
	ssize_t n;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		fprintf(stderr, "luminaguard: serve: open `%s`: %s\n", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (e == EWOULDBLOCK)
			fprintf(
			    stderr,
			    "luminaguard: serve: a service is already running (pid %s) for %s\n",
			    pid[0] != '\0' ? pid : "unknown", home);
		else
			fprintf(stderr, "luminaguard: serve: lock `%s`: %s\n", path, strerror(e));
		close(fd);
		return -1;
	}
	/* Who holds it, for the next one's message. */
	snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, strlen(pid), 0) < 0)
		lg_warn("serve: cannot write the pid into `%s`: %s", path, strerror(errno));
	return fd;
}

/*
 * What a service killed by SIGKILL leaves behind.  Its VMMs died with it
 * (PR_SET_PDEATHSIG), and its sockets are replaced when we bind; what
 * remains are the jail's per-VM cgroups and uid lock files (as root).
 */
static void clean_stale(void)
{
	int cg, uids, snaps;

	snaps = lg_snapshot_sweep();
	if (snaps > 0)
		lg_info("serve: removed %d unfinished snapshot build(s)", snaps);
	if (geteuid() != 0)
		return;
	cg = lg_cgroup_sweep_stale(NULL);
	uids = lg_uid_sweep_stale(NULL);
	if (cg > 0 || uids > 0)
		lg_info("serve: removed what a service that died left: %d cgroup(s), %d uid "
			"lock(s)",
			cg, uids);
}

int cmd_serve(int argc, char **argv)
{
	const char *http = NULL, *token_file = NULL;
	struct lg_server_opts so;
	struct lg_pool_spec pools[LG_POOL_MAX];
	size_t n_pools = 0;
	bool snapshots = true;
	cleanup_free char *token = NULL, *home = NULL, *sock = NULL, *mcp_path = NULL;
	struct lg_server_approvals ap = {0};
	struct lg_service *svc = NULL;
	struct mcp_server *msrv = NULL;
	struct mcp_sock *msock = NULL;
	struct lg_api *api = NULL;
	struct lg_err *err = NULL;
	unsigned port = 0;
	bool json_logs;
	int c, r, lock_fd = -1, status = 1;

	lg_server_opts_init(&so);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
		r = lg_server_opt(&so, "serve", c, optarg);
		if (r < 0)
			return 2;
		if (r > 0)
			continue;
		switch (c) {
		case OPT_HTTP:
			http = optarg;
			break;
		case OPT_TOKEN_FILE:
			token_file = optarg;
			break;
		case OPT_POOL:
			if (n_pools >= LG_POOL_MAX) {
				fprintf(stderr, "luminaguard: serve: at most %u --pool\n",
					LG_POOL_MAX);
				return 2;
			}
			if (lg_pool_spec_parse(optarg, &pools[n_pools], &err) < 0) {
				fprintf(stderr, "luminaguard: serve: --pool: %s\n", err->msg);
				lg_err_free(&err);
				return 2;
			}
			n_pools++;
			break;
		case OPT_SNAPSHOTS:
			snapshots = true;
			break;
		case OPT_NO_SNAPSHOTS:
			snapshots = false;
			break;
		case 'h':
			printf(usage, lg_server_opts_help);
			return 0;
		default:
			fprintf(stderr,
				"luminaguard: serve: unknown option or missing value: '%s'\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "luminaguard: serve: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (token_file != NULL && http == NULL) {
		fprintf(stderr, "luminaguard: serve: --token-file needs --http (the unix socket "
				"is owner-only and needs no token)\n");
		return 2;
	}
	if (http != NULL) {
		/* Checked before anything starts: a bad bind is a usage error. */
		struct sockaddr_storage sa;
		socklen_t salen;
		char host[64];

		if (lg_route_parse_bind(http, &sa, &salen, host, sizeof(host)) < 0) {
			fprintf(
			    stderr,
			    "luminaguard: serve: --http `%s`: expected HOST:PORT with a numeric "
			    "address (127.0.0.1:8080, [::1]:8080, localhost:8080)\n",
			    http);
			return 2;
		}
		if (!lg_route_bind_loopback(&sa) && token_file == NULL) {
			fprintf(
			    stderr,
			    "luminaguard: serve: refusing to serve the API on %s without a bearer "
			    "token: a non-loopback address needs --token-file\n",
			    http);
			return 2;
		}
	}
	if (token_file != NULL && lg_server_read_token(token_file, &token, &err) < 0)
		goto out;
	if (so.jail.disabled)
		lg_warn("serve: --no-jail: VMMs run without the jailer (debugging only)");
	/* A service logs every request unless told otherwise (the environment is read once). */
	if (!lg_env()->log_level_set && lg_log_get_level() < LG_LOG_INFO)
		lg_log_set_level(LG_LOG_INFO);
	json_logs = lg_env()->log_json;

	home = lg_home_dir();
	if (lg_mkdir_p(home, 0700) < 0) {
		lg_err_sys(&err, "create `%s`", home);
		goto out;
	}
	lock_fd = take_service_lock(home);
	if (lock_fd < 0)
		return 1;
	clean_stale();
	if (lg_signals_install(&err) < 0)
		goto out;
	if (lg_server_approvals_start(&so, "serve", &ap, &err) < 0)
		goto out;

	struct lg_service_opts sopts = {
	    .default_image = so.image,
	    .accel = so.accel,
	    .jail = &so.jail,
	    .limits = {.max_vms = (unsigned)so.max_sandboxes,
		       .max_vcpus = (unsigned)so.max_vcpus,
		       .max_memory_mib = so.max_memory_mib},
	    .idle_timeout_s = (unsigned)so.idle_timeout_s,
	    .pools = pools,
	    .n_pools = n_pools,
	    .snapshots = snapshots,
	};
	if (lg_service_new(&sopts, &svc, &err) < 0)
		goto out;

	struct lg_gate gate = {
	    .policy = ap.policy,
	    .audit = ap.audit,
	    .broker = ap.broker,
	    .approvals = lg_service_std(svc)->approvals,
	};
	struct lg_api_opts aopts = {.service = svc, .gate = &gate, .broker = ap.broker};
	if (lg_api_new(&aopts, &api, &err) < 0)
		goto out;
	sock = lg_serve_socket_path();
	if (lg_api_listen_unix(api, sock, &err) < 0)
		goto out;
	if (http != NULL && lg_api_listen_tcp(api, http, token, &port, &err) < 0)
		goto out;

	struct mcp_server_opts mo = {
	    .policy = ap.policy,
	    .audit = ap.audit,
	    .broker = ap.broker,
	    .idle_timeout_s = (unsigned)so.idle_timeout_s,
	    .default_image = so.image,
	    .accel = so.accel,
	    .jail = &so.jail,
	    .net_allow = so.net_allow,
	    .service = svc,
	};
	mcp_path = lg_serve_mcp_socket_path();
	if (mcp_server_new(&mo, &msrv, &err) < 0 ||
	    mcp_sock_start(msrv, mcp_path, &msock, &err) < 0)
		goto out;

	/*
	 * The one line a script waits for: where to connect.  With JSON logs
	 * it is a JSON line too, so that every line a collector reads parses.
	 */
	if (json_logs) {
		json_t *o =
		    json_pack("{s:s, s:s, s:i, s:s, s:s}", "level", "info", "msg", "serve: ready",
			      "pid", (int)getpid(), "unix", sock, "mcp", mcp_path);
		char *line;

		if (http != NULL) {
			json_object_set_new(o, "http", json_string(http));
			json_object_set_new(o, "port", json_integer(port));
		}
		line = json_dumps(o, JSON_COMPACT);
		fprintf(stderr, "%s\n", line != NULL ? line : "{}");
		free(line);
		json_decref(o);
	} else if (http != NULL) {
		fprintf(stderr,
			"luminaguard: serve: ready (pid %d): unix:%s, http://%s (port %u), mcp "
			"unix:%s\n",
			(int)getpid(), sock, http, port, mcp_path);
	} else {
		fprintf(stderr, "luminaguard: serve: ready (pid %d): unix:%s, mcp unix:%s\n",
			(int)getpid(), sock, mcp_path);
	}

	struct pollfd pfd = {.fd = lg_signals_fd(), .events = POLLIN};
	while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
		;
	lg_info("serve: stopping (signal %d): destroying every sandbox", lg_signals_caught());
	status = 0;
out:
	if (err != NULL)
		lg_err_report("luminaguard", &err);
	/* Front ends first (no new work, running commands cancelled), then the sandboxes. */
	lg_api_free(api);
	mcp_sock_stop(msock);
	mcp_server_free(msrv);
	lg_service_free(svc);
	lg_server_approvals_stop(&ap);
	if (lock_fd >= 0)
		close(lock_fd);
	if (lg_signals_caught() != 0)
		return 0;
	return status;
}
