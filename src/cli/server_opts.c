/* SPDX-License-Identifier: Apache-2.0 */
#include "cli/server_opts.h"

#include "audit/audit.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/util.h"
#include "host/admission.h"
#include "net/egress.h"
#include "policy/policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_APPROVAL_TIMEOUT_S 300u
#define DEFAULT_IDLE_TIMEOUT_S	   600u
#define MAX_APPROVAL_TIMEOUT_S	   86400u
#define MAX_IDLE_TIMEOUT_S	   (86400u * 7)
#define MAX_SANDBOXES		   1024u
#define MIN_TOKEN_LEN		   16u

const char lg_server_opts_help[] =
    "  --policy FILE           the approval policy (default: built in, see\n"
    "                          `luminaguard policy show`)\n"
    "  --audit-log FILE        the audit log (default: DATA/audit.jsonl; --audit too)\n"
    "  --approval-timeout S    seconds a red action waits for a human (default 300;\n"
    "                          then it is denied)\n"
    "  --decide RISK=CHANNEL[,CHANNEL...]\n"
    "                          which channels may decide a request of RISK (low,\n"
    "                          medium, high, critical or all): elicitation (an MCP\n"
    "                          client's report), cli (luminaguard approvals), tty;\n"
    "                          repeatable (default: all=elicitation,cli,tty), e.g.\n"
    "                          --decide critical=cli keeps the client out of it\n"
    "  --control-socket PATH   where `luminaguard approvals` reaches this server\n"
    "                          (default: DATA/control.sock)\n"
    "  --idle-timeout S        destroy sandboxes idle this long (default 600, 0: never)\n"
    "  --max-sandboxes N       at most N VMs at once (default 16)\n"
    "  --max-vcpus N           at most N vCPUs over all VMs (default 4 per host CPU)\n"
    "  --max-memory MIB        at most MIB of guest memory plus each VMM's overhead\n"
    "                          (192 MiB) over all VMs (default half the host's)\n"
    "  --image NAME            default guest image (default: default)\n"
    "  --accel NAME            auto, kvm or tcg\n"
    "  --seccomp LEVEL         VMM syscall filter: strict (default), log, off\n"
    "  --no-jail               run VMMs without the jailer (debugging only)\n"
    "  --net none|allow=HOST[,HOST...]\n"
    "                          network of every MCP session's sandbox (default\n"
    "                          none: no network device); allow= gives each guest\n"
    "                          an HTTP/HTTPS proxy that reaches only these hosts;\n"
    "                          any other host is a red action (approve = allowed\n"
    "                          for that sandbox)\n";

void lg_server_opts_init(struct lg_server_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->approval_timeout_s = DEFAULT_APPROVAL_TIMEOUT_S;
	o->idle_timeout_s = DEFAULT_IDLE_TIMEOUT_S;
	o->max_sandboxes = LG_ADMISSION_DEFAULT_VMS;
	o->accel = HV_ACCEL_AUTO;
	for (size_t i = 0; i < APPROVAL_RISKS; i++)
		o->decide[i] = APPROVAL_CH_ALL;
}

