/* SPDX-License-Identifier: Apache-2.0 */
/* One subcommand per file, dispatched from the table in main.c. */
#ifndef LG_CLI_COMMANDS_H
#define LG_CLI_COMMANDS_H

/*
 * Each command gets argv with argv[0] being the subcommand name and returns
 * the process exit status.  Usage errors print one line and return 2.
 */
int cmd_run(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_mcp(int argc, char **argv);

#endif
