/* SPDX-License-Identifier: Apache-2.0 */
#include "cli/run_opts.h"

#include "common/util.h"
#include "host/sandbox.h"
#include "net/egress.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <string.h>

const char run_usage[] =
    "Usage: luminaguard run [OPTIONS] -- COMMAND [ARG...]\n"
    "\n"
    "Boots a throw-away micro-VM, runs COMMAND in it and destroys the VM.\n"
    "The command's stdout and stderr stream to ours as they are produced;\n"
    "our stdin is its stdin.  The exit status is the command's.\n"
    "\n"
    "When `luminaguard serve` runs, the command runs in a sandbox of the\n"
    "service (from its warm pool: milliseconds instead of a boot), which is\n"
    "destroyed afterwards.  Then the service's default image and policy apply,\n"
    "a terminal stdin is not read (the command's stdin is empty), and piped\n"
    "stdin is read to its end first (at most 512 KiB, within 2 s).  --net,\n"
    "--approve tty, --console, --policy, --backend, --accel, --seccomp,\n"
    "--no-jail, non-UTF-8 arguments and larger or slower stdin take the\n"
    "standalone path, as does --standalone.\n"
    "\n"
    "Options:\n"
    "  --cpus N           vCPUs (1-64, default 1)\n"
    "  --memory MIB       guest memory in MiB (64 up to the host's, default 256)\n"
    "  --timeout S        kill the command after S seconds (default: none)\n"
    "  --image NAME       guest image (default: default; see `luminaguard image list`)\n"
    "  --disk MIB         a root file system image's writable layer in MiB\n"
    "                     (16..262144, default 256); it lives in guest RAM and is\n"
    "                     gone with the sandbox; a full layer is ENOSPC in the guest\n"
    "  --user NAME        run the command as this user of the image (default: the\n"
    "                     image's default user, else root)\n"
    "  --backend NAME     hypervisor backend (default: qemu)\n"
    "  --accel NAME       auto, kvm or tcg (default auto: kvm on hardware\n"
    "                     virtualization, tcg otherwise)\n"
    "  --env K=V          set an environment variable (repeatable)\n"
    "  --workdir DIR      working directory in the guest (absolute)\n"
    "  --no-stdin         give the command an empty stdin\n"
    "  --console          copy the guest's kernel console to stderr\n"
    "  --policy FILE      the approval policy (default: built in, see\n"
    "                     `luminaguard policy show`)\n"
    "  --approve none|tty how a human approves red actions (the command, or a\n"
    "                     host not on the --net allowlist): tty asks on the\n"
    "                     terminal; none (default) refuses them\n"
    "  --approval-timeout S  seconds a red action waits for a human (default 300;\n"
    "                     no answer means no)\n"
    "  --audit-log FILE   the audit log: every command's request, the decision\n"
    "                     on it and its outcome (default: DATA/audit.jsonl, the\n"
    "                     one `luminaguard mcp` writes; see `luminaguard audit`)\n"
    "  --net none|allow=HOST[,HOST...]\n"
    "                     network (default none: no network device at all);\n"
    "                     allow= gives the guest an HTTP/HTTPS proxy\n"
    "                     (http_proxy) that reaches only these hosts: names,\n"
    "                     *.wildcards, addresses or CIDRs, each with an\n"
    "                     optional :PORT (default 80 and 443) or :*\n"
    "  --seccomp LEVEL    VMM syscall filter: strict (default), log, off\n"
    "  --no-jail          run the VMM without the jailer (debugging only)\n"
    "  --standalone       boot a VM here even when a service runs\n"
    "  -h, --help         this text\n"
    "\n"
    "Exit status: the command's; 128+N if it was killed by signal N; 124 if\n"
    "--timeout killed it; 125 if LuminaGuard itself failed or the approval\n"
    "cliff refused the command; 2 for bad usage.\n";

enum {
	OPT_CPUS = 256,
	OPT_MEMORY,
	OPT_TIMEOUT,
	OPT_IMAGE,
	OPT_BACKEND,
	OPT_ACCEL,
	OPT_ENV,
	OPT_WORKDIR,
	OPT_NO_STDIN,
	OPT_CONSOLE,
	OPT_POLICY,
	OPT_APPROVE,
	OPT_APPROVAL_TIMEOUT,
	OPT_NET,
	OPT_NO_JAIL,
	OPT_SECCOMP,
	OPT_DISK,
	OPT_USER,
	OPT_AUDIT_LOG,
	OPT_STANDALONE,
};

