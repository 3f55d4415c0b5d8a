/* SPDX-License-Identifier: Apache-2.0 */
/* The environment read once (common/env.h): defaults, validation, warnings, read-once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/env.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const vars[] = {
    "LUMINAGUARD_HOME",
    "XDG_DATA_HOME",
    "HOME",
    "LUMINAGUARD_LIBEXEC",
    "LUMINAGUARD_LOG",
    "LUMINAGUARD_LOG_FORMAT",
    "PATH",
    "LUMINAGUARD_CONTROL_SOCKET",
    "LUMINAGUARD_QEMU",
    "LUMINAGUARD_BOOT_TIMEOUT",
    "SOURCE_DATE_EPOCH",
};

static void clear_env(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
		unsetenv(vars[i]);
}

static size_t n_warnings(void)
{
	size_t n = 0;

	for (const char *const *w = lg_env_warnings(); *w != NULL; w++)
		n++;
	return n;
}

#define THREADS 8

static void *first_use(void *arg)
{
	const struct lg_env **out = arg;

	*out = lg_env();
	return NULL;
}

/* First: nothing has loaded yet, so these threads race to the lazy load (TSan watches). */
static void test_lazy_load_from_threads(void **state)
{
	pthread_t t[THREADS];
	const struct lg_env *seen[THREADS];

	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, first_use, &seen[i]), 0);
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_ptr_equal(seen[i], lg_env());
	}
	/* The test runs with LUMINAGUARD_BOOT_TIMEOUT=7 (tests/meson.build). */
	assert_true(lg_env()->boot_timeout_set);
	assert_int_equal(lg_env()->boot_timeout_ms, 7000);
	lg_env_load(); /* a second load changes nothing */
	assert_int_equal(lg_env()->boot_timeout_ms, 7000);
}

static void test_defaults(void **state)
{
	const struct lg_env *e;

	clear_env();
	lg_env_reload();
	e = lg_env();
	assert_null(e->home);
	assert_null(e->xdg_data_home);
	assert_null(e->user_home);
	assert_null(e->libexec);
	assert_int_equal(e->log_level, LG_LOG_WARN);
	assert_false(e->log_level_set);
	assert_false(e->log_json);
	assert_null(e->control_socket);
	assert_null(e->qemu);
	assert_string_equal(e->path, LG_ENV_DEFAULT_PATH);
	assert_int_equal(e->boot_timeout_ms, LG_ENV_BOOT_TIMEOUT_DEFAULT_S * 1000);
	assert_false(e->boot_timeout_set);
	assert_int_equal(e->source_date_epoch, -1);
	assert_int_equal(n_warnings(), 0);
}

static void test_values(void **state)
{
	const struct lg_env *e;
	char *dir;

	clear_env();
	setenv("LUMINAGUARD_HOME", "/srv/lg", 1);
	setenv("XDG_DATA_HOME", "/x/data", 1);
	setenv("HOME", "/home/u", 1);
	setenv("LUMINAGUARD_LIBEXEC", "/opt/lg/libexec", 1);
	setenv("LUMINAGUARD_LOG", "debug", 1);
	setenv("LUMINAGUARD_LOG_FORMAT", "json", 1);
	setenv("PATH", "/a:/b", 1);
	setenv("LUMINAGUARD_CONTROL_SOCKET", "/run/c.sock", 1);
	setenv("LUMINAGUARD_QEMU", "/opt/qemu", 1);
	setenv("LUMINAGUARD_BOOT_TIMEOUT", "3600", 1);
	setenv("SOURCE_DATE_EPOCH", "0", 1);
	lg_env_reload();
	e = lg_env();
	assert_string_equal(e->home, "/srv/lg");
	assert_string_equal(e->xdg_data_home, "/x/data");
	assert_string_equal(e->user_home, "/home/u");
	assert_string_equal(e->libexec, "/opt/lg/libexec");
	assert_int_equal(e->log_level, LG_LOG_DEBUG);
	assert_true(e->log_level_set);
	assert_true(e->log_json);
	assert_string_equal(e->path, "/a:/b");
	assert_string_equal(e->control_socket, "/run/c.sock");
	assert_string_equal(e->qemu, "/opt/qemu");
	assert_int_equal(e->boot_timeout_ms, 3600 * 1000);
	assert_true(e->boot_timeout_set);
	assert_int_equal(e->source_date_epoch, 0);
	assert_int_equal(n_warnings(), 0);

	/* The data directory's order: LUMINAGUARD_HOME, XDG_DATA_HOME, HOME. */
	dir = lg_home_dir();
	assert_string_equal(dir, "/srv/lg");
	free(dir);
	unsetenv("LUMINAGUARD_HOME");
	lg_env_reload();
	dir = lg_home_dir();
	assert_string_equal(dir, "/x/data/luminaguard");
	free(dir);
	unsetenv("XDG_DATA_HOME");
	lg_env_reload();
	dir = lg_home_dir();
	assert_string_equal(dir, "/home/u/.local/share/luminaguard");
	free(dir);
}

