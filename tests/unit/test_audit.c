/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the audit log: the chain, reopening, tampering, threads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "audit/audit.h"
#include "common/err.h"
#include "common/sha256.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct fixture {
	char dir[64];
	char *path;
};

static int setup(void **state)
{
	struct fixture *f = xzalloc(sizeof(*f));

	strcpy(f->dir, "/tmp/lg-test-audit-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	f->path = xasprintf("%s/audit.jsonl", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	lg_rm_rf(f->dir);
	free(f->path);
	free(f);
	return 0;
}

/* Appends n events of alternating types, numbered from `first`. */
static void append_n(struct audit_log *a, int first, int n)
{
	static const char *const types[] = {"request", "decision", "outcome"};

	for (int i = first; i < first + n; i++) {
		struct lg_err *err = NULL;
		json_t *ev = json_pack("{s:s, s:i, s:s, s:{s:s, s:[s, s]}, s:f, s:s}", "type",
				       types[i % 3], "request_id", i, "tool", "sandbox_exec",
				       "args", "command", "echo h\xc3\xa9llo \"q\"\n", "argv", "a",
				       "b", "elapsed", 0.1 * i, "decider", "policy");
		assert_non_null(ev);
		if (audit_append(a, ev, &err) < 0) {
			fprintf(stderr, "append: %s\n", err->msg);
			fail();
		}
		json_decref(ev);
	}
}

/* Removes a log and its seal, to start a new one at the same path. */
static void remove_log(const char *path)
{
	cleanup_free char *seal = xasprintf("%s.seal", path);

	unlink(path);
	unlink(seal);
}

static void write_log(const char *path, int n)
{
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;

	assert_int_equal(audit_open(path, &a, &err), 0);
	append_n(a, 1, n);
	audit_close(a);
}

static size_t verify_ok(const char *path)
{
	struct lg_err *err = NULL;
	size_t n = 0;

	if (audit_verify(path, &n, &err) < 0) {
		fprintf(stderr, "verify: %s\n", err->msg);
		fail();
	}
	return n;
}

/* Verify must fail, naming line `line` and containing `what`. */
static void verify_fails(const char *path, size_t line, const char *what)
{
	struct lg_err *err = NULL;
	size_t n = 99;
	cleanup_free char *want = xasprintf(": line %zu: ", line);

	assert_true(audit_verify(path, &n, &err) < 0);
	assert_int_equal(n, 0);
	assert_non_null(err);
	if (strstr(err->msg, want) == NULL || strstr(err->msg, what) == NULL ||
	    strstr(err->msg, path) == NULL) {
		fprintf(stderr, "error \"%s\" lacks \"%s\" or \"%s\"\n", err->msg, want, what);
		fail();
	}
	lg_err_free(&err);
}

/* The log's lines, each without its '\n'; *n gets their number. */
static char **read_lines(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	char **lines = NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;

	assert_non_null(f);
	*n = 0;
	while ((len = getline(&line, &cap, f)) > 0) {
		assert_true(line[len - 1] == '\n');
		line[len - 1] = '\0';
		lines = xrealloc(lines, (*n + 1) * sizeof(char *));
		lines[(*n)++] = xstrdup(line);
	}
	free(line);
	fclose(f);
	return lines;
}

static void write_lines(const char *path, char **lines, size_t n)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s\n", lines[i]);
	fclose(f);
}

