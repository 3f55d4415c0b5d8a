/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for image spec files (src/image/spec.c): the documented
 * example, every key's checks, the strict JSON underneath (escapes,
 * surrogates, UTF-8, numbers, trailing data), the line named in each error,
 * the bounds, and loading from a file.  Every error must be one printable
 * line "ORIGIN:LINE: ...".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "image/image.h"
#include "image/spec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char example[] =
    "{\n"
    "  \"name\": \"py\",\n"
    "  \"suite\": \"bookworm\",\n"
    "  \"packages\": [\"python3\", \"python3-pip\", \"git\", \"curl\"],\n"
    "  \"files\": [{\"src\": \"requirements.txt\", \"dst\": \"/opt/app/requirements.txt\", "
    "\"mode\": \"0644\"}],\n"
    "  \"env\": {\"PIP_DISABLE_PIP_VERSION_CHECK\": \"1\"},\n"
    "  \"workdir\": \"/opt/app\",\n"
    "  \"user\": \"agent\",\n"
    "  \"run\": [\"useradd --create-home --shell /bin/bash agent\"]\n"
    "}\n";

static void assert_one_printable_line(const char *msg)
{
	assert_non_null(msg);
	for (const char *c = msg; *c; c++)
		assert_true((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f);
}

static struct lg_image_spec *parse_ok(const char *text)
{
	struct lg_image_spec *s = NULL;
	struct lg_err *err = NULL;
	int ret = lg_image_spec_parse(text, strlen(text), "spec.json", "/base", &s, &err);

	if (ret != 0)
		fail_msg("unexpected error: %s", err->msg);
	assert_null(err);
	assert_non_null(s);
	return s;
}

/* text must fail with "spec.json:LINE: " followed by a message containing what. */
static void expect_error_n(const char *text, size_t len, unsigned line, const char *what)
{
	struct lg_image_spec *s = (void *)1;
	struct lg_err *err = NULL;
	char prefix[64];
	int ret = lg_image_spec_parse(text, len, "spec.json", "/base", &s, &err);

	if (ret != -EINVAL || err == NULL)
		fail_msg("expected an error containing \"%s\" for: %.*s", what, (int)len, text);
	assert_null(s);
	assert_int_equal(err->errnum, EINVAL);
	assert_one_printable_line(err->msg);
	snprintf(prefix, sizeof(prefix), "spec.json:%u: ", line);
	if (strncmp(err->msg, prefix, strlen(prefix)) != 0 || strstr(err->msg, what) == NULL)
		fail_msg("got \"%s\", expected \"%s...%s...\"", err->msg, prefix, what);
	lg_err_free(&err);
}

static void expect_error(const char *text, unsigned line, const char *what)
{
	expect_error_n(text, strlen(text), line, what);
}

static void test_example(void **state)
{
	struct lg_image_spec *s = parse_ok(example);

	assert_string_equal(s->name, "py");
	assert_string_equal(s->suite, "bookworm");
	assert_string_equal(s->packages[0], "python3");
	assert_string_equal(s->packages[1], "python3-pip");
	assert_string_equal(s->packages[2], "git");
	assert_string_equal(s->packages[3], "curl");
	assert_null(s->packages[4]);
	assert_int_equal(s->nfiles, 1);
	assert_string_equal(s->files[0].src, "/base/requirements.txt");
	assert_string_equal(s->files[0].dst, "/opt/app/requirements.txt");
	assert_int_equal(s->files[0].mode, 0644);
	assert_string_equal(s->env[0], "PIP_DISABLE_PIP_VERSION_CHECK=1");
	assert_null(s->env[1]);
	assert_string_equal(s->workdir, "/opt/app");
	assert_string_equal(s->user, "agent");
	assert_string_equal(s->run[0], "useradd --create-home --shell /bin/bash agent");
	assert_null(s->run[1]);
	lg_image_spec_free(s);

	/* docs/images.md carries the same example: it must parse as written there. */
	{
		FILE *f = fopen(LG_SOURCE_DIR "/docs/images.md", "r");
		char *doc = NULL, *start, *end;
		size_t cap = 0;
		ssize_t n;

		assert_non_null(f);
		n = getdelim(&doc, &cap, '\0', f);
		fclose(f);
		assert_true(n > 0);
		start = strstr(doc, "```json\n{\n  \"name\": \"py\"");
		assert_non_null(start);
		start += strlen("```json\n");
		end = strstr(start, "```");
		assert_non_null(end);
		*end = '\0';
		s = parse_ok(start);
		assert_string_equal(s->name, "py");
		assert_string_equal(s->user, "agent");
		assert_int_equal(s->nfiles, 1);
		lg_image_spec_free(s);
		free(doc);
	}
}

static void test_minimal(void **state)
{
	struct lg_image_spec *s = parse_ok(" \r\n\t{ }\n\n");

	assert_null(s->name);
	assert_null(s->suite);
	assert_non_null(s->packages);
	assert_null(s->packages[0]);
	assert_int_equal(s->nfiles, 0);
	assert_non_null(s->env);
	assert_null(s->env[0]);
	assert_null(s->workdir);
	assert_null(s->user);
	assert_non_null(s->run);
	assert_null(s->run[0]);
	lg_image_spec_free(s);

	s = parse_ok("{\"packages\": [], \"files\": [], \"env\": {}, \"run\": []}");
	assert_null(s->packages[0]);
	assert_int_equal(s->nfiles, 0);
	assert_null(s->env[0]);
	assert_null(s->run[0]);
	lg_image_spec_free(s);

	/* Not NUL-terminated: only len bytes are read. */
	{
		char buf[8] = {'{', '}', 'x', 'x', 'x', 'x', 'x', 'x'};
		struct lg_image_spec *t = NULL;
		struct lg_err *err = NULL;
		assert_int_equal(lg_image_spec_parse(buf, 2, "b", NULL, &t, &err), 0);
		lg_image_spec_free(t);
		expect_error_n(buf, 3, 1, "unexpected character 'x'");
	}
}

static void test_unknown_and_duplicate_keys(void **state)
{
	expect_error("{\n  \"name\": \"x\",\n  \"pakages\": []\n}", 3,
		     "unknown key \"pakages\" (known: name, suite, packages, files, env, workdir, "
		     "user, run)");
	/* The exact message the CLI prints. */
	{
		const char *t = "{\n\n\"pakages\": [\"git\"]}";
		struct lg_image_spec *s = NULL;
		struct lg_err *err = NULL;
		assert_int_equal(lg_image_spec_parse(t, strlen(t), "spec.json", NULL, &s, &err),
				 -EINVAL);
		assert_string_equal(err->msg, "spec.json:3: unknown key \"pakages\" (known: name, "
					      "suite, packages, files, env, workdir, user, run)");
		lg_err_free(&err);
	}
	expect_error("{\"files\": [\n{\"src\": \"a\",\n \"dst\": \"/a\",\n \"owner\": \"root\"}]}",
		     4, "unknown key \"owner\" in \"files\"[0] (known: src, dst, mode)");
	expect_error("{\"files\": [{\"src\": \"a\", \"dst\": \"/a\"},\n{\"Src\": \"a\"}]}", 2,
		     "unknown key \"Src\" in \"files\"[1]");
	expect_error("{\n\"name\": \"a\",\n\"user\": \"b\",\n\"name\": \"c\"}", 4,
		     "duplicate key \"name\" (first on line 2)");
	expect_error("{\"run\": [],\n\"run\": []}", 2, "duplicate key \"run\" (first on line 1)");
	expect_error("{\"files\": [{\"src\": \"a\",\n\"src\": \"b\", \"dst\": \"/a\"}]}", 2,
		     "duplicate key \"src\" in \"files\"[0] (first on line 1)");
	expect_error("{\"env\": {\"A\": \"1\",\n\"B\": \"2\",\n\"A\": \"3\"}}", 3,
		     "duplicate variable \"A\" in \"env\" (first on line 1)");
	/* Keys are case-sensitive and exact. */
	expect_error("{\"Name\": \"a\"}", 1, "unknown key \"Name\"");
	expect_error("{\"name \": \"a\"}", 1, "unknown key \"name \"");
	/* A hostile key is quoted printably: no second line, no terminal escape. */
	expect_error("{\"x\\n\\u001b[31mevil\": 1}", 1, "unknown key \"x\\x0a\\x1b[31mevil\"");
	expect_error("{\"a\\\"b\\\\c\": 1}", 1, "unknown key \"a\\\"b\\\\c\" (known:");
	/* Long keys are cut in the message. */
	{
		char buf[400];
		memset(buf, 'k', sizeof(buf));
		memcpy(buf, "{\"", 2);
		memcpy(buf + 300, "\": 1}", 6);
		expect_error(buf, 1, "kkk...\" (known:");
	}
}

static void test_types(void **state)
{
	expect_error("{\"name\": 7}", 1, "\"name\" must be a string, got a number");
	expect_error("{\"suite\": null}", 1, "\"suite\" must be a string, got null");
	expect_error("{\"user\": true}", 1, "\"user\" must be a string, got true");
	expect_error("{\"workdir\": false}", 1, "\"workdir\" must be a string, got false");
	expect_error("{\"name\": [\"a\"]}", 1, "\"name\" must be a string, got an array");
	expect_error("{\"name\": {}}", 1, "\"name\" must be a string, got an object");
	expect_error("{\"packages\": \"git\"}", 1,
		     "\"packages\" must be an array of strings, got a string");
	expect_error("{\"packages\": [\"git\",\n 3]}", 2,
		     "\"packages\"[1] must be a string, got a number");
	expect_error("{\"packages\": [[]]}", 1, "\"packages\"[0] must be a string, got an array");
	expect_error("{\"run\": {}}", 1, "\"run\" must be an array of strings, got an object");
	expect_error("{\"run\": [\"a\", null]}", 1, "\"run\"[1] must be a string, got null");
	expect_error("{\"files\": {}}", 1, "\"files\" must be an array of objects, got an object");
	expect_error("{\"files\": [\"a\"]}", 1, "\"files\"[0] must be an object, got a string");
	expect_error("{\"files\": [{\"src\": 1}]}", 1,
		     "\"files\"[0].src must be a string, got a number");
	expect_error(
	    "{\"files\": [{\"src\": \"a\", \"dst\": \"/a\",\n \"mode\": 420}]}", 2,
	    "\"files\"[0].mode must be a string of octal digits such as \"0644\", got a number");
	expect_error(
	    "{\"files\": [{\"src\": \"a\", \"dst\": \"/a\", \"mode\": 0644}]}", 1,
	    "\"files\"[0].mode must be a string of octal digits such as \"0644\", got a number");
	expect_error("{\"env\": [\"A=1\"]}", 1,
		     "\"env\" must be an object of strings, got an array");
	expect_error("{\"env\": {\n\"N\": 1}}", 2, "\"env\".\"N\" must be a string, got a number");
	expect_error("{\"env\": {\"N\": {}}}", 1, "\"env\".\"N\" must be a string, got an object");
	/* Numbers of every shape are read, and named. */
	expect_error("{\"name\": -12.5e+3}", 1, "got a number");
	expect_error("{\"name\": 0.5E-7}", 1, "got a number");
	expect_error("{\"name\": -}", 1, "invalid number");
	expect_error("{\"name\": 1.}", 1, "invalid number");
	expect_error("{\"name\": 1e}", 1, "invalid number");
	expect_error("{\"name\": .5}", 1, "unexpected character '.'");
	expect_error("{\"name\": tru}", 1, "unexpected character 't'");
	expect_error("{\"name\": nul}", 1, "unexpected character 'n'");
	expect_error("{\"name\": fals}", 1, "unexpected character 'f'");
	expect_error("{\"env\": {\"A\": \"\\q\"}}", 1, "invalid escape \"\\q\"");
	expect_error("{\"env\": {\"A\"\n: \n@}}", 3, "unexpected character '@'");
	lg_image_spec_free(NULL);
	expect_error("{\"name\": +1}", 1, "unexpected character '+'");
}

static void test_syntax(void **state)
{
	expect_error("", 1, "empty file: expected a JSON object");
	expect_error("\n\n  \n", 4, "empty file");
	expect_error("[]", 1, "the top level must be an object, got an array");
	expect_error("\"x\"", 1, "the top level must be an object, got a string");
	expect_error("{}\n\n{}", 3, "trailing data after the top-level object: an object");
	expect_error("{}x", 1, "unexpected character 'x'");
	expect_error("{} \x01", 1, "unexpected byte 0x01");
	expect_error("\xef\xbb\xbf{}", 1, "unexpected byte 0xef");
	expect_error("{", 1,
		     "expected a key (a string) in the top-level object, got the end of the file");
	expect_error("{\"name\"", 1, "expected \":\" after key \"name\", got the end of the file");
	expect_error("{\"name\" \"a\"}", 1, "expected \":\" after key \"name\", got a string");
	expect_error("{\"name\": \"a\" \"user\": \"b\"}", 1,
		     "expected \",\" or \"}\" in the top-level object, got a string");
	expect_error("{\"name\": \"a\",\n}", 2,
		     "trailing \",\" before \"}\" in the top-level object");
	expect_error("{,}", 1, "expected a key (a string) in the top-level object, got \",\"");
	expect_error("{\"packages\": [\"git\",]}", 1,
		     "trailing \",\" before \"]\" in \"packages\"");
	expect_error("{\"packages\": [\"git\" \"curl\"]}", 1,
		     "expected \",\" or \"]\" in \"packages\", got a string");
	expect_error("{\"packages\": [\"git\"", 1,
		     "expected \",\" or \"]\" in \"packages\", got the end");
	expect_error("{\"packages\": [", 1,
		     "\"packages\"[0] must be a string, got the end of the file");
	expect_error("{\"env\": {\"A\": \"1\",}}", 1, "trailing \",\" before \"}\" in \"env\"");
	expect_error("{\"files\": [{}]}", 1, "\"files\"[0] has no \"src\"");
	expect_error("{\"files\": [\n{\"src\": \"a\"\n}]}", 2, "\"files\"[0] has no \"dst\"");
	expect_error("{\"name\": \"abc", 1, "unterminated string");
	expect_error("{\"name\": \"abc\\", 1, "unterminated string");
	expect_error("{\"name\": \"abc\\\"}", 1, "unterminated string");
	/* The line counts only newlines outside strings; "\n" in a string is an escape. */
	expect_error("{\"run\": [\"a\\nb\",\n\n\"\"]}", 3, "\"run\"[1] is 0 bytes long");
}

static void test_strings(void **state)
{
	struct lg_image_spec *s = parse_ok(
	    "{\"run\": [\"q\\\"b\\\\s\\/n\\nt\\tr\\rb\\bf\\f\", \"\\u00e9\\u20ac\\ud83d\\ude00\", "
	    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\", \"\\u0041\\u007f\\u0001\"]}");

	assert_string_equal(s->run[0], "q\"b\\s/n\nt\tr\rb\bf\f");
	assert_string_equal(s->run[1], "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	assert_string_equal(s->run[2], "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	assert_string_equal(s->run[3], "A\x7f\x01");
	lg_image_spec_free(s);

	/* Upper-case hex too. */
	s = parse_ok("{\"run\": [\"\\u00C9\\uD83D\\uDE00\"]}");
	assert_string_equal(s->run[0], "\xc3\x89\xf0\x9f\x98\x80");
	lg_image_spec_free(s);

	expect_error("{\"run\": [\"a\\u0000b\"]}", 1,
		     "\"\\u0000\" in a string: NUL is not allowed");
	expect_error_n("{\"run\": [\"a\0b\"]}", 16, 1, "control character 0x00 in a string");
	expect_error("{\"run\": [\"a\nb\"]}", 1, "control character 0x0a in a string");
	expect_error("{\"run\": [\"a\tb\"]}", 1, "control character 0x09");
	expect_error("{\"run\": [\"\\ud800\"]}", 1, "unpaired surrogate \"\\ud800\"");
	expect_error("{\"run\": [\"\\ud800x\"]}", 1, "unpaired surrogate");
	expect_error("{\"run\": [\"\\ud800\\u0041\"]}", 1, "unpaired surrogate");
	expect_error("{\"run\": [\"\\ud800\\ud800\"]}", 1, "unpaired surrogate");
	expect_error("{\"run\": [\"\\udc00\\ud800\"]}", 1, "unpaired surrogate \"\\udc00\"");
	expect_error("{\"run\": [\"\\u12\"]}", 1, "\"\\u\" must be followed by 4 hex digits");
	expect_error("{\"run\": [\"\\u12g4\"]}", 1, "4 hex digits");
	expect_error("{\"run\": [\"\\x41\"]}", 1, "invalid escape \"\\x\" in a string");
	expect_error("{\"run\": [\"\\\xff\"]}", 1, "invalid escape in a string");
	expect_error("{\"run\": [\"\\'\"]}", 1, "invalid escape \"\\'\"");
	/* Raw bytes: not UTF-8, overlong, surrogate, past U+10FFFF, cut short. */
	expect_error("{\"run\": [\"\xff\"]}", 1, "invalid UTF-8 in a string");
	expect_error("{\n\"run\": [\"\xc0\xaf\"]}", 2, "invalid UTF-8");
	expect_error("{\"run\": [\"\xed\xa0\x80\"]}", 1, "invalid UTF-8");
	expect_error("{\"run\": [\"\xf4\x90\x80\x80\"]}", 1, "invalid UTF-8");
	expect_error("{\"run\": [\"\xe2\x82\"]}", 1, "invalid UTF-8");
	/* In a key too. */
	expect_error("{\"na\xffme\": 1}", 1, "invalid UTF-8");
}

static void test_values(void **state)
{
	struct lg_image_spec *s;

	/* name, suite, user. */
	expect_error("{\"name\": \"\"}", 1, "invalid image name \"\"");
	expect_error("{\"name\": \".hidden\"}", 1, "invalid image name \".hidden\"");
	expect_error("{\"name\": \"a/b\"}", 1, "invalid image name \"a/b\"");
	expect_error("{\"suite\": \"Bookworm\"}", 1, "invalid suite \"Bookworm\"");
	expect_error("{\"suite\": \"../x\"}", 1, "invalid suite");
	expect_error("{\"user\": \"Agent\"}", 1, "invalid user name \"Agent\"");
	expect_error("{\"user\": \"-x\"}", 1, "invalid user name");
	expect_error("{\"packages\": [\"git\", \"Git\"]}", 1,
		     "\"packages\"[1]: invalid package name \"Git\"");
	expect_error("{\"packages\": [\"-o\"]}", 1, "invalid package name \"-o\"");
	expect_error("{\"packages\": [\"g\"]}", 1, "invalid package name \"g\"");

	/* workdir and dst: absolute, no "..". */
	expect_error("{\"workdir\": \"opt/app\"}", 1,
		     "\"workdir\" \"opt/app\" must be an absolute path");
	expect_error("{\"workdir\": \"\"}", 1, "must be an absolute path");
	expect_error("{\"workdir\": \"/opt/../etc\"}", 1, "has a \"..\" component");
	expect_error("{\"workdir\": \"/..\"}", 1, "has a \"..\" component");
	s = parse_ok("{\"workdir\": \"/\"}");
	assert_string_equal(s->workdir, "/");
	lg_image_spec_free(s);
	s = parse_ok("{\"workdir\": \"/a/..b/c../...\"}");
	assert_string_equal(s->workdir, "/a/..b/c../...");
	lg_image_spec_free(s);
	expect_error("{\"files\": [{\"src\": \"a\", \"dst\": \"etc/x\"}]}", 1,
		     "\"files\"[0].dst \"etc/x\" must be an absolute path");
	expect_error("{\"files\": [{\"src\": \"a\", \"dst\": \"/etc/../../x\"}]}", 1,
		     "\"files\"[0].dst \"/etc/../../x\" has a \"..\" component");
	expect_error("{\"files\": [{\"src\": \"a\", \"dst\": \"/etc/\"}]}", 1,
		     "must name a file, not end in '/'");
	expect_error("{\"files\": [{\"src\": \"a\", \"dst\": \"/\"}]}", 1, "must name a file");
	expect_error("{\"files\": [{\"src\": \"\", \"dst\": \"/a\"}]}", 1,
		     "\"files\"[0].src is empty");

	/* src: relative to base_dir, absolute kept, ".." allowed (a host path the user chose). */
	s = parse_ok("{\"files\": [{\"dst\": \"/a\", \"src\": \"../shared/a\"},"
		     "{\"src\": \"/etc/hosts\", \"dst\": \"/etc/hosts\", \"mode\": \"4755\"},"
		     "{\"mode\": \"7\", \"src\": \"sub/b\", \"dst\": \"/b\"}]}");
	assert_int_equal(s->nfiles, 3);
	assert_string_equal(s->files[0].src, "/base/../shared/a");
	assert_int_equal(s->files[0].mode, 0);
	assert_string_equal(s->files[1].src, "/etc/hosts");
	assert_int_equal(s->files[1].mode, 04755);
	assert_string_equal(s->files[2].src, "/base/sub/b");
	assert_int_equal(s->files[2].mode, 07);
	lg_image_spec_free(s);

	/* base_dir NULL: the current directory; relative: under it. */
	{
		const char *t = "{\"files\": [{\"src\": \"x\", \"dst\": \"/x\"}]}";
		char cwd[4096];
		char *want;
		struct lg_err *err = NULL;

		assert_non_null(getcwd(cwd, sizeof(cwd)));
		assert_int_equal(lg_image_spec_parse(t, strlen(t), "s", NULL, &s, &err), 0);
		want = xasprintf("%s/x", cwd);
		assert_string_equal(s->files[0].src, want);
		free(want);
		lg_image_spec_free(s);
		assert_int_equal(lg_image_spec_parse(t, strlen(t), "s", "rel/dir", &s, &err), 0);
		want = xasprintf("%s/rel/dir/x", cwd);
		assert_string_equal(s->files[0].src, want);
		free(want);
		lg_image_spec_free(s);
	}

	/* mode: a string of octal digits, 1 to 07777. */
	s = parse_ok("{\"files\": [{\"src\": \"a\", \"dst\": \"/a\", \"mode\": \"07777\"}]}");
	assert_int_equal(s->files[0].mode, 07777);
	lg_image_spec_free(s);
	{
		static const char *const bad[] = {"0",	    "0000",  "",     "08",   "10000",
						  "000644", "0x1a4", "-644", " 644", "rw-r--r--"};
		for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
			char *t = xasprintf(
			    "{\"files\": [{\"src\": \"a\", \"dst\": \"/a\", \"mode\": \"%s\"}]}",
			    bad[i]);
			expect_error(t, 1, "is not an octal mode from \"0001\" to \"7777\"");
			free(t);
		}
	}

	/* env: names, order kept. */
	s = parse_ok(
	    "{\"env\": {\"B\": \"2\", \"_a1\": \"x=y\", \"EMPTY\": \"\", \"A\": \"\\u00e9\"}}");
	assert_string_equal(s->env[0], "B=2");
	assert_string_equal(s->env[1], "_a1=x=y");
	assert_string_equal(s->env[2], "EMPTY=");
	assert_string_equal(s->env[3], "A=\xc3\xa9");
	assert_null(s->env[4]);
	lg_image_spec_free(s);
	expect_error("{\"env\": {\"1A\": \"x\"}}", 1, "invalid variable name \"1A\" in \"env\"");
	expect_error("{\"env\": {\"A-B\": \"x\"}}", 1, "invalid variable name \"A-B\"");
	expect_error("{\"env\": {\"A=B\": \"x\"}}", 1, "invalid variable name \"A=B\"");
	expect_error("{\"env\": {\"\": \"x\"}}", 1, "invalid variable name \"\"");

	/* run: non-empty strings, in order. */
	expect_error("{\"run\": [\"\"]}", 1, "\"run\"[0] is 0 bytes long, must be 1 to 65536");
	s = parse_ok("{\"run\": [\"b\", \"a\"]}");
	assert_string_equal(s->run[0], "b");
	assert_string_equal(s->run[1], "a");
	assert_null(s->run[2]);
	lg_image_spec_free(s);
}

/* open, then "pre<i>post" for i in 0..n-1 joined by commas, then close. */
static char *many(const char *open, const char *pre, size_t n, const char *post, const char *close)
{
	size_t cap = strlen(open) + strlen(close) + n * 64 + 1, len;
	char *t = xmalloc(cap);

	len = (size_t)snprintf(t, cap, "%s", open);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			t[len++] = ',';
		len += (size_t)snprintf(t + len, cap - len, "%s%zu%s", pre, i, post);
	}
	snprintf(t + len, cap - len, "%s", close);
	return t;
}