/* Read once: a change after the load is not seen until a reload. */
static void test_read_once(void **state)
{
	char *dir;

	clear_env();
	setenv("LUMINAGUARD_HOME", "/first", 1);
	lg_env_reload();
	setenv("LUMINAGUARD_HOME", "/second", 1);
	setenv("LUMINAGUARD_LOG", "debug", 1);
	dir = lg_home_dir();
	assert_string_equal(dir, "/first");
	free(dir);
	assert_false(lg_env()->log_level_set);
	lg_env_reload();
	dir = lg_home_dir();
	assert_string_equal(dir, "/second");
	free(dir);
}

/* Empty is unset; relative XDG_DATA_HOME and HOME are ignored; text is a format. */
static void test_empty_and_relative(void **state)
{
	const struct lg_env *e;

	clear_env();
	setenv("LUMINAGUARD_HOME", "", 1);
	setenv("XDG_DATA_HOME", "rel/data", 1);
	setenv("HOME", "home", 1);
	setenv("LUMINAGUARD_LIBEXEC", "", 1);
	setenv("LUMINAGUARD_LOG", "", 1);
	setenv("LUMINAGUARD_LOG_FORMAT", "text", 1);
	setenv("PATH", "", 1);
	setenv("LUMINAGUARD_CONTROL_SOCKET", "", 1);
	setenv("LUMINAGUARD_QEMU", "", 1);
	setenv("LUMINAGUARD_BOOT_TIMEOUT", "", 1);
	setenv("SOURCE_DATE_EPOCH", "", 1);
	lg_env_reload();
	e = lg_env();
	assert_null(e->home);
	assert_null(e->xdg_data_home);
	assert_null(e->user_home);
	assert_null(e->libexec);
	assert_false(e->log_level_set);
	assert_false(e->log_json);
	assert_string_equal(e->path, LG_ENV_DEFAULT_PATH);
	assert_null(e->control_socket);
	assert_null(e->qemu);
	assert_false(e->boot_timeout_set);
	assert_int_equal(e->source_date_epoch, -1);
	assert_int_equal(n_warnings(), 0);
}

