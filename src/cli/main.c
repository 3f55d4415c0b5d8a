/* SPDX-License-Identifier: Apache-2.0 */
/* The `luminaguard` command: one table of subcommands, one file each. */
#include "cli/commands.h"
#include "cli/commands_approval.h"
#include "cli/commands_approvals.h"

#include "common/env.h"
#include "common/log.h"
#include "lg-config.h"

#include <stdio.h>
#include <string.h>

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
};

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const struct command commands[] = {
    {"run", cmd_run, "run a command in a throw-away micro-VM"},
    {"ps", cmd_ps, "list the sandboxes of the running service"},
    {"kill", cmd_kill, "destroy a sandbox of the running service"},
    {"image", cmd_image, "build, import, list, verify and remove guest images"},
    {"mcp", cmd_mcp, "serve MCP (stdio or Streamable HTTP) with the approval cliff"},
    {"serve", cmd_serve, "run the sandbox service: HTTP API, MCP socket, warm pools, metrics"},
    {"approvals", cmd_approvals, "list, show, approve or deny actions waiting for a human"},
    {"audit", cmd_audit, "verify the audit log's hash chain, seal and side files"},
    {"policy", cmd_policy, "check a policy file, or show the default policy"},
    {"doctor", cmd_doctor, "say what this host can run, and why"},
    {"version", cmd_version, "print the version"},
    {"help", cmd_help, "help for a command"},
};

static void usage(FILE *out)
{
	fprintf(out, "Usage: luminaguard [-v|--verbose] COMMAND [ARGS...]\n\n"
		     "A sandbox for AI agents: commands run in throw-away micro-VMs.\n\n"
		     "Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\n`luminaguard COMMAND --help` describes a command.\n"
		     "Environment: LUMINAGUARD_HOME (data directory), LUMINAGUARD_LOG=error|warn|"
		     "info|debug,\nLUMINAGUARD_LOG_FORMAT=json, LUMINAGUARD_QEMU (QEMU binary), "
		     "LUMINAGUARD_BOOT_TIMEOUT (s).\n");
}

static int cmd_version(int argc, char **argv)
{
	printf("luminaguard %s\n", LG_VERSION);
	return 0;
}

static const struct command *find(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static int cmd_help(int argc, char **argv)
{
	const struct command *c;
	char *sub[] = {NULL, (char *)"--help", NULL};

	if (argc < 2) {
		usage(stdout);
		return 0;
	}
	c = find(argv[1]);
	if (c == NULL || c->fn == cmd_help) {
		fprintf(stderr, "luminaguard: help: unknown command '%s'\n", argv[1]);
		return 2;
	}
	sub[0] = argv[1];
	return c->fn(2, sub);
}

int main(int argc, char **argv)
{
	const struct command *c;
	int i = 1;

	/* Before anything else, and before any thread: nothing reads it later. */
	lg_env_load();
	lg_log_init();
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (cli_is_help(argv[i])) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0) {
			return cmd_version(0, NULL);
		} else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) {
			lg_log_set_level(lg_log_get_level() < LG_LOG_INFO ? LG_LOG_INFO
									  : LG_LOG_DEBUG);
		} else {
			fprintf(stderr,
				"luminaguard: unknown option '%s' (see luminaguard --help)\n",
				argv[i]);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	c = find(argv[i]);
	if (c == NULL) {
		fprintf(stderr, "luminaguard: unknown command '%s' (see luminaguard --help)\n",
			argv[i]);
		return 2;
	}
	return c->fn(argc - i, argv + i);
}
