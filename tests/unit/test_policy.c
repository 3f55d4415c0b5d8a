/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the approval cliff's policy: the default, every matcher, parse errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "policy/policy.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------- */

static struct policy *load(const char *text)
{
	struct policy *p = NULL;
	struct lg_err *err = NULL;

	if (policy_parse(text, strlen(text), &p, &err) < 0) {
		fprintf(stderr, "unexpected parse error: %s\n", err->msg);
		lg_err_free(&err);
		fail();
	}
	return p;
}

/* Classifies tool/args/ctx (JSON texts or NULL) and checks the decision. */
static void expect(const struct policy *p, const char *tool, const char *args, const char *ctx,
		   enum policy_verdict v, enum policy_risk r, const char *rule)
{
	json_t *a = args ? json_loads(args, JSON_ALLOW_NUL, NULL) : NULL;
	json_t *c = ctx ? json_loads(ctx, 0, NULL) : NULL;
	struct policy_decision d = {0};

	if (args != NULL)
		assert_non_null(a);
	if (ctx != NULL)
		assert_non_null(c);
	policy_classify(p, tool, a, c, &d);
	if (d.verdict != v || d.risk != r || strcmp(d.rule, rule) != 0) {
		fprintf(stderr, "%s %s %s: got %s %s %s, want %s %s %s\n", tool ? tool : "(null)",
			args ? args : "", ctx ? ctx : "", policy_verdict_name(d.verdict),
			policy_risk_name(d.risk), d.rule, policy_verdict_name(v),
			policy_risk_name(r), rule);
		fail();
	}
	assert_non_null(d.reason);
	assert_true(strlen(d.reason) > 0);
	policy_decision_clear(&d);
	json_decref(a);
	json_decref(c);
}

/* A one-field policy: rule "m" is green when args' FIELD matches MATCHER. */
static struct policy *one(const char *field, const char *matcher)
{
	cleanup_free char *text = xasprintf(
	    "{\"version\": 1, \"rules\": [{\"name\": \"m\", \"tool\": \"t\", \"match\": {\"%s\": "
	    "%s}, \"verdict\": \"green\", \"risk\": \"low\"}]}",
	    field, matcher);
	return load(text);
}

/* Does args (JSON text) match the one-field policy? */
static bool hit(const struct policy *p, const char *args)
{
	json_t *a = json_loads(args, JSON_ALLOW_NUL, NULL);
	struct policy_decision d = {0};
	bool green;

	assert_non_null(a);
	policy_classify(p, "t", a, NULL, &d);
	green = d.verdict == POLICY_GREEN;
	policy_decision_clear(&d);
	json_decref(a);
	return green;
}

static bool glob_hit(const char *pattern, const char *field, const char *value)
{
	cleanup_free char *m = xasprintf("{\"glob\": \"%s\"}", pattern);
	cleanup_free char *a = xasprintf("{\"%s\": \"%s\"}", field, value);
	struct policy *p = one(field, m);
	bool r = hit(p, a);

	policy_free(p);
	return r;
}

#define G    POLICY_GREEN
#define R    POLICY_RED
#define LOW  POLICY_RISK_LOW
#define MED  POLICY_RISK_MEDIUM
#define HIGH POLICY_RISK_HIGH

/* ---- the default policy -------------------------------------------------------- */

