/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard approvals`: out-of-band decisions over the control socket. */
#ifndef LG_CLI_COMMANDS_APPROVALS_H
#define LG_CLI_COMMANDS_APPROVALS_H

/*
 * argv[0] is "approvals".  Returns 0 on success, 1 when the server cannot
 * be reached or refuses (e.g. the request is no longer pending), 2 on a
 * usage error.
 */
int cmd_approvals(int argc, char **argv);

#endif