static void test_bounds(void **state)
{
	struct lg_image_spec *s;
	char *t;

	t = many("{\"packages\": [", "\"p", LG_SPEC_PACKAGES_MAX, "\"", "]}");
	s = parse_ok(t);
	assert_string_equal(s->packages[LG_SPEC_PACKAGES_MAX - 1], "p1023");
	lg_image_spec_free(s);
	free(t);
	t = many("{\"packages\": [", "\"p", LG_SPEC_PACKAGES_MAX + 1, "\"", "]}");
	expect_error(t, 1, "\"packages\" has more than 1024 entries");
	free(t);

	t = many("{\"run\": [", "\"r", LG_SPEC_RUN_MAX + 1, "\"", "]}");
	expect_error(t, 1, "\"run\" has more than 1024 entries");
	free(t);

	t = many("{\"env\": {", "\"V", LG_SPEC_ENV_MAX, "\": \"\"", "}}");
	s = parse_ok(t);
	assert_string_equal(s->env[LG_SPEC_ENV_MAX - 1], "V1023=");
	lg_image_spec_free(s);
	free(t);
	t = many("{\"env\": {", "\"V", LG_SPEC_ENV_MAX + 1, "\": \"\"", "}}");
	expect_error(t, 1, "\"env\" has more than 1024 variables");
	free(t);

	t = many("{\"files\": [", "{\"src\": \"a\", \"dst\": \"/f", LG_SPEC_FILES_MAX, "\"}", "]}");
	s = parse_ok(t);
	assert_int_equal(s->nfiles, LG_SPEC_FILES_MAX);
	lg_image_spec_free(s);
	free(t);
	t = many("{\"files\": [", "{\"src\": \"a\", \"dst\": \"/f", LG_SPEC_FILES_MAX + 1, "\"}",
		 "]}");
	expect_error(t, 1, "\"files\" has more than 1024 entries");
	free(t);

	/* Lengths: a path, an environment value, a command, a variable name. */
	{
		char *big = xmalloc(LG_SPEC_RUN_LEN_MAX + 2);

		memset(big, 'a', LG_SPEC_RUN_LEN_MAX + 1);
		big[0] = '/';
		big[LG_SPEC_PATH_MAX + 1] = '\0';
		t = xasprintf("{\"workdir\": \"%s\"}", big);
		expect_error(t, 1, "\"workdir\" is 4096 bytes long, at most 4095");
		free(t);
		t = xasprintf("{\"files\": [{\"src\": \"a\", \"dst\": \"%s\"}]}", big);
		expect_error(t, 1, "\"files\"[0].dst is 4096 bytes long");
		free(t);
		/* A relative src within the bound that the base directory pushes past it. */
		big[LG_SPEC_PATH_MAX - 2] = '\0';
		t = xasprintf("{\"files\": [{\"src\": \"%s\", \"dst\": \"/a\"}]}", big + 1);
		expect_error(t, 1, "\"files\"[0].src is 4098 bytes long as an absolute path");
		free(t);
		big[LG_SPEC_PATH_MAX - 2] = 'a';

		memset(big, 'a', LG_SPEC_RUN_LEN_MAX + 1);
		big[LG_SPEC_ENV_VAL_MAX + 1] = '\0';
		t = xasprintf("{\"env\": {\"V\": \"%s\"}}", big);
		expect_error(t, 1, "\"env\".\"V\" is 32769 bytes long, at most 32768");
		free(t);
		big[LG_SPEC_ENV_VAL_MAX + 1] = 'a';
		big[LG_SPEC_ENV_KEY_MAX + 1] = '\0';
		t = xasprintf("{\"env\": {\"%s\": \"\"}}", big);
		expect_error(t, 1, "invalid variable name \"aaaa");
		free(t);
		big[LG_SPEC_ENV_KEY_MAX + 1] = 'a';
		big[LG_SPEC_RUN_LEN_MAX] = '\0';
		t = xasprintf("{\"run\": [\"%s\"]}", big);
		s = parse_ok(t);
		lg_image_spec_free(s);
		free(t);
		big[LG_SPEC_RUN_LEN_MAX] = 'a';
		big[LG_SPEC_RUN_LEN_MAX + 1] = '\0';
		t = xasprintf("{\"run\": [\"%s\"]}", big);
		expect_error(t, 1, "\"run\"[0] is 65537 bytes long, must be 1 to 65536");
		free(t);
		free(big);
	}

	/* The whole text: at most LG_SPEC_FILE_MAX. */
	{
		size_t n = LG_SPEC_FILE_MAX + 1;
		char *huge = xmalloc(n);
		struct lg_err *err = NULL;

		memset(huge, ' ', n);
		huge[0] = '{';
		huge[n - 1] = '}';
		assert_int_equal(lg_image_spec_parse(huge, n, "big.json", NULL, &s, &err), -EFBIG);
		assert_null(s);
		assert_string_equal(err->msg,
				    "big.json: 1048577 bytes, a spec file holds at most 1048576");
		lg_err_free(&err);
		assert_int_equal(lg_image_spec_parse(huge + 1, n - 1, "big.json", NULL, &s, &err),
				 -EINVAL);
		assert_non_null(strstr(err->msg, "the top level must be an object, got \"}\""));
		lg_err_free(&err);
		free(huge);
	}
}