static const struct {
	const char *tool, *args, *ctx;
	enum policy_verdict v;
	enum policy_risk r;
	const char *rule;
} default_cases[] = {
    /* in-VM work: green */
    {"sandbox_create", "{\"cpus\": 2, \"memory\": 512}", NULL, G, LOW, "create"},
    {"sandbox_exec", "{\"sandbox_id\": \"s1\", \"command\": \"ls -la /\"}", "{}", G, LOW, "exec"},
    {"sandbox_exec", "{\"sandbox_id\": \"s1\", \"argv\": [\"python3\", \"-c\", \"print(1)\"]}",
     NULL, G, LOW, "exec"},
    {"sandbox_run", "{\"command\": \"make -j4\", \"cpus\": 4}", NULL, G, LOW, "exec"},
    {"sandbox_exec", "{\"command\": \"rmdir x; firm -rf\"}", NULL, G, LOW, "exec"},
    /* destructive-looking, but inside the disposable VM: green, logged as medium */
    {"sandbox_exec", "{\"command\": \"rm -rf /\"}", NULL, G, MED, "exec-destructive-in-vm"},
    {"sandbox_exec", "{\"command\": \"cd /tmp && rm -fr build\"}", NULL, G, MED,
     "exec-destructive-in-vm"},
    {"sandbox_exec", "{\"argv\": [\"rm\", \"-r\", \"/home\"]}", NULL, G, MED,
     "exec-destructive-in-vm"},
    {"sandbox_run", "{\"command\": \"sudo mkfs.ext4 /dev/vdb\"}", NULL, G, MED,
     "exec-destructive-in-vm"},
    {"sandbox_exec", "{\"command\": \"dd if=/dev/zero of=/dev/vda bs=1M\"}", NULL, G, MED,
     "exec-destructive-in-vm"},
    {"sandbox_exec", "{\"command\": \":(){ :|:& };:\"}", NULL, G, MED, "exec-destructive-in-vm"},
    {"sandbox_fs_read", "{\"sandbox_id\": \"s1\", \"path\": \"/etc/passwd\"}", NULL, G, LOW,
     "fs-in-vm"},
    {"sandbox_fs_write", "{\"sandbox_id\": \"s1\", \"path\": \"/etc/hosts\", \"content\": \"x\"}",
     "{\"host_mount\": false}", G, LOW, "fs-in-vm"},
    {"sandbox_fs_list", "{\"sandbox_id\": \"s1\", \"path\": \"/\"}", NULL, G, LOW, "fs-in-vm"},
    {"sandbox_list", "{}", NULL, G, LOW, "list"},
    {"sandbox_list", NULL, NULL, G, LOW, "list"},
    {"sandbox_destroy", "{\"sandbox_id\": \"s1\"}", "{\"sandbox_dirty\": false}", G, LOW,
     "destroy-clean"},
    /* luminaguard run's throw-away sandbox, through the service's API */
    {"sandbox_destroy", "{\"sandbox_id\": \"s1\"}",
     "{\"sandbox_dirty\": true, \"sandbox_ephemeral\": true}", G, LOW, "destroy-ephemeral"},
    /* what crosses the boundary: red */
    {"sandbox_fs_write", "{\"path\": \"/mnt/host/x\", \"content\": \"x\"}",
     "{\"host_mount\": true}", R, HIGH, "host-mount-write"},
    {"sandbox_exec", "{\"command\": \"ls\"}", "{\"host_mount\": true}", R, HIGH,
     "host-mount-write"},
    {"sandbox_run", "{\"command\": \"rm -rf /\"}", "{\"host_mount\": true}", R, HIGH,
     "host-mount-write"},
    {"sandbox_destroy", "{\"sandbox_id\": \"s1\"}", "{\"sandbox_dirty\": true}", R, MED,
     "destroy-dirty"},
    {"sandbox_destroy", "{\"sandbox_id\": \"s1\"}",
     "{\"sandbox_dirty\": true, \"sandbox_ephemeral\": false}", R, MED, "destroy-dirty"},
    /* the server did not say the sandbox is clean: it may hold work */
    {"sandbox_destroy", "{\"sandbox_id\": \"s1\"}", NULL, R, MED, "destroy-dirty"},
    {"sandbox_destroy", "{\"sandbox_id\": \"s1\"}", "{\"sandbox_dirty\": 0}", R, MED,
     "destroy-dirty"},
    {"net_connect", "{\"host\": \"example.com\", \"port\": 443}", NULL, R, HIGH, "net-connect"},
    {"host_write", "{\"path\": \"/home/u/x\"}", NULL, R, HIGH, "host-write"},
    {"fs_export", "{\"path\": \"/out/report.pdf\"}", NULL, R, MED, "fs-export"},
    {"tool_call", "{\"server\": \"gh\", \"tool\": \"list_issues\", \"destructive\": false}", NULL,
     G, LOW, "tool-call-safe"},
    {"tool_call", "{\"server\": \"gh\", \"tool\": \"delete_repo\", \"destructive\": true}", NULL, R,
     HIGH, "tool-call"},
    /* MCP's destructiveHint defaults to true: an unmarked tool may destroy */
    {"tool_call", "{\"server\": \"gh\", \"tool\": \"x\"}", NULL, R, HIGH, "tool-call"},
    {"tool_call", "{\"destructive\": \"false\"}", NULL, R, HIGH, "tool-call"},
    /* unknown actions: red */
    {"frobnicate", "{}", NULL, R, HIGH, "default"},
    {"sandbox_exec2", "{\"command\": \"ls\"}", NULL, R, HIGH, "default"},
    {"SANDBOX_EXEC", "{\"command\": \"ls\"}", NULL, R, HIGH, "default"},
    {"", NULL, NULL, R, HIGH, "default"},
    {NULL, NULL, NULL, R, HIGH, "default"},
};

static void test_default_rules(void **state)
{
	struct policy *p = policy_default();

	for (size_t i = 0; i < ARRAY_SIZE(default_cases); i++)
		expect(p, default_cases[i].tool, default_cases[i].args, default_cases[i].ctx,
		       default_cases[i].v, default_cases[i].r, default_cases[i].rule);
	policy_free(p);
}

/* Every rule of the default has a case above: a new rule cannot go untested. */
static void test_default_every_rule_tested(void **state)
{
	json_t *doc = json_loads(policy_default_text(), JSON_REJECT_DUPLICATES, NULL);
	struct policy *p = policy_default();
	json_t *rule;
	size_t i;

	assert_non_null(doc);
	assert_int_equal(json_array_size(json_object_get(doc, "rules")), policy_rule_count(p));
	json_array_foreach(json_object_get(doc, "rules"), i, rule)
	{
		const char *name = json_string_value(json_object_get(rule, "name"));
		bool seen = false;
		for (size_t k = 0; k < ARRAY_SIZE(default_cases) && !seen; k++)
			seen = strcmp(default_cases[k].rule, name) == 0;
		if (!seen)
			fprintf(stderr, "default rule %s has no test case\n", name);
		assert_true(seen);
	}
	/* the default entry is red/high */
	expect(p, "nothing-knows-this", NULL, NULL, R, HIGH, "default");
	policy_free(p);
	json_decref(doc);
}

static void test_empty_policy_is_all_red(void **state)
{
	struct policy *p = load("{\"version\": 1, \"rules\": []}");

	expect(p, "sandbox_list", "{}", NULL, R, HIGH, "default");
	expect(p, "sandbox_exec", "{\"command\": \"true\"}", NULL, R, HIGH, "default");
	policy_free(p);
	p = load(
	    "{\"version\": 1, \"rules\": [], \"default\": {\"risk\": \"critical\", \"reason\": "
	    "\"ask\", \"verdict\": \"red\", \"comment\": \"c\"}}");
	expect(p, "sandbox_list", "{}", NULL, R, POLICY_RISK_CRITICAL, "default");
	policy_free(p);
}