static void free_lines(char **lines, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_append_and_verify(void **state)
{
	struct fixture *f = *state;
	char hex[LG_SHA256_HEX_LEN + 1];
	char last[LG_SHA256_HEX_LEN + 1];
	char prev[LG_SHA256_HEX_LEN + 1];
	struct lg_err *err = NULL;
	struct stat st;
	size_t n, cnt = 0;
	char **lines;

	write_log(f->path, 10);
	assert_int_equal(verify_ok(f->path), 10);

	/* 0600: the log holds what agents asked for */
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	/* each line: seq counts up, prev is the hash before, hash is over the rest */
	memset(prev, '0', LG_SHA256_HEX_LEN);
	prev[LG_SHA256_HEX_LEN] = '\0';
	lines = read_lines(f->path, &n);
	assert_int_equal(n, 10);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_loads(lines[i], 0, NULL);
		uint8_t d[LG_SHA256_LEN];
		char *canon;

		assert_non_null(e);
		assert_int_equal(json_integer_value(json_object_get(e, "seq")), i + 1);
		assert_string_equal(json_string_value(json_object_get(e, "prev")), prev);
		assert_int_equal(json_string_length(json_object_get(e, "ts")), 27);
		assert_string_equal(json_string_value(json_object_get(e, "decider")), "policy");
		assert_string_equal(
		    json_string_value(json_object_get(json_object_get(e, "args"), "command")),
		    "echo h\xc3\xa9llo \"q\"\n");
		strcpy(hex, json_string_value(json_object_get(e, "hash")));
		json_object_del(e, "hash");
		canon = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
		lg_sha256(canon, strlen(canon), d);
		free(canon);
		lg_sha256_hex(d, prev);
		assert_string_equal(hex, prev);
		/* one entry per line, ASCII only */
		for (const char *c = lines[i]; *c != '\0'; c++)
			assert_true((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f);
		json_decref(e);
	}
	assert_int_equal(audit_verify_last(f->path, &cnt, last, &err), 0);
	assert_int_equal(cnt, 10);
	assert_string_equal(last, prev);
	free_lines(lines, n);
}

static void test_empty_and_missing(void **state)
{
	struct fixture *f = *state;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	char last[LG_SHA256_HEX_LEN + 1];
	size_t n = 5;

	assert_true(audit_verify(f->path, &n, &err) < 0);
	assert_int_equal(n, 0);
	assert_non_null(strstr(err->msg, f->path));
	lg_err_free(&err);

	/* opening creates an empty log: zero entries, the all-zero hash */
	assert_int_equal(audit_open(f->path, &a, &err), 0);
	audit_close(a);
	assert_int_equal(audit_verify_last(f->path, &n, last, &err), 0);
	assert_int_equal(n, 0);
	assert_string_equal(last,
			    "0000000000000000000000000000000000000000000000000000000000000000");
}

static void test_reopen_continues(void **state)
{
	struct fixture *f = *state;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	char **lines;
	size_t n;

	write_log(f->path, 3);
	assert_int_equal(audit_open(f->path, &a, &err), 0);
	append_n(a, 4, 2);
	audit_close(a);
	assert_int_equal(audit_open(f->path, &a, &err), 0);
	append_n(a, 6, 1);
	audit_close(a);
	assert_int_equal(verify_ok(f->path), 6);
	lines = read_lines(f->path, &n);
	assert_int_equal(n, 6);
	assert_non_null(strstr(lines[3], "\"seq\":4,"));
	assert_non_null(strstr(lines[5], "\"seq\":6,"));
	free_lines(lines, n);
}

static void test_refuses_bad_events(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
	    "[]",
	    "{}",
	    "{\"type\": 1}",
	    "{\"type\": \"x\", \"seq\": 1}",
	    "{\"type\": \"x\", \"ts\": \"now\"}",
	    "{\"type\": \"x\", \"prev\": \"0\"}",
	    "{\"type\": \"x\", \"hash\": \"0\"}",
	};
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;

	assert_int_equal(audit_open(f->path, &a, &err), 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		json_t *ev = json_loads(bad[i], 0, NULL);
		assert_non_null(ev);
		assert_true(audit_append(a, ev, &err) < 0);
		assert_non_null(err);
		lg_err_free(&err);
		json_decref(ev);
	}
	/* a line too long to verify is refused, and the log stays usable */
	cleanup_free char *big = xmalloc(2 * 1024 * 1024);
	memset(big, 'x', 2 * 1024 * 1024 - 1);
	big[2 * 1024 * 1024 - 1] = '\0';
	json_t *ev = json_pack("{s:s, s:s}", "type", "request", "content", big);
	assert_int_equal(audit_append(a, ev, &err), -E2BIG);
	lg_err_free(&err);
	json_decref(ev);
	/* a NUL in a string survives the round trip through verify */
	ev = json_pack("{s:s, s:s%}", "type", "request", "content", "a\0b", (size_t)3);
	assert_int_equal(audit_append(a, ev, &err), 0);
	json_decref(ev);
	append_n(a, 1, 1);
	audit_close(a);
	assert_int_equal(verify_ok(f->path), 2);
}

/* Two writers (as two servers would be) interleave, and the chain stays whole. */
static void test_two_writers(void **state)
{
	struct fixture *f = *state;
	struct audit_log *a = NULL, *b = NULL;
	struct lg_err *err = NULL;

	assert_int_equal(audit_open(f->path, &a, &err), 0);
	assert_int_equal(audit_open(f->path, &b, &err), 0);
	for (int i = 0; i < 10; i++) {
		append_n(i % 3 == 0 ? a : b, i, 1);
	}
	audit_close(a);
	audit_close(b);
	assert_int_equal(verify_ok(f->path), 10);

	/* and two processes at once */
	pid_t pid = fork();
	assert_true(pid >= 0);
	assert_int_equal(audit_open(f->path, &a, &err), 0);
	append_n(a, pid == 0 ? 1000 : 2000, 50);
	audit_close(a);
	if (pid == 0)
		_exit(0);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(verify_ok(f->path), 110);
}