static const struct option long_opts[] = {
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"image", required_argument, NULL, OPT_IMAGE},
    {"backend", required_argument, NULL, OPT_BACKEND},
    {"accel", required_argument, NULL, OPT_ACCEL},
    {"env", required_argument, NULL, OPT_ENV},
    {"workdir", required_argument, NULL, OPT_WORKDIR},
    {"no-stdin", no_argument, NULL, OPT_NO_STDIN},
    {"console", no_argument, NULL, OPT_CONSOLE},
    {"policy", required_argument, NULL, OPT_POLICY},
    {"approve", required_argument, NULL, OPT_APPROVE},
    {"approval-timeout", required_argument, NULL, OPT_APPROVAL_TIMEOUT},
    {"net", required_argument, NULL, OPT_NET},
    {"no-jail", no_argument, NULL, OPT_NO_JAIL},
    {"seccomp", required_argument, NULL, OPT_SECCOMP},
    {"disk", required_argument, NULL, OPT_DISK},
    {"user", required_argument, NULL, OPT_USER},
    {"standalone", no_argument, NULL, OPT_STANDALONE},
    {"audit-log", required_argument, NULL, OPT_AUDIT_LOG},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static bool valid_env_name(const char *s, size_t n)
{
	if (n == 0 || isdigit((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return false;
	return true;
}

int run_opts_parse(int argc, char **argv, struct run_opts *o, struct lg_err **err)
{
	uint64_t v;
	int c;

	memset(o, 0, sizeof(*o));
	o->cpus = 1;
	o->memory_mib = LG_DEFAULT_MEMORY_MIB;
	o->accel = HV_ACCEL_AUTO;
	o->approval_timeout_s = 300;

	optind = 0; /* full reset, also of GNU getopt's internal state */
	opterr = 0;
	/* '+': stop at the first non-option, which starts the guest command. */
	while ((c = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_CPUS:
			if (lg_parse_u64(optarg, 1, HV_MAX_CPUS, &v) < 0)
				return lg_err_msg(err, EINVAL,
						  "--cpus: '%s' is not a number in 1..%u", optarg,
						  HV_MAX_CPUS);
			o->cpus = (unsigned)v;
			break;
		case OPT_MEMORY:
			if (lg_parse_u64(optarg, HV_MIN_MEMORY_MIB, HV_MAX_MEMORY_MIB, &v) < 0)
				return lg_err_msg(err, EINVAL,
						  "--memory: '%s' is not a size in MiB in %u..%u",
						  optarg, HV_MIN_MEMORY_MIB, HV_MAX_MEMORY_MIB);
			o->memory_mib = v;
			break;
		case OPT_TIMEOUT:
			if (lg_parse_u64(optarg, 0, LG_RUN_MAX_TIMEOUT, &v) < 0)
				return lg_err_msg(err, EINVAL,
						  "--timeout: '%s' is not a number of seconds in "
						  "0..%u",
						  optarg, LG_RUN_MAX_TIMEOUT);
			o->timeout_s = (uint32_t)v;
			break;
		case OPT_IMAGE:
			o->image = optarg;
			break;
		case OPT_BACKEND:
			o->backend = optarg;
			break;
		case OPT_ACCEL:
			if (hv_accel_parse(optarg, &o->accel) < 0)
				return lg_err_msg(err, EINVAL,
						  "--accel: unknown accelerator '%s' (auto, kvm, "
						  "tcg, hvf, whpx)",
						  optarg);
			break;
		case OPT_ENV: {
			const char *eq = strchr(optarg, '=');
			if (eq == NULL || !valid_env_name(optarg, (size_t)(eq - optarg)))
				return lg_err_msg(err, EINVAL, "--env: '%s' is not NAME=VALUE",
						  optarg);
			if (o->n_env >= LG_RUN_MAX_ENV)
				return lg_err_msg(err, EINVAL, "--env: more than %d variables",
						  LG_RUN_MAX_ENV);
			o->env[o->n_env++] = optarg;
			break;
		}
		case OPT_WORKDIR:
			if (optarg[0] != '/')
				return lg_err_msg(
				    err, EINVAL, "--workdir: '%s' is not an absolute path", optarg);
			o->workdir = optarg;
			break;
		case OPT_DISK:
			if (lg_parse_u64(optarg, HV_MIN_LAYER_MIB, HV_MAX_LAYER_MIB, &v) < 0)
				return lg_err_msg(err, EINVAL,
						  "--disk: '%s' is not a size in MiB in %u..%u",
						  optarg, HV_MIN_LAYER_MIB, HV_MAX_LAYER_MIB);
			o->disk_mib = v;
			break;
		case OPT_USER:
			if (!lg_exec_user_valid(optarg))
				return lg_err_msg(
				    err, EINVAL, "--user: '%s' is not a user name or a numeric uid",
				    optarg);
			o->user = optarg;
			break;
		case OPT_STANDALONE:
			o->standalone = true;
			break;
		case OPT_NO_STDIN:
			o->no_stdin = true;
			break;
		case OPT_CONSOLE:
			o->console = true;
			break;
		case OPT_POLICY:
			o->policy = optarg;
			break;
		case OPT_APPROVE:
			if (strcmp(optarg, "tty") != 0 && strcmp(optarg, "none") != 0)
				return lg_err_msg(err, EINVAL, "--approve: '%s' is not tty or none",
						  optarg);
			o->approve_tty = strcmp(optarg, "tty") == 0;
			break;
		case OPT_AUDIT_LOG:
			if (optarg[0] == '\0')
				return lg_err_msg(err, EINVAL, "--audit-log: empty file name");
			o->audit_log = optarg;
			break;
		case OPT_APPROVAL_TIMEOUT:
			if (lg_parse_u64(optarg, 1, 86400, &v) < 0)
				return lg_err_set(
				    err, 0, "--approval-timeout: '%s' is not 1..86400", optarg);
			o->approval_timeout_s = (uint32_t)v;
			break;
		case OPT_NET:
			if (lg_net_opt_parse(optarg, &o->net_allow, err) < 0)
				return -EINVAL;
			break;
		case OPT_NO_JAIL:
			o->jail.disabled = true;
			break;
		case OPT_SECCOMP:
			if (lg_seccomp_level_parse(optarg, &o->jail.seccomp) < 0)
				return lg_err_set(
				    err, 0, "--seccomp: '%s' is not strict, log or off", optarg);
			break;
		case 'h':
			o->help = true;
			return 0;
		case '?':
		default:
			if (optopt != 0 && optopt < 256)
				return lg_err_msg(err, EINVAL, "run: unknown option '-%c'", optopt);
			return lg_err_msg(err, EINVAL, "run: unknown option or missing value: '%s'",
					  argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return lg_err_msg(err, EINVAL,
				  "run: no command given (usage: luminaguard run [OPTIONS] -- "
				  "COMMAND [ARG...])");
	o->command = &argv[optind];
	return 0;
}
