/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The approval cliff's subcommands; same contract as commands.h: argv[0] is
 * the subcommand name, the return value the exit status, usage errors print
 * one line and return 2.
 */
#ifndef LG_CLI_COMMANDS_APPROVAL_H
#define LG_CLI_COMMANDS_APPROVAL_H

/* luminaguard audit verify [FILE] */
int cmd_audit(int argc, char **argv);
/* luminaguard policy check FILE | show | classify */
int cmd_policy(int argc, char **argv);

#endif