/* Rewrites the log with line `idx` (0-based) replaced by the result of edit. */
static void tamper(const char *path, size_t idx, const char *from, const char *to)
{
	size_t n;
	char **lines = read_lines(path, &n);
	char *at;
	char *edited;

	assert_true(idx < n);
	at = strstr(lines[idx], from);
	assert_non_null(at);
	edited = xasprintf("%.*s%s%s", (int)(at - lines[idx]), lines[idx], to, at + strlen(from));
	free(lines[idx]);
	lines[idx] = edited;
	write_lines(path, lines, n);
	free_lines(lines, n);
}

static void test_tamper_edit_field(void **state)
{
	struct fixture *f = *state;

	write_log(f->path, 10);
	tamper(f->path, 2, "\"decider\":\"policy\"", "\"decider\":\"human\"");
	verify_fails(f->path, 3, "\"hash\" does not match");
}

static void test_tamper_edit_number(void **state)
{
	struct fixture *f = *state;

	write_log(f->path, 10);
	tamper(f->path, 6, "\"request_id\":7", "\"request_id\":8");
	verify_fails(f->path, 7, "\"hash\" does not match");
}

static void test_tamper_formatting(void **state)
{
	struct fixture *f = *state;

	/* the same JSON spelled differently is still an edit */
	write_log(f->path, 10);
	tamper(f->path, 4, "\"decider\":", "\"decider\": ");
	verify_fails(f->path, 5, "not in canonical form");
}

static void test_tamper_delete_line(void **state)
{
	struct fixture *f = *state;
	size_t n;
	char **lines;

	write_log(f->path, 10);
	lines = read_lines(f->path, &n);
	free(lines[3]);
	memmove(&lines[3], &lines[4], (n - 4) * sizeof(char *));
	write_lines(f->path, lines, n - 1);
	free_lines(lines, n - 1);
	verify_fails(f->path, 4, "seq is 5, expected 4");

	/* the first line too */
	remove_log(f->path);
	write_log(f->path, 3);
	lines = read_lines(f->path, &n);
	write_lines(f->path, lines + 1, n - 1);
	free_lines(lines, n);
	verify_fails(f->path, 1, "seq is 2, expected 1");
}

static void test_tamper_delete_and_renumber(void **state)
{
	struct fixture *f = *state;

	/* a deleted entry with the next seq fixed up still breaks prev */
	write_log(f->path, 10);
	size_t n;
	char **lines = read_lines(f->path, &n);
	free(lines[3]);
	memmove(&lines[3], &lines[4], (n - 4) * sizeof(char *));
	write_lines(f->path, lines, n - 1);
	free_lines(lines, n - 1);
	tamper(f->path, 3, "\"seq\":5,", "\"seq\":4,");
	verify_fails(f->path, 4, "\"prev\" is not the hash of the entry before");
}

static void test_tamper_swap_lines(void **state)
{
	struct fixture *f = *state;
	size_t n;
	char **lines;
	char *t;

	write_log(f->path, 10);
	lines = read_lines(f->path, &n);
	t = lines[5];
	lines[5] = lines[6];
	lines[6] = t;
	write_lines(f->path, lines, n);
	free_lines(lines, n);
	verify_fails(f->path, 6, "seq is 7, expected 6");
}

static void test_tamper_truncate(void **state)
{
	struct fixture *f = *state;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	size_t n;
	char **lines;
	off_t cut = 0;

	write_log(f->path, 10);
	lines = read_lines(f->path, &n);
	for (size_t i = 0; i < 6; i++)
		cut += (off_t)strlen(lines[i]) + 1;
	cut += (off_t)strlen(lines[6]) / 2;
	free_lines(lines, n);
	assert_int_equal(truncate(f->path, cut), 0);
	verify_fails(f->path, 7, "incomplete last line");
	/* and the writer refuses to continue after a cut line */
	assert_true(audit_open(f->path, &a, &err) < 0);
	assert_null(a);
	assert_non_null(strstr(err->msg, "the last line is incomplete"));
	lg_err_free(&err);

	/* cut just before the newline: a whole entry, but no end */
	remove_log(f->path);
	write_log(f->path, 2);
	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(truncate(f->path, st.st_size - 1), 0);
	verify_fails(f->path, 2, "incomplete last line");
}

