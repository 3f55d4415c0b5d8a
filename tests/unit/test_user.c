/* SPDX-License-Identifier: Apache-2.0 */
/*
 * guest/user.c: EXEC's USER resolved in /etc/passwd and /etc/group text,
 * including files a root command in the guest may have made hostile.
 */
#include "common/util.h"
#include "guest/user.h"
#include "proto/proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char passwd[] = "root:x:0:0:root:/root:/bin/bash\n"
			     "# a comment:x:5:5::/c:\n"
			     "+nis::7:7:::\n"
			     "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
			     "alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\r\n"
			     "nohome:x:1001:1001\n"
			     "relhome:x:1002:1002::home/rel:/bin/sh\n"
			     "badid:x:12a:1::/x:\n"
			     "huge:x:4294967295:1::/x:\n"
			     ":x:1003:1003::/empty-name:\n"
			     "alice:x:2000:2000::/second:\n"
			     "last:x:1004:1004::/last:/bin/sh";

static const char group[] = "root:x:0:\n"
			    "sudo:x:27:alice,bob\n"
			    "audio:x:29: bob , alice \n"
			    "alice:x:1000:\n"
			    "video:x:44:alicex,xalice\n"
			    "badgid:x:4x:alice\n"
			    "short:x:50\n"
			    "+:::alice\n"
			    "dup:x:27:alice\n"
			    "last:x:60:alice";

static int resolve(const char *spec, struct guest_user *u, struct lg_err **err)
{
	return user_resolve(spec, passwd, strlen(passwd), group, strlen(group), u, err);
}

static void test_by_name(void **state)
{
	struct guest_user u;

	assert_int_equal(resolve("alice", &u, NULL), 0);
	assert_int_equal(u.uid, 1000); /* the first entry wins */
	assert_int_equal(u.gid, 1000);
	assert_string_equal(u.name, "alice");
	assert_string_equal(u.home, "/home/alice"); /* CRLF line: no '\r' in it */
	/* gid first, then sudo, audio (spaces around names), last; not video, badgid, "+". */
	assert_int_equal(u.ngroups, 4);
	assert_int_equal(u.groups[0], 1000);
	assert_int_equal(u.groups[1], 27);
	assert_int_equal(u.groups[2], 29);
	assert_int_equal(u.groups[3], 60);
	guest_user_free(&u);

	assert_int_equal(resolve("root", &u, NULL), 0);
	assert_int_equal(u.uid, 0);
	assert_string_equal(u.home, "/root");
	assert_int_equal(u.ngroups, 1);
	guest_user_free(&u);

	/* Missing or relative home: "/". */
	assert_int_equal(resolve("nohome", &u, NULL), 0);
	assert_string_equal(u.home, "/");
	guest_user_free(&u);
	assert_int_equal(resolve("relhome", &u, NULL), 0);
	assert_string_equal(u.home, "/");
	guest_user_free(&u);
	/* No newline at the end of the file. */
	assert_int_equal(resolve("last", &u, NULL), 0);
	assert_int_equal(u.uid, 1004);
	assert_string_equal(u.home, "/last");
	guest_user_free(&u);
}

static void test_by_uid(void **state)
{
	struct guest_user u;

	assert_int_equal(resolve("1000", &u, NULL), 0);
	assert_string_equal(u.name, "alice");
	assert_int_equal(u.ngroups, 4);
	guest_user_free(&u);
	assert_int_equal(resolve("0", &u, NULL), 0);
	assert_string_equal(u.name, "root");
	guest_user_free(&u);
	/* No entry: that uid, gid the same, home "/"; no groups from /etc/group by name. */
	assert_int_equal(resolve("4242", &u, NULL), 0);
	assert_int_equal(u.uid, 4242);
	assert_int_equal(u.gid, 4242);
	assert_string_equal(u.name, "4242");
	assert_string_equal(u.home, "/");
	assert_int_equal(u.ngroups, 1);
	guest_user_free(&u);
	/* The entry with a bad uid field is no entry for uid 12. */
	assert_int_equal(resolve("12", &u, NULL), 0);
	assert_string_equal(u.name, "12");
	guest_user_free(&u);
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
	    "", "a:b", "a\nb", "4294967295", "99999999999", "12345678901", "a,b"};
	struct guest_user u;
	struct lg_err *err = NULL;

	assert_int_equal(resolve("bob", &u, &err), -ENOENT);
	assert_string_equal(err->msg, "no user 'bob' in /etc/passwd");
	lg_err_free(&err);
	/* Lines that are not entries are never matched by name. */
	assert_int_equal(resolve("badid", &u, NULL), -ENOENT);
	assert_int_equal(resolve("huge", &u, NULL), -ENOENT);
	assert_int_equal(resolve("+nis", &u, NULL), -ENOENT);
	assert_int_equal(resolve("# a comment", &u, NULL), -ENOENT);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(resolve(bad[i], &u, &err), -EINVAL);
		assert_non_null(strstr(err->msg, "bad user"));
		lg_err_free(&err);
	}
	/* No files at all (an initramfs): names are unknown, uids still work. */
	assert_int_equal(user_resolve("root", NULL, 0, NULL, 0, &u, NULL), -ENOENT);
	assert_int_equal(user_resolve("7", NULL, 0, NULL, 0, &u, NULL), 0);
	guest_user_free(&u);
}

/* Long lines, many groups, fields without end: bounded, no truncated matches. */
static void test_hostile(void **state)
{
	struct lg_buf p = {0}, g = {0};
	struct guest_user u;
	char line[64];
	char *big = xmalloc(1 << 20);

	memset(big, 'a', 1 << 20);
	lg_buf_append(&p, big, 1 << 20); /* a 1 MiB name: not "aaa...", not "a" */
	lg_buf_append(&p, ":x:5:5::/big:\n", 14);
	lg_buf_append(&p, "u:x:6:6:", 8);
	lg_buf_append(&p, big, 1 << 20); /* a 1 MiB gecos */
	lg_buf_append(&p, ":/home/u:/bin/sh\n", 17);
	lg_buf_append(&p, "::::::::::::::::\n:\n\n\n", 21);
	for (int i = 0; i < USER_MAX_GROUPS + 50; i++) {
		int n = snprintf(line, sizeof(line), "g%d:x:%d:root,u\n", i, 10000 + i);
		lg_buf_append(&g, line, (size_t)n);
	}
	assert_int_equal(
	    user_resolve("u", (const char *)p.data, p.len, (const char *)g.data, g.len, &u, NULL),
	    0);
	assert_int_equal(u.uid, 6);
	assert_string_equal(u.home, "/home/u");
	/* Capped: fewer groups, never more rights. */
	assert_int_equal(u.ngroups, USER_MAX_GROUPS);
	assert_int_equal(u.groups[0], 6);
	assert_int_equal(u.groups[1], 10000);
	guest_user_free(&u);
	assert_int_equal(user_resolve("a", (const char *)p.data, p.len, NULL, 0, &u, NULL),
			 -ENOENT);
	free(big);
	lg_buf_free(&p);
	lg_buf_free(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_by_name),
	    cmocka_unit_test(test_by_uid),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