/* ---- matchers ------------------------------------------------------------------ */

static void test_glob(void **state)
{
	/* ** crosses directories; "/ **" at the end also covers the directory itself */
	assert_true(glob_hit("/etc/**", "f", "/etc/passwd"));
	assert_true(glob_hit("/etc/**", "f", "/etc/ssh/sshd_config"));
	assert_true(glob_hit("/etc/**", "f", "/etc/"));
	assert_true(glob_hit("/etc/**", "f", "/etc"));
	assert_false(glob_hit("/etc/**", "f", "/etcetera"));
	assert_false(glob_hit("/etc/**", "f", "/usr/etc/x"));
	assert_false(glob_hit("/etc/**", "f", ""));
	/* * stays within one component, as with FNM_PATHNAME */
	assert_true(glob_hit("/tmp/*.txt", "f", "/tmp/a.txt"));
	assert_true(glob_hit("/tmp/*.txt", "f", "/tmp/.txt"));
	assert_false(glob_hit("/tmp/*.txt", "f", "/tmp/a/b.txt"));
	assert_false(glob_hit("/tmp/*", "f", "/tmp/a/b"));
	assert_false(glob_hit("/tmp/*", "f", "/tmp"));
	assert_true(glob_hit("*", "f", "anything at all"));
	assert_false(glob_hit("*", "f", "a/b"));
	/* "** /" is zero or more whole directories */
	assert_true(glob_hit("a/**/b", "f", "a/b"));
	assert_true(glob_hit("a/**/b", "f", "a/x/b"));
	assert_true(glob_hit("a/**/b", "f", "a/x/y/z/b"));
	assert_false(glob_hit("a/**/b", "f", "a/xb"));
	assert_false(glob_hit("a/**/b", "f", "ab"));
	assert_true(glob_hit("**/*.pem", "f", "key.pem"));
	assert_true(glob_hit("**/*.pem", "f", "/home/u/.ssh/key.pem"));
	assert_false(glob_hit("**/*.pem", "f", "/home/u/key.pem.bak"));
	/* ** not next to a slash: any bytes, slashes included */
	assert_true(glob_hit("a**b", "f", "a/x/b"));
	assert_true(glob_hit("a**b", "f", "ab"));
	/* ? and classes: one byte, never '/' */
	assert_true(glob_hit("/dev/sd?", "f", "/dev/sda"));
	assert_false(glob_hit("/dev/sd?", "f", "/dev/sd"));
	assert_false(glob_hit("a?b", "f", "a/b"));
	assert_true(glob_hit("/dev/sd[a-c]", "f", "/dev/sdb"));
	assert_false(glob_hit("/dev/sd[a-c]", "f", "/dev/sdd"));
	assert_true(glob_hit("/dev/sd[!a-c]", "f", "/dev/sdd"));
	assert_true(glob_hit("/dev/sd[^a-c]", "f", "/dev/sdd"));
	assert_false(glob_hit("a[!x]b", "f", "a/b"));
	assert_false(glob_hit("a[/]b", "f", "a/b"));
	assert_true(glob_hit("[]]", "f", "]"));
	assert_true(glob_hit("[a-]", "f", "-"));
	/* a backslash makes the next byte literal */
	assert_true(glob_hit("a\\\\*", "f", "a*"));
	assert_false(glob_hit("a\\\\*", "f", "ab"));
	/* the whole string must match */
	assert_false(glob_hit("/etc", "f", "/etc/passwd"));
	assert_false(glob_hit("etc/*", "f", "/etc/passwd"));
	/* patterns with many stars stay linear: no backtracking blow-up */
	assert_false(
	    glob_hit("**a**a**a**a**a**a**a**a**a**a**b", "f",
		     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

/* "path" and "cwd" are normalized lexically before any matcher sees them */
static void test_path_normalized(void **state)
{
	assert_true(glob_hit("/etc/**", "path", "/tmp/../etc/passwd"));
	assert_true(glob_hit("/etc/**", "path", "//etc///passwd"));
	assert_true(glob_hit("/etc/**", "path", "/./etc/./x/../passwd"));
	assert_true(glob_hit("/etc/**", "path", "/../../etc/shadow"));
	assert_true(glob_hit("/etc/**", "path", "/etc/."));
	assert_true(glob_hit("/etc/**", "cwd", "/etc/../etc"));
	assert_false(glob_hit("/etc/**", "path", "/etc/../tmp/x"));
	assert_true(glob_hit("/", "path", "/a/.."));
	/* a relative path is seen from /, the guest agent's working directory */
	assert_true(glob_hit("/a/c", "path", "a/./b/../c"));
	assert_true(glob_hit("/x", "path", "../x"));
	assert_true(glob_hit("/x", "path", "../a/../../x"));
	assert_true(glob_hit("/", "path", "a/.."));
	assert_true(glob_hit("/", "path", ""));
	assert_true(glob_hit("/etc/**", "path", "etc/x"));
	assert_true(glob_hit("/etc/**", "cwd", "./etc"));
	assert_true(glob_hit("/a/b", "path", "/a/b/c/.."));
	assert_true(glob_hit("/ab", "path", "/a/../ab"));
	/* other fields are matched as given */
	assert_false(glob_hit("/etc/**", "file", "/tmp/../etc/passwd"));

	struct policy *p = one("path", "{\"prefix\": \"/etc/\"}");
	assert_true(hit(p, "{\"path\": \"//etc/passwd\"}"));
	assert_false(hit(p, "{\"path\": \"/etc\"}"));
	policy_free(p);
	p = one("path", "{\"equals\": \"/a/b\"}");
	assert_true(hit(p, "{\"path\": \"/a//b/\"}"));
	assert_false(hit(p, "{\"path\": 7}"));
	policy_free(p);
}

static void test_regex(void **state)
{
	struct policy *p = one("command", "{\"regex\": \"^ls( |$)\"}");

	assert_true(hit(p, "{\"command\": \"ls\"}"));
	assert_true(hit(p, "{\"command\": \"ls -la\"}"));
	assert_false(hit(p, "{\"command\": \"lsblk\"}"));
	assert_false(hit(p, "{\"command\": \" ls\"}"));
	assert_false(hit(p, "{\"command\": \"als\"}"));
	policy_free(p);

	/* unanchored: anywhere in the string */
	p = one("command", "{\"regex\": \"rm +-rf +/( |$)\"}");
	assert_true(hit(p, "{\"command\": \"rm -rf /\"}"));
	assert_true(hit(p, "{\"command\": \"true; rm  -rf / --no-preserve-root\"}"));
	assert_false(hit(p, "{\"command\": \"rm -rf /tmp\"}"));
	/* a NUL does not end the string early */
	assert_true(hit(p, "{\"command\": \"echo \\u0000; rm -rf /\"}"));
	/* argv is joined with spaces when there is no command */
	assert_true(hit(p, "{\"argv\": [\"rm\", \"-rf\", \"/\"]}"));
	assert_true(hit(p, "{\"argv\": [\"sh\", \"-c\", \"rm -rf /\"]}"));
	assert_false(hit(p, "{\"argv\": [\"rm\", \"-rf\", \"/tmp\"]}"));
	assert_false(hit(p, "{\"argv\": [\"rm\", 1, \"/\"]}"));
	assert_false(hit(p, "{\"argv\": \"rm -rf /\"}"));
	/* command, when present, is what rules see */
	assert_false(hit(p, "{\"command\": \"ls\", \"argv\": [\"rm\", \"-rf\", \"/\"]}"));
	policy_free(p);

	/* the joined argv is not seen under any other name */
	/* many repetitions side by side are fine; only nesting multiplies */
	cleanup_free char *many = xmalloc(2000);
	strcpy(many, "{\"regex\": \"^");
	for (int i = 0; i < 300; i++)
		strcat(many, "a+");
	strcat(many, "$\"}");
	p = one("command", many);
	cleanup_free char *as = xmalloc(400);
	strcpy(as, "{\"command\": \"");
	for (int i = 0; i < 320; i++)
		strcat(as, "a");
	strcat(as, "\"}");
	assert_true(hit(p, as));
	assert_false(hit(p, "{\"command\": \"aaa\"}"));
	policy_free(p);
	p = one("command", "{\"regex\": \"^((x{1,9}){1,9})+[{]+a{2}$\"}");
	assert_true(hit(p, "{\"command\": \"xx{{aa\"}"));
	policy_free(p);

	p = one("argv", "{\"regex\": \"rm\"}");
	assert_false(hit(p, "{\"argv\": [\"rm\"]}"));
	policy_free(p);
}

static void test_lengths(void **state)
{
	struct policy *p = one("content", "{\"max_len\": 3}");

	assert_true(hit(p, "{\"content\": \"\"}"));
	assert_true(hit(p, "{\"content\": \"abc\"}"));
	assert_false(hit(p, "{\"content\": \"abcd\"}"));
	/* bytes, not characters: é is two */
	assert_false(hit(p, "{\"content\": \"ab\\u00e9\"}"));
	assert_true(hit(p, "{\"content\": [1, 2, 3]}"));
	assert_false(hit(p, "{\"content\": [1, 2, 3, 4]}"));
	/* a type the matcher does not apply to does not match */
	assert_false(hit(p, "{\"content\": 1}"));
	assert_false(hit(p, "{\"content\": {}}"));
	assert_false(hit(p, "{\"content\": null}"));
	assert_false(hit(p, "{}"));
	policy_free(p);

	p = one("content", "{\"min_len\": 2, \"max_len\": 2}");
	assert_false(hit(p, "{\"content\": \"a\"}"));
	assert_true(hit(p, "{\"content\": \"ab\"}"));
	assert_false(hit(p, "{\"content\": \"abc\"}"));
	policy_free(p);

	p = one("content", "{\"max_len\": 0}");
	assert_true(hit(p, "{\"content\": \"\"}"));
	assert_true(hit(p, "{\"content\": []}"));
	assert_false(hit(p, "{\"content\": \"x\"}"));
	policy_free(p);
}

static void test_numbers(void **state)
{
	struct policy *p = one("cpus", "{\"min\": 1, \"max\": 4}");

	assert_true(hit(p, "{\"cpus\": 1}"));
	assert_true(hit(p, "{\"cpus\": 4}"));
	assert_true(hit(p, "{\"cpus\": 2.5}"));
	assert_false(hit(p, "{\"cpus\": 0}"));
	assert_false(hit(p, "{\"cpus\": 5}"));
	assert_false(hit(p, "{\"cpus\": 4.000001}"));
	assert_false(hit(p, "{\"cpus\": -9223372036854775807}"));
	assert_false(hit(p, "{\"cpus\": \"2\"}"));
	assert_false(hit(p, "{\"cpus\": true}"));
	assert_false(hit(p, "{}"));
	policy_free(p);

	p = one("memory", "{\"max\": 0.5}");
	assert_true(hit(p, "{\"memory\": 0}"));
	assert_false(hit(p, "{\"memory\": 1}"));
	policy_free(p);

	/* exact for large integers, where a double would round */
	p = one("n", "{\"max\": 9007199254740993}");
	assert_true(hit(p, "{\"n\": 9007199254740993}"));
	assert_false(hit(p, "{\"n\": 9007199254740994}"));
	policy_free(p);
}

static void test_equals_exists_prefix(void **state)
{
	struct policy *p = one("env", "{\"equals\": {\"A\": [1, \"x\"]}}");

	assert_true(hit(p, "{\"env\": {\"A\": [1, \"x\"]}}"));
	assert_false(hit(p, "{\"env\": {\"A\": [1, \"x\"], \"B\": 1}}"));
	assert_false(hit(p, "{}"));
	policy_free(p);

	p = one("v", "{\"equals\": null}");
	assert_true(hit(p, "{\"v\": null}"));
	assert_false(hit(p, "{}"));
	policy_free(p);

	/* JSON's 1 and 1.0 are different values */
	p = one("v", "{\"equals\": 1}");
	assert_true(hit(p, "{\"v\": 1}"));
	assert_false(hit(p, "{\"v\": 1.0}"));
	assert_false(hit(p, "{\"v\": \"1\"}"));
	policy_free(p);

	p = one("stdin", "{\"exists\": true}");
	assert_true(hit(p, "{\"stdin\": \"\"}"));
	assert_true(hit(p, "{\"stdin\": null}"));
	assert_false(hit(p, "{}"));
	policy_free(p);

	p = one("stdin", "{\"exists\": false}");
	assert_false(hit(p, "{\"stdin\": \"x\"}"));
	assert_true(hit(p, "{}"));
	policy_free(p);

	p = one("image", "{\"prefix\": \"debian\"}");
	assert_true(hit(p, "{\"image\": \"debian\"}"));
	assert_true(hit(p, "{\"image\": \"debian-12\"}"));
	assert_false(hit(p, "{\"image\": \"debia\"}"));
	assert_false(hit(p, "{\"image\": [\"debian\"]}"));
	policy_free(p);

	/* every matcher of an object must hold */
	p = one("image", "{\"prefix\": \"deb\", \"max_len\": 6, \"regex\": \"n$\"}");
	assert_true(hit(p, "{\"image\": \"debian\"}"));
	assert_false(hit(p, "{\"image\": \"debianx\"}"));
	assert_false(hit(p, "{\"image\": \"debia\"}"));
	policy_free(p);

	/* matcher type mismatches: glob and regex only see strings */
	p = one("x", "{\"glob\": \"*\"}");
	assert_false(hit(p, "{\"x\": 1}"));
	assert_false(hit(p, "{\"x\": [\"a\"]}"));
	assert_true(hit(p, "{\"x\": \"\"}"));
	policy_free(p);
	p = one("x", "{\"regex\": \".*\"}");
	assert_false(hit(p, "{\"x\": false}"));
	assert_false(hit(p, "{\"x\": {\"a\": \"b\"}}"));
	policy_free(p);
}

static void test_any_not(void **state)
{
	struct policy *p =
	    one("path", "{\"any\": [{\"glob\": \"/etc/**\"}, {\"prefix\": \"/boot\"}]}");

	assert_true(hit(p, "{\"path\": \"/etc/x\"}"));
	assert_true(hit(p, "{\"path\": \"/boot/vmlinuz\"}"));
	assert_false(hit(p, "{\"path\": \"/tmp/x\"}"));
	policy_free(p);

	p = one("path", "{\"not\": {\"prefix\": \"/tmp/\"}}");
	assert_false(hit(p, "{\"path\": \"/tmp/x\"}"));
	assert_true(hit(p, "{\"path\": \"/etc/x\"}"));
	/* not of a string matcher holds for a missing field, and for a non-string */
	assert_true(hit(p, "{}"));
	assert_true(hit(p, "{\"path\": 3}"));
	policy_free(p);

	p = one("path", "{\"exists\": true, \"not\": {\"any\": [{\"prefix\": \"/tmp/\"}, "
			"{\"prefix\": \"/var/tmp/\"}]}}");
	assert_false(hit(p, "{}"));
	assert_false(hit(p, "{\"path\": \"/var/tmp/x\"}"));
	assert_true(hit(p, "{\"path\": \"/var/x\"}"));
	policy_free(p);
}

static void test_context_and_tools(void **state)
{
	struct policy *p = load(
	    "{\"version\": 1, \"rules\": ["
	    " {\"name\": \"ctx\", \"tool\": \"*\", \"context\": {\"trusted\": {\"equals\": true}},"
	    "  \"verdict\": \"green\", \"risk\": \"low\", \"reason\": \"trusted session\"},"
	    " {\"name\": \"both\", \"tool\": [\"a\", \"b\"], \"match\": {\"x\": {\"equals\": 1}},"
	    "  \"context\": {\"y\": {\"equals\": 2}}, \"verdict\": \"green\", \"risk\": "
	    "\"medium\"},"
	    " {\"name\": \"a-first\", \"tool\": \"a\", \"verdict\": \"red\", \"risk\": \"high\"},"
	    " {\"name\": \"a-second\", \"tool\": \"a\", \"verdict\": \"green\", \"risk\": \"low\"}"
	    "]}");

	expect(p, "anything", NULL, "{\"trusted\": true}", G, LOW, "ctx");
	expect(p, "anything", NULL, "{\"trusted\": 1}", R, HIGH, "default");
	/* context facts are not arguments, nor the other way round */
	expect(p, "anything", "{\"trusted\": true}", NULL, R, HIGH, "default");
	expect(p, "b", "{\"x\": 1}", "{\"y\": 2}", G, MED, "both");
	expect(p, "b", "{\"x\": 1}", "{\"y\": 3}", R, HIGH, "default");
	expect(p, "b", "{\"x\": 1}", NULL, R, HIGH, "default");
	expect(p, "b", "{\"y\": 2}", "{\"x\": 1}", R, HIGH, "default");
	/* first match wins */
	expect(p, "a", "{\"x\": 1}", "{\"y\": 2}", G, MED, "both");
	expect(p, "a", "{}", NULL, R, HIGH, "a-first");
	/* arguments that are not an object are no arguments */
	expect(p, "a", "[1]", "[2]", R, HIGH, "a-first");
	policy_free(p);

	/* reason defaults to naming the rule */
	p = load("{\"version\": 1, \"rules\": [{\"name\": \"r\", \"tool\": \"t\", \"verdict\": "
		 "\"red\", \"risk\": \"critical\", \"comment\": \"why\"}]}");
	struct policy_decision d;
	policy_classify(p, "t", NULL, NULL, &d);
	assert_int_equal(d.risk, POLICY_RISK_CRITICAL);
	assert_string_equal(d.reason, "rule r");
	policy_decision_clear(&d);
	policy_free(p);
}

static void test_names(void **state)
{
	assert_string_equal(policy_verdict_name(POLICY_GREEN), "green");
	assert_string_equal(policy_verdict_name(POLICY_RED), "red");
	assert_string_equal(policy_risk_name(POLICY_RISK_LOW), "low");
	assert_string_equal(policy_risk_name(POLICY_RISK_MEDIUM), "medium");
	assert_string_equal(policy_risk_name(POLICY_RISK_HIGH), "high");
	assert_string_equal(policy_risk_name(POLICY_RISK_CRITICAL), "critical");
}

/* ---- parse errors -------------------------------------------------------------- */

#define RULE_OK	   "{\"name\": \"ok\", \"tool\": \"t\", \"verdict\": \"green\", \"risk\": \"low\"}"
#define RULES(...) "{\"version\": 1, \"rules\": [" __VA_ARGS__ "]}"
#define MATCH(m)                                                                                   \
	RULES(RULE_OK ", {\"name\": \"m\", \"tool\": \"t\", \"match\": {\"command\": " m           \
		      "}, \"verdict\": \"red\", \"risk\": \"high\"}")

static const struct {
	const char *text;
	const char *msg; /* the error message must contain this */
} bad_cases[] = {
    {"", "policy: line 1"},
    {"{\"version\": 1, \"rules\": [}", "policy: line 1 column"},
    {"[]", "policy: document: must be a JSON object"},
    {"{\"rules\": []}", "policy: version: missing"},
    {"{\"version\": 2, \"rules\": []}", "policy: version: must be 1"},
    {"{\"version\": \"1\", \"rules\": []}", "policy: version: must be 1"},
    {"{\"version\": 1}", "policy: rules: missing"},
    {"{\"version\": 1, \"rules\": {}}", "policy: rules: must be an array"},
    {"{\"version\": 1, \"rules\": [], \"rule\": []}", "policy: rule: unknown key"},
    {"{\"version\": 1, \"version\": 1, \"rules\": []}", "duplicate object key"},
    {"{\"version\": 1, \"rules\": [], \"default\": {\"verdict\": \"green\"}}",
     "policy: default.verdict: must be \"red\""},
    {"{\"version\": 1, \"rules\": [], \"default\": {\"risk\": \"huge\"}}",
     "policy: default.risk: must be \"low\""},
    {"{\"version\": 1, \"rules\": [], \"default\": {\"why\": \"x\"}}",
     "policy: default.why: unknown key"},
    {"{\"version\": 1, \"rules\": [], \"default\": \"red\"}", "policy: default: must be an object"},
    {"{\"version\": 1, \"rules\": [], \"default\": {\"reason\": \"\"}}",
     "policy: default.reason: must be a non-empty string"},
    {RULES("1"), "policy rule 0: rule: must be an object"},
    {RULES(RULE_OK ", {\"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\"}"),
     "policy rule 1: name: missing"},
    {RULES("{\"name\": \"a b\", \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\"}"),
     "policy rule 0: name: must be 1 to 64 characters"},
    {RULES("{\"name\": \"\", \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\"}"),
     "policy rule 0: name: must be"},
    {RULES("{\"name\": 5, \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\"}"),
     "policy rule 0: name: must be"},
    {RULES(RULE_OK ", " RULE_OK), "policy rule 1 (\"ok\"): name: rule 0 has the same name"},
    {RULES("{\"name\": \"a\", \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\", "
	   "\"bogus\": 1}"),
     "policy rule 0 (\"a\"): bogus: unknown key"},
    {RULES("{\"name\": \"a\", \"verdict\": \"red\", \"risk\": \"high\"}"),
     "policy rule 0 (\"a\"): tool: missing"},
    {RULES("{\"name\": \"a\", \"tool\": 1, \"verdict\": \"red\", \"risk\": \"high\"}"),
     "policy rule 0 (\"a\"): tool: must be"},
    {RULES("{\"name\": \"a\", \"tool\": [], \"verdict\": \"red\", \"risk\": \"high\"}"),
     "policy rule 0 (\"a\"): tool: must be"},
    {RULES("{\"name\": \"a\", \"tool\": [\"x\", 2], \"verdict\": \"red\", \"risk\": \"high\"}"),
     "policy rule 0 (\"a\"): tool: element 1 is not a tool name"},
    {RULES("{\"name\": \"a\", \"tool\": \"t\", \"risk\": \"high\"}"),
     "policy rule 0 (\"a\"): verdict: missing"},
    {RULES("{\"name\": \"a\", \"tool\": \"t\", \"verdict\": \"yellow\", \"risk\": \"high\"}"),
     "policy rule 0 (\"a\"): verdict: must be \"green\" or \"red\""},
    {RULES("{\"name\": \"a\", \"tool\": \"t\", \"verdict\": \"red\"}"),
     "policy rule 0 (\"a\"): risk: missing"},
    {RULES("{\"name\": \"a\", \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"HIGH\"}"),
     "policy rule 0 (\"a\"): risk: must be \"low\", \"medium\", \"high\" or \"critical\""},
    {RULES("{\"name\": \"a\", \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\", "
	   "\"reason\": 1}"),
     "policy rule 0 (\"a\"): reason: must be a non-empty string"},
    {RULES("{\"name\": \"a\", \"tool\": \"t\", \"match\": [], \"verdict\": \"red\", \"risk\": "
	   "\"high\"}"),
     "policy rule 0 (\"a\"): match: must be an object"},
    {RULES("{\"name\": \"a\", \"tool\": \"t\", \"context\": {\"d\": true}, \"verdict\": \"red\", "
	   "\"risk\": \"high\"}"),
     "policy rule 0 (\"a\"): context.d: must be an object of matchers"},
    {MATCH("\"rm\""), "policy rule 1 (\"m\"): match.command: must be an object of matchers"},
    {MATCH("{}"), "policy rule 1 (\"m\"): match.command: empty matcher"},
    {MATCH("{\"regexp\": \"x\"}"), "policy rule 1 (\"m\"): match.command.regexp: unknown matcher"},
    {MATCH("{\"regex\": \"(\"}"), "policy rule 1 (\"m\"): match.command.regex: "},
    {MATCH("{\"regex\": \"a[\"}"), "policy rule 1 (\"m\"): match.command.regex: "},
    {MATCH("{\"regex\": 1}"), "policy rule 1 (\"m\"): match.command.regex: must be a string"},
    {MATCH("{\"regex\": \"(a)\\\\1\"}"),
     "policy rule 1 (\"m\"): match.command.regex: back-references are not allowed"},
    {MATCH("{\"regex\": \"((a{30}){30}){30}\"}"),
     "policy rule 1 (\"m\"): match.command.regex: too complex"},
    {MATCH("{\"regex\": \"a++++++++++++++++++++++++++++++++++++++++++++++++\"}"),
     "policy rule 1 (\"m\"): match.command.regex: repetitions nested more than 3 deep"},
    {MATCH("{\"regex\": \"x(((y?)+)+)+z\"}"),
     "policy rule 1 (\"m\"): match.command.regex: repetitions nested more than 3 deep"},
    {MATCH("{\"regex\": \"((a|b{2})*c)+?d\"}"),
     "policy rule 1 (\"m\"): match.command.regex: repetitions nested more than 3 deep"},
    {MATCH("{\"regex\": \"((a{1,200}){1,200})\"}"),
     "policy rule 1 (\"m\"): match.command.regex: too complex"},
    {MATCH("{\"regex\": \"a{99999}\"}"),
     "policy rule 1 (\"m\"): match.command.regex: repetition count too large"},
    {MATCH("{\"glob\": \"[abc\"}"),
     "policy rule 1 (\"m\"): match.command.glob: unterminated [ in glob"},
    {MATCH("{\"glob\": \"a\\\\\"}"), "policy rule 1 (\"m\"): match.command.glob: glob ends with"},
    {MATCH("{\"glob\": \"[z-a]\"}"), "policy rule 1 (\"m\"): match.command.glob: range"},
    {MATCH("{\"glob\": [\"a\"]}"), "policy rule 1 (\"m\"): match.command.glob: must be a string"},
    {MATCH("{\"prefix\": null}"), "policy rule 1 (\"m\"): match.command.prefix: must be a string"},
    {MATCH("{\"max_len\": -1}"), "policy rule 1 (\"m\"): match.command.max_len: must be a non-neg"},
    {MATCH("{\"min_len\": 1.5}"),
     "policy rule 1 (\"m\"): match.command.min_len: must be a non-neg"},
    {MATCH("{\"min\": \"1\"}"), "policy rule 1 (\"m\"): match.command.min: must be a number"},
    {MATCH("{\"max\": null}"), "policy rule 1 (\"m\"): match.command.max: must be a number"},
    {MATCH("{\"exists\": 1}"),
     "policy rule 1 (\"m\"): match.command.exists: must be true or false"},
    {MATCH("{\"any\": []}"), "policy rule 1 (\"m\"): match.command.any: must be a non-empty array"},
    {MATCH("{\"any\": [{\"glob\": \"*\"}, {\"regex\": \"(\"}]}"),
     "policy rule 1 (\"m\"): match.command.any[1].regex: "},
    {MATCH("{\"not\": true}"), "policy rule 1 (\"m\"): match.command.not: must be an object"},
    {MATCH("{\"not\": {\"not\": {\"bad\": 1}}}"),
     "policy rule 1 (\"m\"): match.command.not.not.bad: unknown matcher"},
    {MATCH("{\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\": "
	   "{\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\": "
	   "{\"not\": {\"not\": {\"exists\": true}}}}}}}}}}}}}}}}}}}"),
     "matchers nested deeper than 16"},
};

static void check_bad(const char *text, size_t len, const char *want)
{
	struct policy *p = NULL;
	struct lg_err *err = NULL;

	if (policy_parse(text, len, &p, &err) == 0) {
		fprintf(stderr, "parsed, but should not: %.200s\n", text);
		fail();
	}
	assert_null(p);
	assert_non_null(err);
	if (strstr(err->msg, want) == NULL) {
		fprintf(stderr, "error \"%s\" does not contain \"%s\"\n", err->msg, want);
		fail();
	}
	lg_err_free(&err);
}

static void test_parse_errors(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++)
		check_bad(bad_cases[i].text, strlen(bad_cases[i].text), bad_cases[i].msg);
}

static void test_parse_error_names_rule(void **state)
{
	const char *text = RULES(
	    "{\"name\": \"a\", \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\"},"
	    "{\"name\": \"b\", \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\"},"
	    "{\"name\": \"c\", \"tool\": \"t\", \"verdict\": \"red\", \"risk\": \"high\"},"
	    "{\"name\": \"rm-root\", \"tool\": [\"sandbox_exec\", \"sandbox_run\"], "
	    "\"match\": {\"command\": {\"regex\": \"rm +-rf +/( |$\"}}, \"verdict\": \"red\", "
	    "\"risk\": \"high\"}");
	check_bad(text, strlen(text), "policy rule 3 (\"rm-root\"): match.command.regex: ");
}

static void test_limits(void **state)
{
	size_t cap = 1100 * 96;
	cleanup_free char *buf = xmalloc(cap);
	size_t o;
	struct policy *p;

	/* 1024 rules are fine, 1025 are not */
	for (int n = 1024; n <= 1025; n++) {
		o = (size_t)snprintf(buf, cap, "{\"version\": 1, \"rules\": [");
		for (int i = 0; i < n; i++)
			o += (size_t)snprintf(buf + o, cap - o,
					      "%s{\"name\": \"r%d\", \"tool\": \"t%d\", "
					      "\"verdict\": \"red\", \"risk\": \"high\"}",
					      i ? "," : "", i, i);
		o += (size_t)snprintf(buf + o, cap - o, "]}");
		if (n == 1024) {
			p = load(buf);
			assert_int_equal(policy_rule_count(p), 1024);
			expect(p, "t1023", NULL, NULL, R, HIGH, "r1023");
			policy_free(p);
		} else {
			check_bad(buf, o, "policy: rules: more than 1024 rules");
		}
	}

	/* a document over 1 MiB is refused before it is parsed */
	size_t big = 1024 * 1024 + 1;
	cleanup_free char *huge = xmalloc(big);
	memset(huge, ' ', big);
	memcpy(huge, RULES(), strlen(RULES()));
	check_bad(huge, big, "larger than 1048576 bytes");
	p = NULL;
	struct lg_err *err = NULL;
	assert_int_equal(policy_parse(huge, big - 1, &p, &err), 0);
	policy_free(p);
}

static void test_load_file(void **state)
{
	char tmpl[] = "/tmp/lg-test-policy-XXXXXX";
	int fd = mkstemp(tmpl);
	struct policy *p = NULL;
	struct lg_err *err = NULL;
	const char *bad = RULES("{\"name\": \"x\", \"tool\": \"t\", \"verdict\": \"blue\", "
				"\"risk\": \"low\"}");

	assert_true(fd >= 0);
	assert_int_equal(lg_write_all(fd, policy_default_text(), strlen(policy_default_text())),
			 (ssize_t)strlen(policy_default_text()));
	assert_int_equal(policy_load_file(tmpl, &p, &err), 0);
	expect(p, "net_connect", NULL, NULL, R, HIGH, "net-connect");
	policy_free(p);

	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, bad, strlen(bad), 0), (ssize_t)strlen(bad));
	assert_true(policy_load_file(tmpl, &p, &err) < 0);
	assert_null(p);
	assert_non_null(strstr(err->msg, tmpl));
	assert_non_null(strstr(err->msg, "policy rule 0 (\"x\"): verdict: must be"));
	lg_err_free(&err);
	close(fd);
	unlink(tmpl);

	assert_true(policy_load_file(tmpl, &p, &err) < 0);
	assert_non_null(strstr(err->msg, tmpl));
	lg_err_free(&err);
	assert_true(policy_load_file("/tmp", &p, &err) < 0);
	assert_non_null(strstr(err->msg, "not a regular file"));
	lg_err_free(&err);
}