static void test_tamper_hash(void **state)
{
	struct fixture *f = *state;
	size_t n;
	char **lines;
	char *h;

	write_log(f->path, 10);
	lines = read_lines(f->path, &n);
	h = strstr(lines[1], "\"hash\":\"");
	assert_non_null(h);
	h += strlen("\"hash\":\"");
	h[0] = h[0] == 'a' ? 'b' : 'a';
	write_lines(f->path, lines, n);
	free_lines(lines, n);
	verify_fails(f->path, 2, "\"hash\" does not match");

	/* a hash that is not hex at all */
	remove_log(f->path);
	write_log(f->path, 3);
	lines = read_lines(f->path, &n);
	h = strstr(lines[2], "\"hash\":\"") + strlen("\"hash\":\"");
	h[0] = 'Z';
	write_lines(f->path, lines, n);
	free_lines(lines, n);
	verify_fails(f->path, 3, "\"hash\" missing or not a SHA-256");
}

static void test_tamper_other(void **state)
{
	struct fixture *f = *state;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	FILE *fp;

	/* garbage appended */
	write_log(f->path, 4);
	fp = fopen(f->path, "a");
	fprintf(fp, "{\"type\":\"request\"}\n");
	fclose(fp);
	verify_fails(f->path, 5, "\"seq\" missing");
	assert_true(audit_open(f->path, &a, &err) < 0);
	assert_non_null(strstr(err->msg, "not an audit entry"));
	lg_err_free(&err);

	/* an empty line */
	remove_log(f->path);
	write_log(f->path, 2);
	fp = fopen(f->path, "a");
	fprintf(fp, "\n");
	fclose(fp);
	verify_fails(f->path, 3, "empty line");

	/* not JSON */
	remove_log(f->path);
	write_log(f->path, 2);
	tamper(f->path, 1, "{", "[");
	verify_fails(f->path, 2, "not valid JSON");

	/* a line over 1 MiB */
	remove_log(f->path);
	write_log(f->path, 1);
	fp = fopen(f->path, "a");
	for (int i = 0; i < 1100 * 1024; i++)
		fputc('x', fp);
	fputc('\n', fp);
	fclose(fp);
	verify_fails(f->path, 2, "longer than 1 MiB");
	assert_true(audit_open(f->path, &a, &err) < 0);
	assert_non_null(strstr(err->msg, "longer than"));
	lg_err_free(&err);
}

/*
 * Removing entries at the end keeps a valid chain; the seal (path.seal,
 * rewritten on every append) is what shows it.  Issue 8: this used to pass
 * verify, and so did an emptied log.
 */
static void test_tail_truncation_seal(void **state)
{
	struct fixture *f = *state;
	struct audit_verify_result res;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	size_t n;
	char **lines;

	write_log(f->path, 5);
	assert_int_equal(audit_verify_full(f->path, &res, &err), 0);
	assert_true(res.sealed);
	assert_int_equal(res.entries, 5);
	assert_int_equal(res.seal_entries, 5);

	/* whole lines cut off the end */
	lines = read_lines(f->path, &n);
	write_lines(f->path, lines, n - 2);
	free_lines(lines, n);
	assert_true(audit_verify_full(f->path, &res, &err) < 0);
	assert_non_null(strstr(err->msg, "3 entries, but its seal says 5"));
	lg_err_free(&err);
	assert_true(audit_verify(f->path, &n, &err) < 0);
	lg_err_free(&err);
	/* and the writer will not continue after the cut, which would hide it */
	assert_true(audit_open(f->path, &a, &err) < 0);
	assert_null(a);
	assert_non_null(strstr(err->msg, "cut short"));
	lg_err_free(&err);

	/* an emptied log */
	assert_int_equal(truncate(f->path, 0), 0);
	assert_true(audit_verify_full(f->path, &res, &err) < 0);
	assert_non_null(strstr(err->msg, "0 entries, but its seal says 5"));
	lg_err_free(&err);
	assert_true(audit_open(f->path, &a, &err) < 0);
	lg_err_free(&err);
}