static void test_validators(void **state)
{
	static const char *const good_pkgs[] = {"git",	   "python3", "python3-pip", "g++",
						"libc6.1", "0ad",     "xz-utils"};
	static const char *const bad_pkgs[] = {"",    "g",   "Git", "-git",    "+x",	   ".x",
					       "a b", "a_b", "a/b", "a:amd64", "\xc3\xa9t"};
	char name[200];

	for (size_t i = 0; i < ARRAY_SIZE(good_pkgs); i++)
		assert_true(lg_package_name_valid(good_pkgs[i]));
	for (size_t i = 0; i < ARRAY_SIZE(bad_pkgs); i++)
		assert_false(lg_package_name_valid(bad_pkgs[i]));
	assert_false(lg_package_name_valid(NULL));
	memset(name, 'a', sizeof(name));
	name[LG_PACKAGE_NAME_MAX] = '\0';
	assert_true(lg_package_name_valid(name));
	name[LG_PACKAGE_NAME_MAX] = 'a';
	name[LG_PACKAGE_NAME_MAX + 1] = '\0';
	assert_false(lg_package_name_valid(name));

	assert_true(lg_suite_name_valid("bookworm"));
	assert_true(lg_suite_name_valid("stable"));
	assert_true(lg_suite_name_valid("noble"));
	assert_true(lg_suite_name_valid("bookworm-backports"));
	assert_true(lg_suite_name_valid("12"));
	assert_true(lg_suite_name_valid("x"));
	assert_false(lg_suite_name_valid(""));
	assert_false(lg_suite_name_valid(NULL));
	assert_false(lg_suite_name_valid("Bookworm"));
	assert_false(lg_suite_name_valid("-x"));
	assert_false(lg_suite_name_valid(".x"));
	assert_false(lg_suite_name_valid("a/b"));
	assert_false(lg_suite_name_valid("a_b"));
	name[LG_SUITE_NAME_MAX] = '\0';
	assert_true(lg_suite_name_valid(name));
	name[LG_SUITE_NAME_MAX] = 'a';
	name[LG_SUITE_NAME_MAX + 1] = '\0';
	assert_false(lg_suite_name_valid(name));

	assert_true(lg_user_name_valid("agent"));
	assert_true(lg_user_name_valid("_apt"));
	assert_true(lg_user_name_valid("a"));
	assert_true(lg_user_name_valid("www-data"));
	assert_true(lg_user_name_valid("u2"));
	assert_false(lg_user_name_valid(""));
	assert_false(lg_user_name_valid(NULL));
	assert_false(lg_user_name_valid("2u"));
	assert_false(lg_user_name_valid("-u"));
	assert_false(lg_user_name_valid("Root"));
	assert_false(lg_user_name_valid("a.b"));
	assert_false(lg_user_name_valid("a b"));
	assert_false(lg_user_name_valid("a:b"));
	name[LG_USER_NAME_MAX] = '\0';
	assert_true(lg_user_name_valid(name));
	name[LG_USER_NAME_MAX] = 'a';
	name[LG_USER_NAME_MAX + 1] = '\0';
	assert_false(lg_user_name_valid(name));
}