/* ---- threads --------------------------------------------------------------------- */

static void *classify_many(void *arg)
{
	const struct policy *p = arg;

	for (int i = 0; i < 100; i++)
		for (size_t k = 0; k < ARRAY_SIZE(default_cases); k++)
			expect(p, default_cases[k].tool, default_cases[k].args,
			       default_cases[k].ctx, default_cases[k].v, default_cases[k].r,
			       default_cases[k].rule);
	return NULL;
}

/* One policy, classified from several threads at once (run under TSan/ASan too). */
static void test_threads(void **state)
{
	struct policy *p = policy_default();
	pthread_t t[4];

	for (size_t i = 0; i < ARRAY_SIZE(t); i++)
		assert_int_equal(pthread_create(&t[i], NULL, classify_many, p), 0);
	for (size_t i = 0; i < ARRAY_SIZE(t); i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_default_rules),
	    cmocka_unit_test(test_default_every_rule_tested),
	    cmocka_unit_test(test_empty_policy_is_all_red),
	    cmocka_unit_test(test_glob),
	    cmocka_unit_test(test_path_normalized),
	    cmocka_unit_test(test_regex),
	    cmocka_unit_test(test_lengths),
	    cmocka_unit_test(test_numbers),
	    cmocka_unit_test(test_equals_exists_prefix),
	    cmocka_unit_test(test_any_not),
	    cmocka_unit_test(test_context_and_tools),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_parse_error_names_rule),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_load_file),
	    cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