/* A bad value: the default, and one line that names the variable, the value and the rule. */
static void test_bad_values(void **state)
{
	static const struct {
		const char *name, *value, *want;
	} cases[] = {
	    {"LUMINAGUARD_BOOT_TIMEOUT", "0",
	     "LUMINAGUARD_BOOT_TIMEOUT=`0` is not 1..3600 seconds; using 120"},
	    {"LUMINAGUARD_BOOT_TIMEOUT", "3601",
	     "LUMINAGUARD_BOOT_TIMEOUT=`3601` is not 1..3600 seconds; using 120"},
	    {"LUMINAGUARD_BOOT_TIMEOUT", "10s",
	     "LUMINAGUARD_BOOT_TIMEOUT=`10s` is not 1..3600 seconds; using 120"},
	    {"LUMINAGUARD_BOOT_TIMEOUT", "-5",
	     "LUMINAGUARD_BOOT_TIMEOUT=`-5` is not 1..3600 seconds; using 120"},
	    {"LUMINAGUARD_LOG", "loud",
	     "LUMINAGUARD_LOG=`loud` is not error, warn, info or debug; using warn"},
	    {"LUMINAGUARD_LOG", "DEBUG",
	     "LUMINAGUARD_LOG=`DEBUG` is not error, warn, info or debug; using warn"},
	    {"LUMINAGUARD_LOG_FORMAT", "xml",
	     "LUMINAGUARD_LOG_FORMAT=`xml` is not json or text; using text"},
	    {"SOURCE_DATE_EPOCH", "2147483648",
	     "SOURCE_DATE_EPOCH=`2147483648` is not 0..2147483647 seconds; using the current "
	     "time"},
	    /* Shown printable: a terminal escape stays out of the log. */
	    {"LUMINAGUARD_LOG", "a\x1b[2Jb\n",
	     "LUMINAGUARD_LOG=`a?[2Jb?` is not error, warn, info or debug; using warn"},
	};
	const struct lg_env *e;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		clear_env();
		setenv(cases[i].name, cases[i].value, 1);
		lg_env_reload();
		e = lg_env();
		assert_int_equal(n_warnings(), 1);
		assert_string_equal(lg_env_warnings()[0], cases[i].want);
		assert_int_equal(e->boot_timeout_ms, LG_ENV_BOOT_TIMEOUT_DEFAULT_S * 1000);
		assert_false(e->boot_timeout_set);
		assert_int_equal(e->log_level, LG_LOG_WARN);
		assert_false(e->log_level_set);
		assert_false(e->log_json);
		assert_int_equal(e->source_date_epoch, -1);
	}

	/* The boundaries are good. */
	clear_env();
	setenv("LUMINAGUARD_BOOT_TIMEOUT", "1", 1);
	setenv("SOURCE_DATE_EPOCH", "2147483647", 1);
	lg_env_reload();
	assert_int_equal(n_warnings(), 0);
	assert_int_equal(lg_env()->boot_timeout_ms, 1000);
	assert_int_equal(lg_env()->source_date_epoch, 2147483647);

	/* A long value is cut, and says so; each bad variable has its own line. */
	{
		char big[200];

		memset(big, '9', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		clear_env();
		setenv("LUMINAGUARD_BOOT_TIMEOUT", big, 1);
		setenv("LUMINAGUARD_LOG", "x", 1);
		lg_env_reload();
		assert_int_equal(n_warnings(), 2);
		for (const char *const *w = lg_env_warnings(); *w != NULL; w++)
			assert_true(strlen(*w) < 160);
		/* In the order of env.h: the level before the boot timeout. */
		assert_non_null(strstr(lg_env_warnings()[0], "LUMINAGUARD_LOG=`x`"));
		assert_non_null(strstr(lg_env_warnings()[1], "9999...` is not 1..3600"));
	}
}

/* lg_log_init() takes the level and format and logs the warnings, in that format. */
static void test_log_init_logs_warnings(void **state)
{
	char path[] = "/tmp/lg-test-env.XXXXXX";
	int fd = mkstemp(path);
	int saved = dup(2);
	char buf[4096];
	ssize_t n;

	assert_true(fd >= 0 && saved >= 0);
	clear_env();
	setenv("LUMINAGUARD_LOG_FORMAT", "json", 1);
	setenv("LUMINAGUARD_BOOT_TIMEOUT", "zero", 1);
	lg_env_reload();
	fflush(stderr);
	assert_int_equal(dup2(fd, 2), 2);
	lg_log_init();
	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "\"level\":\"warn\""));
	assert_non_null(strstr(buf, "LUMINAGUARD_BOOT_TIMEOUT=`zero` is not 1..3600 seconds"));
	assert_ptr_equal(strchr(buf, '\n'), buf + n - 1); /* one line */
	assert_int_equal(lg_log_get_level(), LG_LOG_WARN);

	clear_env();
	lg_env_reload();
	lg_log_init();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lazy_load_from_threads),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_values),
	    cmocka_unit_test(test_read_once),
	    cmocka_unit_test(test_empty_and_relative),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_log_init_logs_warnings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
