/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the long-running front ends, `luminaguard mcp` and `luminaguard
 * serve`, share: the options for the policy, the audit log, approvals,
 * admission limits, the default image, the accelerator and the jail; the
 * bearer token file; and starting the approval step (policy, audit log,
 * broker, control socket).  One parser, so the two commands cannot drift.
 */
#ifndef LG_CLI_SERVER_OPTS_H
#define LG_CLI_SERVER_OPTS_H

#include "approval/approval.h"
#include "common/err.h"
#include "hv/hv.h"
#include "jail/jail.h"

#include <getopt.h>
#include <stdint.h>

struct policy;
struct audit_log;

struct lg_server_opts {
	const char *policy_file;  /* NULL: the built-in policy */
	const char *audit_file;	  /* NULL: DATA/audit.jsonl */
	const char *control_path; /* NULL: DATA/control.sock */
	uint64_t approval_timeout_s;
	unsigned decide[APPROVAL_RISKS];
	uint64_t idle_timeout_s;
	uint64_t max_sandboxes;
	uint64_t max_vcpus;	 /* 0: the default */
	uint64_t max_memory_mib; /* 0: the default */
	const char *image;	 /* NULL: "default" */
	enum hv_accel accel;
	struct jail_opts jail;
	/* --net allow=LIST: every MCP session's sandboxes' allowlist; NULL: no network. */
	const char *net_allow;
};

/* getopt_long values of the shared options; a command's own start at 256. */
enum {
	LG_SOPT_POLICY = 0x1000,
	LG_SOPT_AUDIT_LOG,
	LG_SOPT_APPROVAL_TIMEOUT,
	LG_SOPT_CONTROL_SOCKET,
	LG_SOPT_DECIDE,
	LG_SOPT_IDLE_TIMEOUT,
	LG_SOPT_MAX_SANDBOXES,
	LG_SOPT_MAX_VCPUS,
	LG_SOPT_MAX_MEMORY,
	LG_SOPT_IMAGE,
	LG_SOPT_ACCEL,
	LG_SOPT_NO_JAIL,
	LG_SOPT_SECCOMP,
	LG_SOPT_NET,
};

/* The shared entries of a command's struct option table. */
#define LG_SERVER_LONG_OPTS                                                                        \
	{"policy", required_argument, NULL, LG_SOPT_POLICY},                                       \
	    {"audit-log", required_argument, NULL, LG_SOPT_AUDIT_LOG},                             \
	    {"audit", required_argument, NULL, LG_SOPT_AUDIT_LOG},                                 \
	    {"approval-timeout", required_argument, NULL, LG_SOPT_APPROVAL_TIMEOUT},               \
	    {"control-socket", required_argument, NULL, LG_SOPT_CONTROL_SOCKET},                   \
	    {"decide", required_argument, NULL, LG_SOPT_DECIDE},                                   \
	    {"idle-timeout", required_argument, NULL, LG_SOPT_IDLE_TIMEOUT},                       \
	    {"max-sandboxes", required_argument, NULL, LG_SOPT_MAX_SANDBOXES},                     \
	    {"max-vcpus", required_argument, NULL, LG_SOPT_MAX_VCPUS},                             \
	    {"max-memory", required_argument, NULL, LG_SOPT_MAX_MEMORY},                           \
	    {"image", required_argument, NULL, LG_SOPT_IMAGE},                                     \
	    {"accel", required_argument, NULL, LG_SOPT_ACCEL},                                     \
	    {"no-jail", no_argument, NULL, LG_SOPT_NO_JAIL},                                       \
	    {"net", required_argument, NULL, LG_SOPT_NET},                                         \
	{                                                                                          \
		"seccomp", required_argument, NULL, LG_SOPT_SECCOMP                                \
	}

/* The help lines of the shared options, for a command's usage text. */
extern const char lg_server_opts_help[];

/* The defaults: approval timeout 300 s, idle 600 s, 16 sandboxes, every channel decides. */
void lg_server_opts_init(struct lg_server_opts *o);

/*
 * Records shared option c with its argument.  Returns 1 if c is one of
 * them, 0 if it is not (the command's own), -1 for a bad value, said on
 * stderr in one line ("luminaguard: CMD: ..."; the command exits 2).
 */
int lg_server_opt(struct lg_server_opts *o, const char *cmd, int c, const char *arg);

/* A bearer token: the file's first line, at least 16 characters.  New string. */
int lg_server_read_token(const char *path, char **out, struct lg_err **err);

/* The approval step of a server: what lg_gate needs, and the control socket. */
struct lg_server_approvals {
	struct policy *policy;
	struct audit_log *audit;
	struct approval_broker *broker;
	struct approval_control *ctl;
	char *control_path; /* where `luminaguard approvals` reaches this server */
};

/*
 * Loads the policy, opens the audit log, makes the broker and starts the
 * control socket.  When another server holds the default control socket,
 * takes DATA/control-PID.sock and says so.  On failure nothing is left.
 */
int lg_server_approvals_start(const struct lg_server_opts *o, const char *cmd,
			      struct lg_server_approvals *out, struct lg_err **err);
void lg_server_approvals_stop(struct lg_server_approvals *a);

#endif