static void test_package_list(void **state)
{
	struct lg_err *err = NULL;
	char **v = (void *)1;

	assert_int_equal(lg_package_list_parse("git", &v, &err), 0);
	assert_string_equal(v[0], "git");
	assert_null(v[1]);
	lg_strv_free(v);
	assert_int_equal(lg_package_list_parse("python3, python3-pip ,git,\tcurl", &v, &err), 0);
	assert_string_equal(v[0], "python3");
	assert_string_equal(v[1], "python3-pip");
	assert_string_equal(v[2], "git");
	assert_string_equal(v[3], "curl");
	assert_null(v[4]);
	lg_strv_free(v);

	static const struct {
		const char *csv, *msg;
	} bad[] = {
	    {"", "empty package name in the list \"\""},
	    {" ", "empty package name in the list \" \""},
	    {"git,", "empty package name in the list \"git,\""},
	    {",git", "empty package name"},
	    {"git,,curl", "empty package name"},
	    {"git,Curl", "invalid package name \"Curl\" (Debian names"},
	    {"git;rm -rf /", "invalid package name \"git;rm -rf /\""},
	    {"a\nb", "invalid package name \"a\\x0ab\""},
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		v = (void *)1;
		assert_int_equal(lg_package_list_parse(bad[i].csv, &v, &err), -EINVAL);
		assert_null(v);
		assert_one_printable_line(err->msg);
		if (strstr(err->msg, bad[i].msg) == NULL)
			fail_msg("got \"%s\", expected \"%s\"", err->msg, bad[i].msg);
		lg_err_free(&err);
	}
	{
		char *csv = many("", "p", LG_SPEC_PACKAGES_MAX, "", "");
		assert_int_equal(lg_package_list_parse(csv, &v, &err), 0);
		lg_strv_free(v);
		free(csv);
		csv = many("", "p", LG_SPEC_PACKAGES_MAX + 1, "", "");
		assert_int_equal(lg_package_list_parse(csv, &v, &err), -EINVAL);
		assert_non_null(strstr(err->msg, "more than 1024 packages"));
		lg_err_free(&err);
		free(csv);
	}
}

