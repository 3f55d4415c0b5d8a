/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the shared utilities and error type. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/encoding.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_parse_u64(void **state)
{
	uint64_t v = 0;

	assert_int_equal(lg_parse_u64("42", 0, 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(lg_parse_u64("101", 0, 100, &v), -ERANGE);
	assert_int_equal(lg_parse_u64("", 0, 100, &v), -EINVAL);
	assert_int_equal(lg_parse_u64("-1", 0, 100, &v), -EINVAL);
	assert_int_equal(lg_parse_u64(" 1", 0, 100, &v), -EINVAL);
	assert_int_equal(lg_parse_u64("1x", 0, 100, &v), -EINVAL);
	assert_int_equal(lg_parse_u64("99999999999999999999999", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(lg_parse_u64(NULL, 0, 100, &v), -EINVAL);
}

static void test_mkdir_p_and_rm_rf(void **state)
{
	char tmpl[] = "/tmp/lg-test-util-XXXXXX";
	char *dir = mkdtemp(tmpl);
	cleanup_free char *deep = NULL;
	cleanup_free char *file = NULL;
	struct stat st;
	int fd;

	assert_non_null(dir);
	deep = xasprintf("%s/a/b/c", dir);
	assert_int_equal(lg_mkdir_p(deep, 0700), 0);
	assert_int_equal(stat(deep, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(lg_mkdir_p(deep, 0700), 0); /* exists: fine */

	file = xasprintf("%s/a/file", dir);
	fd = open(file, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(lg_mkdir_p(file, 0700), -ENOTDIR); /* a file is not a directory */
	assert_int_equal(lg_mkdir_p("", 0700), -EINVAL);

	/* a symlink out of the tree is removed, never followed */
	cleanup_free char *outside = xasprintf("%s-outside", dir);
	cleanup_free char *link = xasprintf("%s/a/link", dir);
	assert_int_equal(mkdir(outside, 0700), 0);
	assert_int_equal(symlink(outside, link), 0);
	assert_int_equal(lg_rm_rf(dir), 0);
	assert_int_equal(stat(dir, &st), -1);
	assert_int_equal(stat(outside, &st), 0);
	rmdir(outside);
}

static void test_pread_exact(void **state)
{
	char tmpl[] = "/tmp/lg-test-pread-XXXXXX";
	int fd = mkstemp(tmpl);
	char buf[8];

	assert_true(fd >= 0);
	unlink(tmpl);
	assert_int_equal(write(fd, "abcdef", 6), 6);
	assert_int_equal(lg_pread_exact(fd, buf, 3, 2, 6), 0);
	assert_memory_equal(buf, "cde", 3);
	assert_int_equal(lg_pread_exact(fd, buf, 5, 2, 6), -EINVAL);
	assert_int_equal(lg_pread_exact(fd, buf, 1, UINT64_MAX, 6), -EINVAL);
	/* a size that claims more than the file holds: short read is an error */
	assert_int_equal(lg_pread_exact(fd, buf, 8, 0, 100), -EIO);
	close(fd);
}

static void test_err_chain(void **state)
{
	struct lg_err *err = NULL;

	assert_int_equal(lg_err_set(&err, ENOENT, "open `%s`", "/x"), -ENOENT);
	/* the first error wins; later ones do not overwrite it */
	assert_int_equal(lg_err_set(&err, EINVAL, "other"), -EINVAL);
	assert_int_equal(lg_err_wrap(&err, "image '%s'", "default"), -ENOENT);
	assert_string_equal(err->msg, "image 'default': open `/x`: No such file or directory");
	assert_int_equal(lg_err_code(err), -ENOENT);
	lg_err_free(&err);
	assert_null(err);
	/* an error always carries a real code: 0 is a caller's bug, read as EIO, never -1 (-EPERM)
	 */
	assert_int_equal(lg_err_msg(&err, 0, "plain"), -EIO);
	assert_string_equal(err->msg, "plain");
	assert_int_equal(err->errnum, EIO);
	assert_int_equal(lg_err_code(err), -EIO);
	lg_err_free(&err);
	assert_int_equal(lg_err_msg(&err, ENOENT, "missing"), -ENOENT);
	assert_string_equal(err->msg, "missing");
	lg_err_free(&err);
	errno = 0;
	assert_int_equal(lg_err_sys(&err, "no errno"), -EIO);
	lg_err_free(&err);
	assert_int_equal(lg_err_set(NULL, EIO, "ignored"), -EIO);
}

static void test_base64(void **state)
{
	static const struct {
		const char *plain, *b64;
	} v[] = {{"", ""},
		 {"f", "Zg=="},
		 {"fo", "Zm8="},
		 {"foo", "Zm9v"},
		 {"foob", "Zm9vYg=="},
		 {"fooba", "Zm9vYmE="},
		 {"foobar", "Zm9vYmFy"}};
	static const char *const bad[] = {"Zg=",      "Zg",	  "Z===", "Zm9v\n",
					  "Zm9v====", "Zg==Zg==", "Z!==", "=Zg="};
	uint8_t *out;
	size_t n;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *e = lg_base64_encode((const uint8_t *)v[i].plain, strlen(v[i].plain));
		assert_string_equal(e, v[i].b64);
		free(e);
		assert_int_equal(lg_base64_decode(v[i].b64, strlen(v[i].b64), &out, &n), 0);
		assert_int_equal(n, strlen(v[i].plain));
		assert_memory_equal(out, v[i].plain, n);
		free(out);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (lg_base64_decode(bad[i], strlen(bad[i]), &out, &n) == 0)
			fail_msg("'%s' decoded", bad[i]);
}

static void test_utf8(void **state)
{
	size_t n;
	char *s;

	assert_true(
	    lg_utf8_valid((const uint8_t *)"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
	assert_false(lg_utf8_valid((const uint8_t *)"\xc0\xaf", 2));	     /* overlong '/' */
	assert_false(lg_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));     /* surrogate */
	assert_false(lg_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	assert_false(lg_utf8_valid((const uint8_t *)"a\0b", 3));	     /* NUL */
	assert_false(lg_utf8_valid((const uint8_t *)"\xe2\x82", 2));	     /* cut short */
	s = lg_utf8_sanitize((const uint8_t *)"a\xff"
					      "b\0",
			     4, &n);
	assert_int_equal(n, 1 + 3 + 1 + 3);
	assert_memory_equal(s,
			    "a\xef\xbf\xbd"
			    "b\xef\xbf\xbd",
			    n);
	free(s);
}

/* A log line stays one line whatever the message quotes (plain text mode). */
static void test_log_one_line(void **state)
{
	char path[] = "/tmp/lg-test-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	char buf[256] = "";

	assert_true(fd >= 0 && saved >= 0);
	unlink(path);
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	lg_warn("host %s done", "a\nluminaguard: forged\x1b[2J\x7f");
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	assert_true(pread(fd, buf, sizeof(buf) - 1, 0) > 0);
	close(fd);
	assert_string_equal(buf, "luminaguard: warning: host a?luminaguard: forged?[2J? done\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_u64),	 cmocka_unit_test(test_mkdir_p_and_rm_rf),
	    cmocka_unit_test(test_pread_exact),	 cmocka_unit_test(test_err_chain),
	    cmocka_unit_test(test_base64),	 cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_log_one_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
