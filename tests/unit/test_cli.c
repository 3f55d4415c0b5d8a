/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of `luminaguard run` argument handling. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli/run_opts.h"

#include <stdio.h>
#include <string.h>

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

static int parse(int argc, char **argv, struct run_opts *o, char *msg, size_t n)
{
	struct lg_err *err = NULL;
	int r = run_opts_parse(argc, argv, o, &err);
	if (err != NULL) {
		snprintf(msg, n, "%s", err->msg);
		lg_err_free(&err);
	}
	return r;
}

static void test_defaults_and_command(void **state)
{
	char *argv[] = {"run", "--", "uname", "-a", NULL};
	struct run_opts o;
	char msg[256] = "";

	assert_int_equal(parse(ARGC(argv), argv, &o, msg, sizeof(msg)), 0);
	assert_int_equal(o.cpus, 1);
	assert_int_equal(o.memory_mib, 256);
	assert_int_equal(o.timeout_s, 0);
	assert_int_equal(o.accel, HV_ACCEL_AUTO);
	assert_null(o.audit_log); /* the default, DATA/audit.jsonl */
	assert_string_equal(o.command[0], "uname");
	/* options after the command belong to the command */
	assert_string_equal(o.command[1], "-a");
	assert_null(o.command[2]);
}

static void test_all_options(void **state)
{
	char *argv[] = {
	    "run",  "--cpus",	  "2",	       "--memory",    "512",	      "--timeout",
	    "30",   "--image",	  "img",       "--backend",   "qemu",	      "--accel",
	    "tcg",  "--env",	  "A=1",       "--env",	      "B_2=x=y",      "--workdir",
	    "/tmp", "--no-stdin", "--console", "--audit-log", "/tmp/a.jsonl", "--",
	    "sh",   "-c",	  "echo $A",   NULL};
	struct run_opts o;
	char msg[256] = "";

	assert_int_equal(parse(ARGC(argv), argv, &o, msg, sizeof(msg)), 0);
	assert_int_equal(o.cpus, 2);
	assert_int_equal(o.memory_mib, 512);
	assert_int_equal(o.timeout_s, 30);
	assert_string_equal(o.image, "img");
	assert_string_equal(o.backend, "qemu");
	assert_int_equal(o.accel, HV_ACCEL_TCG);
	assert_int_equal(o.n_env, 2);
	assert_string_equal(o.env[1], "B_2=x=y");
	assert_null(o.env[2]);
	assert_string_equal(o.workdir, "/tmp");
	assert_true(o.no_stdin);
	assert_true(o.console);
	assert_string_equal(o.audit_log, "/tmp/a.jsonl");
	assert_string_equal(o.command[0], "sh");
	assert_string_equal(o.command[2], "echo $A");
}

/* The command may start without "--"; its own flags are not ours. */
static void test_jail_and_net_options(void **state)
{
	char *on[] = {"run",	   "--net", "allow=pypi.org,*.pythonhosted.org",
		      "--seccomp", "log",   "--no-jail",
		      "--",	   "true",  NULL};
	char *off[] = {"run", "--net", "allow=x.org", "--net", "none", "--", "true", NULL};
	struct run_opts o;
	char msg[256] = "";

	assert_int_equal(parse(ARGC(on), on, &o, msg, sizeof(msg)), 0);
	assert_string_equal(o.net_allow, "pypi.org,*.pythonhosted.org");
	assert_int_equal(o.jail.seccomp, LG_SECCOMP_LOG);
	assert_true(o.jail.disabled);
	/* the last --net wins; the defaults are no network, jailed, strict */
	assert_int_equal(parse(ARGC(off), off, &o, msg, sizeof(msg)), 0);
	assert_null(o.net_allow);
	assert_int_equal(o.jail.seccomp, LG_SECCOMP_STRICT);
	assert_false(o.jail.disabled);
}

static void test_command_without_dashdash(void **state)
{
	char *argv[] = {"run", "--cpus", "1", "ls", "--cpus", "-l", NULL};
	struct run_opts o;
	char msg[256] = "";

	assert_int_equal(parse(ARGC(argv), argv, &o, msg, sizeof(msg)), 0);
	assert_string_equal(o.command[0], "ls");
	assert_string_equal(o.command[1], "--cpus");
}

struct bad_case {
	char *argv[6];
	const char *needle;
};

