/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard run` options, parsed apart from running them so tests can reach them. */
#ifndef LG_CLI_RUN_OPTS_H
#define LG_CLI_RUN_OPTS_H

#include "common/err.h"
#include "hv/hv.h"
#include "jail/jail.h"

#include <stdbool.h>
#include <stdint.h>

#define LG_RUN_MAX_ENV	   256
#define LG_RUN_MAX_TIMEOUT 86400u

/* run's exit statuses besides the command's own (and 128+N for signal N). */
#define LG_RUN_EXIT_USAGE    2
#define LG_RUN_EXIT_TIMEOUT  124 /* --timeout killed the command */
#define LG_RUN_EXIT_INTERNAL 125 /* LuminaGuard failed, or the approval cliff said no */

struct run_opts {
	unsigned cpus;
	uint64_t memory_mib;
	uint32_t timeout_s; /* 0 = none */
	const char *image;
	const char *backend;
	enum hv_accel accel;
	const char *workdir;
	uint64_t disk_mib;	       /* --disk; 0 = the default */
	const char *user;	       /* --user; NULL = the image's default */
	char *env[LG_RUN_MAX_ENV + 1]; /* borrowed from argv */
	size_t n_env;
	bool no_stdin;
	bool console; /* mirror the guest console to stderr */
	bool help;
	bool standalone;    /* --standalone: boot our own VM even when a service runs */
	const char *policy; /* --policy FILE, NULL: the built-in default */
	bool approve_tty;   /* --approve tty: ask on the terminal for red actions */
	uint32_t approval_timeout_s;
	const char *audit_log; /* --audit-log FILE, NULL: DATA/audit.jsonl */
	struct jail_opts jail; /* --no-jail, --seccomp */
	const char *net_allow; /* --net allow=LIST: the LIST, NULL = no network */
	char **command;	       /* borrowed from argv, NULL-terminated */
};

/*
 * Parses argv (argv[0] = "run").  Returns 0, or <0 with a one-line usage
 * error in *err.  Resets getopt state itself.
 */
int run_opts_parse(int argc, char **argv, struct run_opts *o, struct lg_err **err);

extern const char run_usage[];

#endif