/* A crash between the log's write and the seal's: the seal is one behind, and that is fine. */
static void test_seal_behind_and_missing(void **state)
{
	struct fixture *f = *state;
	struct audit_verify_result res;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	cleanup_free char *seal = xasprintf("%s.seal", f->path);
	cleanup_free char *saved = xasprintf("%s.saved", f->path);

	write_log(f->path, 3);
	assert_int_equal(rename(seal, saved), 0);
	/* no seal: verify passes but says the end is unchecked; open writes one */
	assert_int_equal(audit_verify_full(f->path, &res, &err), 0);
	assert_false(res.sealed);
	assert_int_equal(res.entries, 3);
	assert_int_equal(audit_open(f->path, &a, &err), 0);
	append_n(a, 10, 1);
	audit_close(a);
	/* the old seal back: it names entry 3 of 4 */
	assert_int_equal(rename(saved, seal), 0);
	assert_int_equal(audit_verify_full(f->path, &res, &err), 0);
	assert_true(res.sealed);
	assert_int_equal(res.entries, 4);
	assert_int_equal(res.seal_entries, 3);
	/* a seal whose entry is not in the log: rewritten */
	{
		FILE *fp = fopen(seal, "w");
		assert_non_null(fp);
		fprintf(fp, "{\"entries\":2,\"hash\":\"%064d\"}\n", 7);
		fclose(fp);
	}
	assert_true(audit_verify_full(f->path, &res, &err) < 0);
	assert_non_null(strstr(err->msg, "line 2 is not the entry its seal names"));
	lg_err_free(&err);
}

/* Side files: named by their hash, checked by verify. */
static void test_blobs(void **state)
{
	struct fixture *f = *state;
	struct audit_verify_result res;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	char ref[AUDIT_BLOB_REF_LEN + 1];
	cleanup_free char *dir = audit_blob_dir(f->path);
	cleanup_free char *file = NULL;
	json_t *ev;
	FILE *fp;

	assert_int_equal(audit_open(f->path, &a, &err), 0);
	assert_int_equal(audit_put_blob(a, "hello, world", 12, ref, &err), 0);
	/* sha256("hello, world") */
	assert_string_equal(
	    ref, "sha256:09ca7e4eaa6e8ae9c7d261167129184883644d07dfba7cbfbc4c8a2e08360d5b");
	ev = json_pack("{s:s, s:s}", "type", "request", "args", ref);
	assert_int_equal(audit_append(a, ev, &err), 0);
	json_decref(ev);
	audit_close(a);
	assert_int_equal(audit_verify_full(f->path, &res, &err), 0);

	file = xasprintf("%s/%s", dir, ref + 7);
	fp = fopen(file, "w");
	assert_non_null(fp);
	fputs("hello, World", fp);
	fclose(fp);
	assert_true(audit_verify_full(f->path, &res, &err) < 0);
	assert_non_null(strstr(err->msg, "does not match its hash"));
	lg_err_free(&err);
	unlink(file);
	assert_true(audit_verify_full(f->path, &res, &err) < 0);
	assert_non_null(strstr(err->msg, "side file"));
	lg_err_free(&err);
}

struct thread_arg {
	struct audit_log *a;
	int id;
};

static void *appender(void *p)
{
	struct thread_arg *t = p;

	for (int i = 0; i < 50; i++) {
		struct lg_err *err = NULL;
		json_t *ev =
		    json_pack("{s:s, s:i, s:i}", "type", "request", "thread", t->id, "i", i);
		if (audit_append(t->a, ev, &err) < 0) {
			fprintf(stderr, "append: %s\n", err->msg);
			abort();
		}
		json_decref(ev);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fixture *f = *state;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	struct thread_arg args[4];
	pthread_t t[4];
	int seen[4][50] = {{0}};
	char **lines;
	size_t n;

	assert_int_equal(audit_open(f->path, &a, &err), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){a, i};
		assert_int_equal(pthread_create(&t[i], NULL, appender, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	audit_close(a);
	assert_int_equal(verify_ok(f->path), 200);

	/* every event is there exactly once */
	lines = read_lines(f->path, &n);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_loads(lines[i], 0, NULL);
		seen[json_integer_value(json_object_get(e, "thread"))]
		    [json_integer_value(json_object_get(e, "i"))]++;
		json_decref(e);
	}
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < 50; k++)
			assert_int_equal(seen[i][k], 1);
	free_lines(lines, n);
}

static void test_open_errors(void **state)
{
	struct fixture *f = *state;
	struct audit_log *a = NULL;
	struct lg_err *err = NULL;
	cleanup_free char *missing = xasprintf("%s/no/such/dir/audit.jsonl", f->dir);
	size_t n = 7;

	assert_true(audit_open(missing, &a, &err) < 0);
	assert_non_null(strstr(err->msg, missing));
	lg_err_free(&err);
	assert_true(audit_open(f->dir, &a, &err) < 0);
	lg_err_free(&err);
	assert_true(audit_verify(missing, &n, &err) < 0);
	assert_non_null(strstr(err->msg, "No such file"));
	lg_err_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_append_and_verify, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_and_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_continues, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refuses_bad_events, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_writers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_edit_field, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_edit_number, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_formatting, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_delete_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_delete_and_renumber, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_swap_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_truncate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_hash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tamper_other, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tail_truncation_seal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seal_behind_and_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blobs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