static void write_file(const char *path, const char *text, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(lg_write_all(fd, text, n), (ssize_t)n);
	close(fd);
}

static void test_load(void **state)
{
	char dir[] = "/tmp/lg-test-spec-XXXXXX";
	struct lg_image_spec *s = NULL;
	struct lg_err *err = NULL;
	char *path, *want, *fifo;

	assert_non_null(mkdtemp(dir));
	path = xasprintf("%s/spec.json", dir);
	write_file(path, example, strlen(example));
	assert_int_equal(lg_image_spec_load(path, &s, &err), 0);
	want = xasprintf("%s/requirements.txt", dir);
	assert_string_equal(s->files[0].src, want);
	free(want);
	lg_image_spec_free(s);

	/* Relative to the current directory: the spec's directory made absolute. */
	{
		char cwd[4096];
		assert_non_null(getcwd(cwd, sizeof(cwd)));
		assert_int_equal(chdir("/tmp"), 0);
		assert_int_equal(lg_image_spec_load(path + strlen("/tmp/"), &s, &err), 0);
		want = xasprintf("%s/requirements.txt", dir);
		assert_string_equal(s->files[0].src, want);
		free(want);
		lg_image_spec_free(s);
		assert_int_equal(chdir(dir), 0);
		assert_int_equal(lg_image_spec_load("spec.json", &s, &err), 0);
		want = xasprintf("%s/./requirements.txt", dir);
		assert_string_equal(s->files[0].src, want);
		free(want);
		lg_image_spec_free(s);
		assert_int_equal(chdir(cwd), 0);
	}

	/* The error names the file as given. */
	write_file(path, "{\n\"pakages\": []}", 16);
	assert_int_equal(lg_image_spec_load(path, &s, &err), -EINVAL);
	assert_null(s);
	want = xasprintf("%s:2: unknown key \"pakages\"", path);
	assert_true(strncmp(err->msg, want, strlen(want)) == 0);
	free(want);
	lg_err_free(&err);

	/* Exactly 1 MiB loads; one byte more does not. */
	{
		size_t n = LG_SPEC_FILE_MAX;
		char *big = xmalloc(n + 1);
		memset(big, '\n', n + 1);
		big[0] = '{';
		big[n - 1] = '}';
		write_file(path, big, n);
		assert_int_equal(lg_image_spec_load(path, &s, &err), 0);
		lg_image_spec_free(s);
		big[n - 1] = '\n';
		big[n] = '}';
		write_file(path, big, n + 1);
		assert_int_equal(lg_image_spec_load(path, &s, &err), -EFBIG);
		assert_non_null(
		    strstr(err->msg, "1048577 bytes, a spec file holds at most 1048576"));
		lg_err_free(&err);
		free(big);
	}

	assert_int_equal(lg_image_spec_load(dir, &s, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "not a regular file"));
	lg_err_free(&err);
	/* A fifo is refused at once, not read forever. */
	fifo = xasprintf("%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(lg_image_spec_load(fifo, &s, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "not a regular file"));
	lg_err_free(&err);
	unlink(fifo);
	free(fifo);
	unlink(path);
	assert_int_equal(lg_image_spec_load(path, &s, &err), -ENOENT);
	assert_one_printable_line(err->msg);
	lg_err_free(&err);
	free(path);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_example),
	    cmocka_unit_test(test_minimal),
	    cmocka_unit_test(test_unknown_and_duplicate_keys),
	    cmocka_unit_test(test_types),
	    cmocka_unit_test(test_syntax),
	    cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_values),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_validators),
	    cmocka_unit_test(test_package_list),
	    cmocka_unit_test(test_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
