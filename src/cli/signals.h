/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SIGINT, SIGTERM and SIGHUP become a readable pipe (the self-pipe trick),
 * so every wait in the host can notice them, tear the VM down in order and
 * exit: a signal must never leave a QEMU process behind.
 */
#ifndef LG_CLI_SIGNALS_H
#define LG_CLI_SIGNALS_H

#include "common/err.h"

int lg_signals_install(struct lg_err **err);
/* Readable once a terminating signal arrived. */
int lg_signals_fd(void);
/* The first terminating signal caught, or 0. */
int lg_signals_caught(void);

#endif