static void test_bad_flags(void **state)
{
	static const struct bad_case cases[] = {
	    {{"run", "--cpus", "0", "true", NULL}, "--cpus"},
	    {{"run", "--cpus", "65", "true", NULL}, "--cpus"},
	    {{"run", "--cpus", "two", "true", NULL}, "--cpus"},
	    {{"run", "--memory", "1", "true", NULL}, "--memory"},
	    {{"run", "--memory", "99999999999", "true", NULL}, "--memory"},
	    {{"run", "--memory", "-5", "true", NULL}, "--memory"},
	    {{"run", "--timeout", "1.5x", "true", NULL}, "--timeout"},
	    {{"run", "--accel", "warp", "true", NULL}, "--accel"},
	    {{"run", "--env", "NOEQUALS", "true", NULL}, "--env"},
	    {{"run", "--env", "1A=b", "true", NULL}, "--env"},
	    {{"run", "--env", "=b", "true", NULL}, "--env"},
	    {{"run", "--workdir", "rel/dir", "true", NULL}, "--workdir"},
	    {{"run", "--net", "allow=", "true", NULL}, "--net"},
	    {{"run", "--net", "pypi.org", "true", NULL}, "--net"},
	    {{"run", "--seccomp", "loud", "true", NULL}, "--seccomp"},
	    {{"run", "--audit-log", "", "true", NULL}, "--audit-log"},
	    {{"run", "--bogus", "true", NULL}, "unknown option"},
	    {{"run", "--cpus", NULL}, "run:"},
	    {{"run", "--", NULL}, "no command"},
	    {{"run", NULL}, "no command"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[6];
		int argc = 0;
		struct run_opts o;
		char msg[256] = "";

		while (cases[i].argv[argc] != NULL) {
			argv[argc] = cases[i].argv[argc];
			argc++;
		}
		argv[argc] = NULL;
		assert_true(parse(argc, argv, &o, msg, sizeof(msg)) < 0);
		if (strstr(msg, cases[i].needle) == NULL)
			fail_msg("case %zu: '%s' does not mention '%s'", i, msg, cases[i].needle);
		/* one line, no trailing newline */
		assert_null(strchr(msg, '\n'));
	}
}

static void test_help(void **state)
{
	char *argv[] = {"run", "--help", NULL};
	struct run_opts o;
	char msg[256] = "";

	assert_int_equal(parse(ARGC(argv), argv, &o, msg, sizeof(msg)), 0);
	assert_true(o.help);
	assert_non_null(strstr(run_usage, "--timeout"));
}

static void test_accel_names(void **state)
{
	enum hv_accel a;

	assert_int_equal(hv_accel_parse("kvm", &a), 0);
	assert_int_equal(a, HV_ACCEL_KVM);
	assert_int_equal(hv_accel_parse("auto", &a), 0);
	assert_int_equal(a, HV_ACCEL_AUTO);
	assert_true(hv_accel_parse("KVM", &a) < 0);
	assert_string_equal(hv_accel_name(HV_ACCEL_TCG), "tcg");
}

static void test_config_check(void **state)
{
	struct vm_config cfg = {.cpus = 1,
				.memory_mib = 256,
				.kernel = "k",
				.initrd = "i",
				.accel = HV_ACCEL_TCG,
				.net_fd = -1};
	struct lg_err *err = NULL;

	assert_int_equal(hv_config_check(&cfg, &err), 0);
	cfg.memory_mib = HV_MAX_MEMORY_MIB; /* a TiB: more than this host has */
	assert_true(hv_config_check(&cfg, &err) < 0);
	assert_non_null(strstr(err->msg, "exceeds"));
	lg_err_free(&err);
	cfg.memory_mib = 256;
	cfg.cpus = 0;
	assert_true(hv_config_check(&cfg, &err) < 0);
	lg_err_free(&err);
	cfg.cpus = 1;
	cfg.accel = HV_ACCEL_AUTO;
	assert_true(hv_config_check(&cfg, &err) < 0);
	lg_err_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_and_command),
	    cmocka_unit_test(test_all_options),
	    cmocka_unit_test(test_command_without_dashdash),
	    cmocka_unit_test(test_bad_flags),
	    cmocka_unit_test(test_jail_and_net_options),
	    cmocka_unit_test(test_help),
	    cmocka_unit_test(test_accel_names),
	    cmocka_unit_test(test_config_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