static int bad(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "luminaguard: %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

int lg_server_opt(struct lg_server_opts *o, const char *cmd, int c, const char *arg)
{
	struct lg_err *err = NULL;

	switch (c) {
	case LG_SOPT_POLICY:
		o->policy_file = arg;
		return 1;
	case LG_SOPT_AUDIT_LOG:
		o->audit_file = arg;
		return 1;
	case LG_SOPT_CONTROL_SOCKET:
		o->control_path = arg;
		return 1;
	case LG_SOPT_APPROVAL_TIMEOUT:
		if (lg_parse_u64(arg, 1, MAX_APPROVAL_TIMEOUT_S, &o->approval_timeout_s) < 0)
			return bad(cmd, "--approval-timeout: '%s' is not 1..%u", arg,
				   MAX_APPROVAL_TIMEOUT_S);
		return 1;
	case LG_SOPT_DECIDE:
		if (approval_decide_opt_parse(arg, o->decide, &err) < 0) {
			fprintf(stderr, "luminaguard: %s: %s\n", cmd, err->msg);
			lg_err_free(&err);
			return -1;
		}
		return 1;
	case LG_SOPT_IDLE_TIMEOUT:
		if (lg_parse_u64(arg, 0, MAX_IDLE_TIMEOUT_S, &o->idle_timeout_s) < 0)
			return bad(cmd,
				   "--idle-timeout: '%s' is not a number of seconds (at most %u)",
				   arg, MAX_IDLE_TIMEOUT_S);
		return 1;
	case LG_SOPT_MAX_SANDBOXES:
		if (lg_parse_u64(arg, 1, MAX_SANDBOXES, &o->max_sandboxes) < 0)
			return bad(cmd, "--max-sandboxes: '%s' is not 1..%u", arg, MAX_SANDBOXES);
		return 1;
	case LG_SOPT_MAX_VCPUS:
		if (lg_parse_u64(arg, 1, 65536, &o->max_vcpus) < 0)
			return bad(cmd, "--max-vcpus: '%s' is not 1..65536", arg);
		return 1;
	case LG_SOPT_MAX_MEMORY:
		if (lg_parse_u64(arg, HV_MIN_MEMORY_MIB + HV_VMM_OVERHEAD_MIB, UINT64_C(1) << 32,
				 &o->max_memory_mib) < 0)
			return bad(cmd, "--max-memory: '%s' is not a number of MiB (at least %u)",
				   arg, HV_MIN_MEMORY_MIB + HV_VMM_OVERHEAD_MIB);
		return 1;
	case LG_SOPT_IMAGE:
		o->image = arg;
		return 1;
	case LG_SOPT_ACCEL:
		if (hv_accel_parse(arg, &o->accel) < 0)
			return bad(cmd, "--accel: unknown accelerator '%s'", arg);
		return 1;
	case LG_SOPT_NO_JAIL:
		o->jail.disabled = true;
		return 1;
	case LG_SOPT_SECCOMP:
		if (lg_seccomp_level_parse(arg, &o->jail.seccomp) < 0)
			return bad(cmd, "--seccomp: '%s' is not strict, log or off", arg);
		return 1;
	case LG_SOPT_NET:
		if (lg_net_opt_parse(arg, &o->net_allow, &err) < 0) {
			fprintf(stderr, "luminaguard: %s: %s\n", cmd, err->msg);
			lg_err_free(&err);
			return -1;
		}
		return 1;
	default:
		return 0;
	}
}

int lg_server_read_token(const char *path, char **out, struct lg_err **err)
{
	cleanup_file FILE *f = fopen(path, "re");
	char buf[1024];

	if (f == NULL)
		return lg_err_sys(err, "--token-file `%s`", path);
	if (fgets(buf, sizeof(buf), f) == NULL)
		buf[0] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (strlen(buf) < MIN_TOKEN_LEN) {
		explicit_bzero(buf, sizeof(buf));
		return lg_err_msg(err, EINVAL,
				  "--token-file `%s`: the token must be at least %u characters",
				  path, MIN_TOKEN_LEN);
	}
	*out = xstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

int lg_server_approvals_start(const struct lg_server_opts *o, const char *cmd,
			      struct lg_server_approvals *out, struct lg_err **err)
{
	cleanup_free char *home = lg_home_dir();
	cleanup_free char *default_audit = NULL;
	const char *audit_file = o->audit_file;

	memset(out, 0, sizeof(*out));
	if (o->policy_file != NULL) {
		if (policy_load_file(o->policy_file, &out->policy, err) < 0)
			goto fail;
	} else {
		out->policy = policy_default();
	}
	if (audit_file == NULL) {
		if (lg_mkdir_p(home, 0700) < 0) {
			lg_err_sys(err, "create `%s`", home);
			goto fail;
		}
		default_audit = xasprintf("%s/audit.jsonl", home);
		audit_file = default_audit;
	}
	if (audit_open(audit_file, &out->audit, err) < 0)
		goto fail;
	out->broker = approval_broker_new((unsigned)o->approval_timeout_s, out->audit);
	approval_broker_set_channels(out->broker, o->decide);
	out->control_path =
	    o->control_path != NULL ? xstrdup(o->control_path) : approval_control_default_path();
	if (approval_control_start(out->broker, out->control_path, &out->ctl, err) < 0) {
		/*
		 * Another server of this user holds the default socket: take one
		 * of our own rather than fail, and say where it is.
		 */
		if (o->control_path != NULL || lg_err_code(*err) != -EADDRINUSE)
			goto fail;
		lg_err_free(err);
		free(out->control_path);
		out->control_path = xasprintf("%s/control-%d.sock", home, (int)getpid());
		if (approval_control_start(out->broker, out->control_path, &out->ctl, err) < 0)
			goto fail;
		lg_log(LG_LOG_ERROR,
		       "%s: another server has the default control socket; approvals for this one: "
		       "luminaguard approvals list --socket %s",
		       cmd, out->control_path);
	}
	return 0;
fail:
	lg_server_approvals_stop(out);
	return lg_err_code(*err);
}

void lg_server_approvals_stop(struct lg_server_approvals *a)
{
	approval_control_stop(a->ctl);
	approval_broker_free(a->broker);
	audit_close(a->audit);
	policy_free(a->policy);
	free(a->control_path);
	memset(a, 0, sizeof(*a));
}
