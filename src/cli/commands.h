/* SPDX-License-Identifier: Apache-2.0 */
/* One subcommand per file, dispatched from the table in main.c. */
#ifndef LG_CLI_COMMANDS_H
#define LG_CLI_COMMANDS_H

#include <stdbool.h>
#include <string.h>

/* -h or --help. */
static inline bool cli_is_help(const char *s)
{
	return strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0;
}

/*
 * Each command gets argv with argv[0] being the subcommand name and returns
 * the process exit status.  Usage errors print one line and return 2.
 */
int cmd_run(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_mcp(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_ps(int argc, char **argv);   /* cmd_ps.c */
int cmd_kill(int argc, char **argv); /* cmd_ps.c */

#endif
