/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard ps` and `luminaguard kill`: the sandboxes of a running service. */
#include "cli/client.h"
#include "cli/commands.h"

#include "common/paths.h"
#include "common/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define EXIT_FAILED 1
#define EXIT_USAGE  2
/* ps and kill are quick questions; a service that takes longer is stuck. */
#define PS_TIMEOUT_MS 10000

static const char ps_usage[] =
    "Usage: luminaguard ps [--json]\n"
    "\n"
    "Lists the sandboxes of the running service (`luminaguard serve`): ID,\n"
    "STATE (ready, busy, lost), AGE, IMAGE, CPUS, MEMORY and OWNER (api, cli or\n"
    "mcp), and why a lost one was lost.  --json prints the service's list as\n"
    "it is.  Exits 1 when no service runs.\n";

static const char kill_usage[] =
    "Usage: luminaguard kill ID [ID...]\n"
    "\n"
    "Destroys sandboxes of the running service (`luminaguard ps` lists them).\n"
    "The service's approval policy applies: by default destroying a sandbox\n"
    "that holds work waits for a human's yes (`luminaguard approvals`).\n"
    "Exits 1 if any was not destroyed.\n";

/* One request to the service; 1 when there is no service, after saying so. */
static int ask(const char *method, const char *target, int timeout_ms, struct lg_client_resp *resp)
{
	cleanup_free char *sock = lg_serve_socket_path();
	struct lg_client_req rq = {
	    .method = method, .target = target, .cancel_fd = -1, .timeout_ms = timeout_ms};
	struct lg_err *err = NULL;
	int r;

	r = lg_client_call(sock, &rq, resp, &err);
	if (r == -ENOENT || r == -ECONNREFUSED || r == -ENAMETOOLONG || r == -ENOTDIR) {
		lg_err_free(&err);
		fprintf(stderr, "luminaguard: no service running (start one with `luminaguard "
				"serve`)\n");
		return 1;
	}
	if (r < 0) {
		lg_err_report("luminaguard", &err);
		return -1;
	}
	return 0;
}

static void fmt_age(char *buf, size_t len, json_t *v)
{
	long long s = json_is_integer(v) ? (long long)json_integer_value(v) : -1;

	if (s < 0)
		snprintf(buf, len, "?");
	else if (s < 120)
		snprintf(buf, len, "%llds", s);
	else if (s < 2 * 3600)
		snprintf(buf, len, "%lldm", s / 60);
	else if (s < 2 * 86400)
		snprintf(buf, len, "%lldh", s / 3600);
	else
		snprintf(buf, len, "%lldd", s / 86400);
}

/* A string field of the service's for a column: printable, cut at max, "-" if absent. */
static char *field(json_t *o, const char *key, size_t max)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_string(v) || json_string_value(v)[0] == '\0')
		return xstrdup("-");
	return lg_client_printable(json_string_value(v), max);
}

static void print_table(json_t *list)
{
	size_t i;
	json_t *e;

	printf("%-16s %-6s %5s %-20s %4s %8s %s\n", "ID", "STATE", "AGE", "IMAGE", "CPUS", "MEMORY",
	       "OWNER");
	json_array_foreach(list, i, e)
	{
		cleanup_free char *id = field(e, "id", 64), *state = field(e, "state", 16),
				  *image = field(e, "image", 64), *owner = field(e, "owner", 16);
		json_t *cpus = json_object_get(e, "cpus"), *mem = json_object_get(e, "memory_mib");
		char age[24], cpu_s[24], mem_s[32];

		if (!json_is_object(e))
			continue;
		fmt_age(age, sizeof(age), json_object_get(e, "age_s"));
		snprintf(cpu_s, sizeof(cpu_s), "%lld",
			 json_is_integer(cpus) ? (long long)json_integer_value(cpus) : 0LL);
		snprintf(mem_s, sizeof(mem_s), "%lldM",
			 json_is_integer(mem) ? (long long)json_integer_value(mem) : 0LL);
		printf("%-16s %-6s %5s %-20s %4s %8s %s\n", id, state, age, image, cpu_s, mem_s,
		       owner);
	}
	json_array_foreach(list, i, e)
	{
		if (json_is_string(json_object_get(e, "lost_reason"))) {
			cleanup_free char *id = field(e, "id", 64),
					  *why = field(e, "lost_reason", 256);
			printf("%s: lost: %s\n", id, why);
		}
	}
}

int cmd_ps(int argc, char **argv)
{
	struct lg_client_resp resp;
	bool as_json = false;
	json_t *list;
	int r;

	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(ps_usage, stdout);
			return 0;
		} else if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else {
			fprintf(stderr, "luminaguard: ps: unknown argument '%s' (see ps --help)\n",
				argv[i]);
			return EXIT_USAGE;
		}
	}
	r = ask("GET", "/v1/sandboxes", PS_TIMEOUT_MS, &resp);
	if (r != 0)
		return EXIT_FAILED;
	list = resp.json != NULL ? json_object_get(resp.json, "sandboxes") : NULL;
	if (resp.status != 200 || !json_is_array(list)) {
		cleanup_free char *text = lg_client_error_text(&resp);

		fprintf(stderr, "luminaguard: ps: %s\n",
			resp.status == 200 ? "the service sent no list" : text);
		lg_client_resp_clear(&resp);
		return EXIT_FAILED;
	}
	if (as_json) {
		char *s = json_dumps(list, JSON_INDENT(2));

		puts(s != NULL ? s : "[]");
		free(s);
	} else {
		print_table(list);
	}
	lg_client_resp_clear(&resp);
	return 0;
}

int cmd_kill(int argc, char **argv)
{
	int status = 0;

	if (argc < 2) {
		fprintf(stderr, "luminaguard: kill: no sandbox id given (usage: luminaguard kill "
				"ID [ID...])\n");
		return EXIT_USAGE;
	}
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(kill_usage, stdout);
			return 0;
		}
		if (!lg_client_id_ok(argv[i])) {
			cleanup_free char *shown = lg_client_printable(argv[i], 80);

			fprintf(stderr, "luminaguard: kill: '%s' is not a sandbox id\n", shown);
			return EXIT_USAGE;
		}
	}
	for (int i = 1; i < argc; i++) {
		cleanup_free char *target = xasprintf("/v1/sandboxes/%s", argv[i]);
		struct lg_client_resp resp;
		/* No timeout: the policy may wait for a human; Ctrl-C ends the wait. */
		int r = ask("DELETE", target, 0, &resp);

		if (r != 0)
			return EXIT_FAILED;
		if (resp.status == 200) {
			printf("%s\n", argv[i]);
		} else {
			cleanup_free char *text = lg_client_error_text(&resp);

			if (resp.status == 404)
				fprintf(stderr, "luminaguard: kill: no sandbox %s\n", argv[i]);
			else
				fprintf(stderr, "luminaguard: kill: %s: %s\n", argv[i], text);
			status = EXIT_FAILED;
		}
		lg_client_resp_clear(&resp);
	}
	return status;
}
