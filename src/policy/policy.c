/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy of the approval cliff.  A policy is parsed once (strictly: a
 * typo in a security policy must be an error, not a rule that silently never
 * matches), compiled (globs to token lists, regexes with regcomp), and then
 * only read, so policy_classify() needs no lock.  docs/policy.md is the
 * user-facing description; keep them in step.
 */
#include "policy/policy.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define POLICY_MAX_BYTES   (1024 * 1024)
#define POLICY_MAX_RULES   1024
#define POLICY_MAX_NAME	   64
#define POLICY_MAX_TOOL	   128 /* MCP allows tool names of up to 128 characters */
#define POLICY_MAX_PATTERN 4096
#define POLICY_MAX_DEPTH   16
/*
 * glibc compiles a{n} into n copies of a, so nested counts multiply:
 * ((a{100}){100}){100} is a million states and seconds of regcomp.  A
 * policy is written by an administrator, not an attacker, but a typo should
 * not hang the server's start (nor the fuzzer), so the compiled size is
 * estimated and bounded; see regex_check().
 */
#define POLICY_MAX_REPEAT      1000
#define POLICY_MAX_REGEX_NODES 10000
#define POLICY_MAX_REGEX_DEPTH 64
#define POLICY_MAX_REGEX_NEST  3

/* ---- globs ---------------------------------------------------------------- */

enum glob_kind {
	G_CHAR,	     /* one given byte */
	G_ANY,	     /* ?: one byte other than '/' */
	G_CLASS,     /* [...]: one byte of a set, never '/' */
	G_STAR,	     /* *: any run of bytes without '/' */
	G_DSTAR,     /* ** not between slashes: any run of bytes */
	G_DSTAR_DIR, /* ** followed by '/': zero or more whole directories */
};

struct glob_tok {
	enum glob_kind kind;
	unsigned char c;
	uint8_t set[32]; /* G_CLASS: bit b set when byte b matches */
};

struct glob {
	struct glob_tok *tok;
	size_t n;
	/*
	 * A pattern ending in "/ **" (e.g. "/etc/ **") also matches the
	 * directory itself ("/etc"): n_dir is the number of tokens before that
	 * "/ **", or SIZE_MAX when the pattern does not end so.
	 */
	size_t n_dir;
};

/* ---- matchers and rules ---------------------------------------------------- */

struct matcher {
	json_t *equals;
	struct glob *glob;
	bool has_regex;
	regex_t regex;
	char *prefix;
	size_t prefix_len;
	bool has_min_len, has_max_len;
	size_t min_len, max_len;
	json_t *min, *max; /* numbers */
	int exists;	   /* -1: not given, 0: must be absent, 1: must be present */
	struct matcher *any;
	size_t n_any;
	struct matcher *not_;
};

struct field {
	char *name;
	struct matcher m;
};

struct rule {
	char *name;
	char **tools; /* NULL-terminated; NULL means every tool ("*") */
	struct field *args;
	size_t n_args;
	struct field *ctx;
	size_t n_ctx;
	enum policy_verdict verdict;
	enum policy_risk risk;
	char *reason;
};

struct policy {
	struct rule *rules;
	size_t n_rules;
	enum policy_verdict def_verdict;
	enum policy_risk def_risk;
	char *def_reason;
};

/* ---- the built-in default (docs/policy.md explains every rule) ------------- */

static const char default_policy_text[] =
    "{\n"
    "  \"version\": 1,\n"
    "  \"comment\": \"LuminaGuard built-in default: work inside the ephemeral VM is green; "
    "what crosses the VM boundary is red.\",\n"
    "  \"default\": {\"verdict\": \"red\", \"risk\": \"high\", "
    "\"reason\": \"no rule covers this action\"},\n"
    "  \"rules\": [\n"
    "    {\"name\": \"host-mount-write\", \"tool\": [\"sandbox_fs_write\", \"sandbox_exec\", "
    "\"sandbox_run\"],\n"
    "     \"context\": {\"host_mount\": {\"equals\": true}},\n"
    "     \"verdict\": \"red\", \"risk\": \"high\",\n"
    "     \"reason\": \"may write into a directory mounted from the host\"},\n"
    "    {\"name\": \"exec-destructive-in-vm\", \"tool\": [\"sandbox_exec\", \"sandbox_run\"],\n"
    "     \"match\": {\"command\": {\"regex\": "
    "\"(^|[;&|({ ])(sudo +)?(rm +-[a-zA-Z]*[rRf]|mkfs|dd +.*of=/dev/|shred |wipefs|"
    "chmod +-R|chown +-R|kill +-9 +-1|:\\\\(\\\\) *\\\\{)\"}},\n"
    "     \"verdict\": \"green\", \"risk\": \"medium\",\n"
    "     \"reason\": \"looks destructive, but only inside the disposable VM\"},\n"
    "    {\"name\": \"exec\", \"tool\": [\"sandbox_exec\", \"sandbox_run\"],\n"
    "     \"verdict\": \"green\", \"risk\": \"low\", \"reason\": \"runs inside the ephemeral "
    "VM\"},\n"
    "    {\"name\": \"create\", \"tool\": \"sandbox_create\",\n"
    "     \"verdict\": \"green\", \"risk\": \"low\", \"reason\": \"a new VM with no access to "
    "the host\"},\n"
    "    {\"name\": \"fs-in-vm\", \"tool\": [\"sandbox_fs_read\", \"sandbox_fs_write\", "
    "\"sandbox_fs_list\"],\n"
    "     \"verdict\": \"green\", \"risk\": \"low\", \"reason\": \"files inside the ephemeral "
    "VM\"},\n"
    "    {\"name\": \"list\", \"tool\": \"sandbox_list\",\n"
    "     \"verdict\": \"green\", \"risk\": \"low\", \"reason\": \"read-only\"},\n"
    "    {\"name\": \"destroy-clean\", \"tool\": \"sandbox_destroy\",\n"
    "     \"context\": {\"sandbox_dirty\": {\"equals\": false}},\n"
    "     \"verdict\": \"green\", \"risk\": \"low\", \"reason\": \"the sandbox holds no "
    "work\"},\n"
    "    {\"name\": \"destroy-ephemeral\", \"tool\": \"sandbox_destroy\",\n"
    "     \"context\": {\"sandbox_ephemeral\": {\"equals\": true}},\n"
    "     \"verdict\": \"green\", \"risk\": \"low\", \"reason\": \"the sandbox was made to be "
    "thrown away after its command (luminaguard run)\"},\n"
    "    {\"name\": \"destroy-dirty\", \"tool\": \"sandbox_destroy\",\n"
    "     \"verdict\": \"red\", \"risk\": \"medium\",\n"
    "     \"reason\": \"the sandbox holds unsaved work that would be lost\"},\n"
    "    {\"name\": \"net-connect\", \"tool\": \"net_connect\",\n"
    "     \"verdict\": \"red\", \"risk\": \"high\", \"reason\": \"network egress leaves the "
    "sandbox\"},\n"
    "    {\"name\": \"host-write\", \"tool\": \"host_write\",\n"
    "     \"verdict\": \"red\", \"risk\": \"high\", \"reason\": \"writes to the host's "
    "files\"},\n"
    "    {\"name\": \"fs-export\", \"tool\": \"fs_export\",\n"
    "     \"verdict\": \"red\", \"risk\": \"medium\", \"reason\": \"copies a file out of the "
    "sandbox to the host\"},\n"
    "    {\"name\": \"tool-call-safe\", \"tool\": \"tool_call\",\n"
    "     \"match\": {\"destructive\": {\"equals\": false}},\n"
    "     \"verdict\": \"green\", \"risk\": \"low\", \"reason\": \"third-party tool marked "
    "non-destructive\"},\n"
    "    {\"name\": \"tool-call\", \"tool\": \"tool_call\",\n"
    "     \"verdict\": \"red\", \"risk\": \"high\",\n"
    "     \"reason\": \"third-party tool that is, or may be, destructive\"}\n"
    "  ]\n"
    "}\n";

const char *policy_default_text(void)
{
	return default_policy_text;
}

/* ---- names ------------------------------------------------------------------ */

static const char *const verdict_names[] = {"green", "red"};
static const char *const risk_names[] = {"low", "medium", "high", "critical"};

const char *policy_verdict_name(enum policy_verdict v)
{
	return (unsigned)v < ARRAY_SIZE(verdict_names) ? verdict_names[v] : "red";
}

const char *policy_risk_name(enum policy_risk r)
{
	return (unsigned)r < ARRAY_SIZE(risk_names) ? risk_names[r] : "critical";
}

/* ---- parse context: where an error is ------------------------------------- */

struct pctx {
	struct lg_err **err;
	long rule;	  /* index in "rules", or -1 outside the rules */
	const char *name; /* the rule's name once known */
};

static int __attribute__((format(printf, 3, 4)))
perr(const struct pctx *c, const char *key, const char *fmt, ...)
{
	cleanup_free char *what = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&what, fmt, ap) < 0)
		what = NULL;
	va_end(ap);
	if (c->rule < 0)
		lg_err_msg(c->err, EINVAL, "policy: %s: %s", key, what ? what : "invalid");
	else if (c->name != NULL)
		lg_err_msg(c->err, EINVAL, "policy rule %ld (\"%s\"): %s: %s", c->rule, c->name,
			   key, what ? what : "invalid");
	else
		lg_err_msg(c->err, EINVAL, "policy rule %ld: %s: %s", c->rule, key,
			   what ? what : "invalid");
	return -EINVAL;
}

/* ---- glob compile and match ------------------------------------------------- */

static void set_bit(uint8_t *set, unsigned char b)
{
	set[b / 8] |= (uint8_t)(1u << (b % 8));
}

static bool has_bit(const uint8_t *set, unsigned char b)
{
	return set[b / 8] & (1u << (b % 8));
}

static void glob_free(struct glob *g)
{
	if (g == NULL)
		return;
	free(g->tok);
	free(g);
}

/* Compiles a glob; on error returns NULL and sets *why to a static message. */
static struct glob *glob_compile(const char *p, size_t len, const char **why)
{
	struct glob *g = xzalloc(sizeof(*g));
	size_t i = 0;

	/* every token consumes at least one pattern byte */
	g->tok = xzalloc((len + 1) * sizeof(*g->tok));
	g->n_dir = SIZE_MAX;
	while (i < len) {
		struct glob_tok *t = &g->tok[g->n];

		if (p[i] == '*') {
			size_t stars = 0;
			while (i < len && p[i] == '*') {
				stars++;
				i++;
			}
			if (stars == 1) {
				t->kind = G_STAR;
			} else if (i < len && p[i] == '/' &&
				   (i - stars == 0 || p[i - stars - 1] == '/')) {
				/* "** /" is "zero or more directories": a/ ** /b matches a/b */
				t->kind = G_DSTAR_DIR;
				i++;
			} else {
				if (i == len && g->n > 0 && g->tok[g->n - 1].kind == G_CHAR &&
				    g->tok[g->n - 1].c == '/')
					g->n_dir = g->n - 1;
				t->kind = G_DSTAR;
			}
		} else if (p[i] == '?') {
			t->kind = G_ANY;
			i++;
		} else if (p[i] == '[') {
			bool neg = false;
			bool first = true;

			t->kind = G_CLASS;
			i++;
			if (i < len && (p[i] == '!' || p[i] == '^')) {
				neg = true;
				i++;
			}
			for (;;) {
				unsigned char lo, hi;

				if (i >= len) {
					*why = "unterminated [ in glob";
					glob_free(g);
					return NULL;
				}
				if (p[i] == ']' && !first)
					break;
				first = false;
				lo = (unsigned char)p[i++];
				if (lo == '\\' && i < len)
					lo = (unsigned char)p[i++];
				hi = lo;
				if (i + 1 < len && p[i] == '-' && p[i + 1] != ']') {
					hi = (unsigned char)p[i + 1];
					i += 2;
					if (hi == '\\' && i < len)
						hi = (unsigned char)p[i++];
					if (hi < lo) {
						*why = "range in [ ] of glob is backwards";
						glob_free(g);
						return NULL;
					}
				}
				for (unsigned b = lo; b <= hi; b++)
					set_bit(t->set, (unsigned char)b);
			}
			i++; /* ']' */
			if (neg)
				for (size_t k = 0; k < sizeof(t->set); k++)
					t->set[k] = (uint8_t)~t->set[k];
			/* as with FNM_PATHNAME, no wildcard ever matches '/' */
			t->set['/' / 8] &= (uint8_t) ~(1u << ('/' % 8));
		} else {
			if (p[i] == '\\') {
				if (++i == len) {
					*why = "glob ends with a lone backslash";
					glob_free(g);
					return NULL;
				}
			}
			t->kind = G_CHAR;
			t->c = (unsigned char)p[i++];
		}
		g->n++;
	}
	return g;
}

struct nfa {
	bool *st;  /* st[i]: about to match token i; st[n]: matched all */
	bool *mid; /* mid[i]: inside a G_DSTAR_DIR, not just after a '/' */
};

static void nfa_add(const struct glob *g, size_t n, bool *st, size_t i)
{
	/* the star tokens may match nothing: reaching one reaches the next too */
	for (; !st[i]; i++) {
		st[i] = true;
		if (i == n || (g->tok[i].kind != G_STAR && g->tok[i].kind != G_DSTAR &&
			       g->tok[i].kind != G_DSTAR_DIR))
			break;
	}
}

/*
 * Matches the first n tokens of g against all of s, simulating the NFA
 * (O(tokens × bytes), no backtracking, so no pattern can blow up).
 */
static bool glob_match_n(const struct glob *g, size_t n, const unsigned char *s, size_t len)
{
	cleanup_free bool *mem = xzalloc(4 * (n + 1) * sizeof(bool));
	struct nfa cur = {mem, mem + (n + 1)};
	struct nfa nxt = {mem + 2 * (n + 1), mem + 3 * (n + 1)};
	bool live;

	nfa_add(g, n, cur.st, 0);
	for (size_t k = 0; k < len; k++) {
		unsigned char c = s[k];

		memset(nxt.st, 0, 2 * (n + 1) * sizeof(bool));
		live = false;
		for (size_t i = 0; i < n; i++) {
			const struct glob_tok *t = &g->tok[i];

			if (!cur.st[i] && !cur.mid[i])
				continue;
			live = true;
			switch (t->kind) {
			case G_CHAR:
				if (cur.st[i] && c == t->c)
					nfa_add(g, n, nxt.st, i + 1);
				break;
			case G_ANY:
				if (cur.st[i] && c != '/')
					nfa_add(g, n, nxt.st, i + 1);
				break;
			case G_CLASS:
				if (cur.st[i] && has_bit(t->set, c))
					nfa_add(g, n, nxt.st, i + 1);
				break;
			case G_STAR:
				if (c != '/')
					nfa_add(g, n, nxt.st, i);
				break;
			case G_DSTAR:
				nfa_add(g, n, nxt.st, i);
				break;
			case G_DSTAR_DIR:
				nxt.mid[i] = true;
				if (c == '/')
					nfa_add(g, n, nxt.st, i + 1);
				break;
			}
		}
		if (!live)
			return false;
		struct nfa tmp = cur;
		cur = nxt;
		nxt = tmp;
	}
	return cur.st[n];
}

static bool glob_match(const struct glob *g, const char *s, size_t len)
{
	if (glob_match_n(g, g->n, (const unsigned char *)s, len))
		return true;
	return g->n_dir != SIZE_MAX && glob_match_n(g, g->n_dir, (const unsigned char *)s, len);
}

/* ---- regex checks ----------------------------------------------------------- */

/*
 * An estimate of what glibc's regcomp makes of a regex, to refuse what
 * would take it seconds or gigabytes before it sees it.  glibc copies the
 * operand of "+" and "{m,n}" (x+ is x x*, x{2,3} is x x x?), so nesting
 * them multiplies the size ("a++++++++" doubles eight times), and its
 * epsilon closures grow much faster than the size when repetitions nest
 * (((((x?)+)+)+)+ ... takes seconds at ten levels).  So both the size and
 * the nesting of repetitions are bounded.  A small recursive walk of the
 * ERE grammar; whatever it misreads, regcomp still judges.
 */
struct rx {
	const char *p;
	size_t i;
	const char *why;
};

struct rx_size {
	size_t nodes;
	int nest; /* repetitions nested in it, counting its own */
};

#define RX_CAP (POLICY_MAX_REGEX_NODES + 1)

static size_t sat_add(size_t a, size_t b)
{
	return a + b > RX_CAP ? RX_CAP : a + b;
}

static size_t sat_mul(size_t a, size_t b)
{
	return b != 0 && a > RX_CAP / b ? RX_CAP : sat_add(a * b, 0);
}

static struct rx_size rx_alt(struct rx *r, int depth);

static struct rx_size rx_atom(struct rx *r, int depth)
{
	const char *p = r->p;
	struct rx_size s = {1, 0};

	switch (p[r->i]) {
	case '(':
		r->i++;
		if (depth >= POLICY_MAX_REGEX_DEPTH) {
			r->why = "groups nested too deeply";
			return s;
		}
		s = rx_alt(r, depth + 1);
		if (p[r->i] == ')')
			r->i++;
		s.nodes = sat_add(s.nodes, 2);
		return s;
	case '[': {
		/* a bracket expression: one node, and what is inside is literal */
		size_t j = r->i + 1;
		if (p[j] == '^')
			j++;
		if (p[j] == ']')
			j++;
		while (p[j] != '\0' && p[j] != ']') {
			if (p[j] == '[' &&
			    (p[j + 1] == ':' || p[j + 1] == '.' || p[j + 1] == '=')) {
				const char *end = strchr(p + j + 2, ']');
				j = end != NULL ? (size_t)(end - p) + 1 : strlen(p);
			} else {
				j++;
			}
		}
		r->i = p[j] != '\0' ? j + 1 : j;
		return s;
	}
	case '\\':
		if (p[r->i + 1] >= '1' && p[r->i + 1] <= '9')
			/* back-references make glibc's regexec exponential */
			r->why = "back-references are not allowed";
		r->i += p[r->i + 1] != '\0' ? 2 : 1;
		return s;
	default:
		r->i++;
		return s;
	}
}

/* Parses "{m}", "{m,}", "{m,n}" at r->i; false (r->i unchanged) if it is none. */
static bool rx_interval(struct rx *r, size_t *copies)
{
	const char *p = r->p;
	size_t j = r->i + 1, m = 0, n;
	bool digits = false;

	for (; p[j] >= '0' && p[j] <= '9'; j++, digits = true)
		m = m > POLICY_MAX_REPEAT ? m : m * 10 + (size_t)(p[j] - '0');
	n = m;
	if (p[j] == ',') {
		j++;
		if (p[j] >= '0' && p[j] <= '9') {
			for (n = 0; p[j] >= '0' && p[j] <= '9'; j++, digits = true)
				n = n > POLICY_MAX_REPEAT ? n : n * 10 + (size_t)(p[j] - '0');
		} else {
			n = m + 1; /* x{m,} is m copies and a starred one */
		}
	}
	if (!digits || p[j] != '}')
		return false;
	r->i = j + 1;
	if (m > POLICY_MAX_REPEAT || n > POLICY_MAX_REPEAT)
		r->why = "repetition count too large (at most 1000)";
	*copies = n > 0 ? n : 1;
	return true;
}

static struct rx_size rx_seq(struct rx *r, int depth)
{
	struct rx_size total = {0, 0};

	for (;;) {
		char c = r->p[r->i];
		struct rx_size s;
		size_t copies;

		if (c == '\0' || c == '|' || (c == ')' && depth > 0) || r->why != NULL)
			return total;
		s = rx_atom(r, depth);
		for (;;) {
			c = r->p[r->i];
			if (c == '*' || c == '?') {
				r->i++;
				s.nodes = sat_add(s.nodes, 1);
			} else if (c == '+') {
				r->i++;
				s.nodes = sat_add(sat_mul(s.nodes, 2), 1);
			} else if (c == '{' && rx_interval(r, &copies)) {
				s.nodes = sat_add(sat_mul(s.nodes, copies), 1);
			} else {
				break;
			}
			/* "x*+" is a repetition of a repetition, like "(x*)+" */
			s.nest++;
		}
		if (s.nest > POLICY_MAX_REGEX_NEST)
			r->why = "repetitions nested more than 3 deep";
		total.nodes = sat_add(total.nodes, s.nodes);
		total.nest = s.nest > total.nest ? s.nest : total.nest;
	}
}

static struct rx_size rx_alt(struct rx *r, int depth)
{
	struct rx_size total = rx_seq(r, depth);

	while (r->p[r->i] == '|' && r->why == NULL) {
		struct rx_size s;

		r->i++;
		s = rx_seq(r, depth);
		total.nodes = sat_add(total.nodes, sat_add(s.nodes, 1));
		total.nest = s.nest > total.nest ? s.nest : total.nest;
	}
	return total;
}

static const char *regex_check(const char *p)
{
	struct rx r = {p, 0, NULL};
	struct rx_size s = rx_alt(&r, 0);

	if (r.why != NULL)
		return r.why;
	if (s.nodes > POLICY_MAX_REGEX_NODES)
		return "too complex (its repetitions would compile to more than 10000 "
		       "states)";
	return NULL;
}

/* ---- matcher parse ------------------------------------------------------------ */

static void matcher_clear(struct matcher *m)
{
	json_decref(m->equals);
	glob_free(m->glob);
	if (m->has_regex)
		regfree(&m->regex);
	free(m->prefix);
	json_decref(m->min);
	json_decref(m->max);
	for (size_t i = 0; i < m->n_any; i++)
		matcher_clear(&m->any[i]);
	free(m->any);
	if (m->not_ != NULL) {
		matcher_clear(m->not_);
		free(m->not_);
	}
	memset(m, 0, sizeof(*m));
	m->exists = -1;
}

static int parse_len(const struct pctx *c, const char *key, json_t *v, size_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return perr(c, key, "must be a non-negative integer");
	*out = (size_t)json_integer_value(v);
	return 0;
}

static int parse_pattern(const struct pctx *c, const char *key, json_t *v, const char **out)
{
	if (!json_is_string(v))
		return perr(c, key, "must be a string");
	if (json_string_length(v) > POLICY_MAX_PATTERN)
		return perr(c, key, "longer than %d bytes", POLICY_MAX_PATTERN);
	*out = json_string_value(v);
	return 0;
}

static int parse_matcher(const struct pctx *c, const char *path, json_t *obj, int depth,
			 struct matcher *m)
{
	const char *key;
	json_t *v;

	memset(m, 0, sizeof(*m));
	m->exists = -1;
	if (!json_is_object(obj))
		return perr(c, path, "must be an object of matchers");
	if (json_object_size(obj) == 0)
		return perr(c, path, "empty matcher (use {\"exists\": true} to match any value)");
	if (depth > POLICY_MAX_DEPTH)
		return perr(c, path, "matchers nested deeper than %d", POLICY_MAX_DEPTH);

	json_object_foreach(obj, key, v)
	{
		cleanup_free char *kp = xasprintf("%s.%s", path, key);
		const char *pat;
		const char *why = NULL;
		int r;

		if (strcmp(key, "equals") == 0) {
			m->equals = json_incref(v);
		} else if (strcmp(key, "glob") == 0) {
			if (parse_pattern(c, kp, v, &pat) < 0)
				return -EINVAL;
			m->glob = glob_compile(pat, json_string_length(v), &why);
			if (m->glob == NULL)
				return perr(c, kp, "%s", why);
		} else if (strcmp(key, "regex") == 0) {
			char msg[128];

			if (parse_pattern(c, kp, v, &pat) < 0)
				return -EINVAL;
			if (strlen(pat) != json_string_length(v))
				return perr(c, kp, "contains a NUL byte");
			why = regex_check(pat);
			if (why != NULL)
				return perr(c, kp, "%s", why);
			r = regcomp(&m->regex, pat, REG_EXTENDED | REG_NOSUB);
			if (r != 0) {
				regerror(r, &m->regex, msg, sizeof(msg));
				return perr(c, kp, "%s", msg);
			}
			m->has_regex = true;
		} else if (strcmp(key, "prefix") == 0) {
			if (parse_pattern(c, kp, v, &pat) < 0)
				return -EINVAL;
			m->prefix_len = json_string_length(v);
			m->prefix = xmalloc(m->prefix_len + 1);
			memcpy(m->prefix, pat, m->prefix_len + 1);
		} else if (strcmp(key, "min_len") == 0) {
			if (parse_len(c, kp, v, &m->min_len) < 0)
				return -EINVAL;
			m->has_min_len = true;
		} else if (strcmp(key, "max_len") == 0) {
			if (parse_len(c, kp, v, &m->max_len) < 0)
				return -EINVAL;
			m->has_max_len = true;
		} else if (strcmp(key, "min") == 0 || strcmp(key, "max") == 0) {
			if (!json_is_number(v))
				return perr(c, kp, "must be a number");
			*(key[1] == 'i' ? &m->min : &m->max) = json_incref(v);
		} else if (strcmp(key, "exists") == 0) {
			if (!json_is_boolean(v))
				return perr(c, kp, "must be true or false");
			m->exists = json_is_true(v);
		} else if (strcmp(key, "any") == 0) {
			if (!json_is_array(v) || json_array_size(v) == 0)
				return perr(c, kp, "must be a non-empty array of matchers");
			m->any = xzalloc(json_array_size(v) * sizeof(*m->any));
			for (size_t i = 0; i < json_array_size(v); i++) {
				cleanup_free char *ip = xasprintf("%s[%zu]", kp, i);
				m->n_any = i + 1;
				if (parse_matcher(c, ip, json_array_get(v, i), depth + 1,
						  &m->any[i]) < 0)
					return -EINVAL;
			}
		} else if (strcmp(key, "not") == 0) {
			m->not_ = xzalloc(sizeof(*m->not_));
			if (parse_matcher(c, kp, v, depth + 1, m->not_) < 0)
				return -EINVAL;
		} else {
			return perr(c, kp,
				    "unknown matcher (equals, glob, regex, prefix, "
				    "min_len, max_len, min, max, exists, any, not)");
		}
	}
	return 0;
}

static int parse_fields(const struct pctx *c, const char *what, json_t *obj, struct field **out,
			size_t *n)
{
	const char *key;
	json_t *v;
	size_t i = 0;

	if (!json_is_object(obj))
		return perr(c, what, "must be an object mapping field names to matchers");
	*out = xzalloc((json_object_size(obj) + 1) * sizeof(**out));
	json_object_foreach(obj, key, v)
	{
		cleanup_free char *path = xasprintf("%s.%s", what, key);
		(*out)[i].name = xstrdup(key);
		*n = ++i;
		if (parse_matcher(c, path, v, 0, &(*out)[i - 1].m) < 0)
			return -EINVAL;
	}
	return 0;
}

/* ---- rule parse ----------------------------------------------------------------- */

static int parse_enum(const struct pctx *c, const char *key, json_t *v, const char *const *names,
		      size_t n, int *out)
{
	if (json_is_string(v))
		for (size_t i = 0; i < n; i++)
			if (strcmp(json_string_value(v), names[i]) == 0) {
				*out = (int)i;
				return 0;
			}
	if (names == verdict_names)
		return perr(c, key, "must be \"green\" or \"red\"");
	return perr(c, key, "must be \"low\", \"medium\", \"high\" or \"critical\"");
}

static int parse_reason(const struct pctx *c, const char *key, json_t *v, char **out)
{
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return perr(c, key, "must be a non-empty string");
	free(*out);
	*out = xstrdup(json_string_value(v));
	return 0;
}

static bool valid_name(const char *s, size_t len, size_t max)
{
	if (len == 0 || len > max || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

static void rule_clear(struct rule *r)
{
	free(r->name);
	if (r->tools != NULL)
		for (char **t = r->tools; *t != NULL; t++)
			free(*t);
	free(r->tools);
	for (size_t i = 0; i < r->n_args; i++) {
		free(r->args[i].name);
		matcher_clear(&r->args[i].m);
	}
	free(r->args);
	for (size_t i = 0; i < r->n_ctx; i++) {
		free(r->ctx[i].name);
		matcher_clear(&r->ctx[i].m);
	}
	free(r->ctx);
	free(r->reason);
}

static int parse_tools(const struct pctx *c, json_t *v, struct rule *r)
{
	size_t n;

	if (json_is_string(v)) {
		if (strcmp(json_string_value(v), "*") == 0)
			return 0;
		if (!valid_name(json_string_value(v), json_string_length(v), POLICY_MAX_TOOL))
			return perr(c, "tool", "must be a tool name, \"*\" or an array of names");
		r->tools = xzalloc(2 * sizeof(char *));
		r->tools[0] = xstrdup(json_string_value(v));
		return 0;
	}
	if (!json_is_array(v) || (n = json_array_size(v)) == 0)
		return perr(c, "tool", "must be a tool name, \"*\" or an array of names");
	r->tools = xzalloc((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		json_t *t = json_array_get(v, i);
		if (!json_is_string(t) ||
		    !valid_name(json_string_value(t), json_string_length(t), POLICY_MAX_TOOL))
			return perr(c, "tool", "element %zu is not a tool name", i);
		r->tools[i] = xstrdup(json_string_value(t));
	}
	return 0;
}

static int parse_rule(struct pctx *c, json_t *obj, const struct rule *prev, size_t n_prev,
		      struct rule *r)
{
	json_t *name, *tool, *verdict, *risk, *v;
	const char *key;
	int e = 0;

	if (!json_is_object(obj))
		return perr(c, "rule", "must be an object");
	name = json_object_get(obj, "name");
	if (name == NULL)
		return perr(c, "name", "missing");
	if (!json_is_string(name) ||
	    !valid_name(json_string_value(name), json_string_length(name), POLICY_MAX_NAME))
		return perr(c, "name", "must be 1 to %d characters of A-Z a-z 0-9 . _ -",
			    POLICY_MAX_NAME);
	r->name = xstrdup(json_string_value(name));
	c->name = r->name;
	for (size_t i = 0; i < n_prev; i++)
		if (strcmp(prev[i].name, r->name) == 0)
			return perr(c, "name", "rule %zu has the same name", i);

	json_object_foreach(obj, key, v)
	{
		if (strcmp(key, "name") != 0 && strcmp(key, "tool") != 0 &&
		    strcmp(key, "match") != 0 && strcmp(key, "context") != 0 &&
		    strcmp(key, "verdict") != 0 && strcmp(key, "risk") != 0 &&
		    strcmp(key, "reason") != 0 && strcmp(key, "comment") != 0)
			return perr(c, key,
				    "unknown key (name, tool, match, context, verdict, "
				    "risk, reason, comment)");
	}
	tool = json_object_get(obj, "tool");
	if (tool == NULL)
		return perr(c, "tool", "missing (use \"*\" for every tool)");
	if (parse_tools(c, tool, r) < 0)
		return -EINVAL;
	v = json_object_get(obj, "match");
	if (v != NULL && parse_fields(c, "match", v, &r->args, &r->n_args) < 0)
		return -EINVAL;
	v = json_object_get(obj, "context");
	if (v != NULL && parse_fields(c, "context", v, &r->ctx, &r->n_ctx) < 0)
		return -EINVAL;
	verdict = json_object_get(obj, "verdict");
	if (verdict == NULL)
		return perr(c, "verdict", "missing");
	if (parse_enum(c, "verdict", verdict, verdict_names, ARRAY_SIZE(verdict_names), &e) < 0)
		return -EINVAL;
	r->verdict = (enum policy_verdict)e;
	risk = json_object_get(obj, "risk");
	if (risk == NULL)
		return perr(c, "risk", "missing");
	if (parse_enum(c, "risk", risk, risk_names, ARRAY_SIZE(risk_names), &e) < 0)
		return -EINVAL;
	r->risk = (enum policy_risk)e;
	v = json_object_get(obj, "reason");
	if (v != NULL)
		return parse_reason(c, "reason", v, &r->reason);
	r->reason = xasprintf("rule %s", r->name);
	return 0;
}

static int parse_default(struct pctx *c, json_t *obj, struct policy *p)
{
	const char *key;
	json_t *v;
	int e = 0;

	if (!json_is_object(obj))
		return perr(c, "default", "must be an object");
	json_object_foreach(obj, key, v)
	{
		if (strcmp(key, "verdict") == 0) {
			if (parse_enum(c, "default.verdict", v, verdict_names,
				       ARRAY_SIZE(verdict_names), &e) < 0)
				return -EINVAL;
			/* the cliff's promise: what the policy does not know, a human sees */
			if (e != POLICY_RED)
				return perr(c, "default.verdict",
					    "must be \"red\": an action no rule covers needs a "
					    "human");
		} else if (strcmp(key, "risk") == 0) {
			if (parse_enum(c, "default.risk", v, risk_names, ARRAY_SIZE(risk_names),
				       &e) < 0)
				return -EINVAL;
			p->def_risk = (enum policy_risk)e;
		} else if (strcmp(key, "reason") == 0) {
			if (parse_reason(c, "default.reason", v, &p->def_reason) < 0)
				return -EINVAL;
		} else if (strcmp(key, "comment") != 0) {
			cleanup_free char *kp = xasprintf("default.%s", key);
			return perr(c, kp, "unknown key (verdict, risk, reason, comment)");
		}
	}
	return 0;
}

void policy_free(struct policy *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->n_rules; i++)
		rule_clear(&p->rules[i]);
	free(p->rules);
	free(p->def_reason);
	free(p);
}

static int parse_doc(struct pctx *c, json_t *doc, struct policy *p)
{
	const char *key;
	json_t *v, *rules;

	if (!json_is_object(doc))
		return perr(c, "document", "must be a JSON object");
	json_object_foreach(doc, key, v)
	{
		if (strcmp(key, "version") != 0 && strcmp(key, "default") != 0 &&
		    strcmp(key, "rules") != 0 && strcmp(key, "comment") != 0)
			return perr(c, key, "unknown key (version, default, rules, comment)");
	}
	v = json_object_get(doc, "version");
	if (v == NULL)
		return perr(c, "version", "missing (this is version 1)");
	if (!json_is_integer(v) || json_integer_value(v) != 1)
		return perr(c, "version", "must be 1");
	v = json_object_get(doc, "default");
	if (v != NULL && parse_default(c, v, p) < 0)
		return -EINVAL;
	rules = json_object_get(doc, "rules");
	if (rules == NULL)
		return perr(c, "rules", "missing");
	if (!json_is_array(rules))
		return perr(c, "rules", "must be an array");
	if (json_array_size(rules) > POLICY_MAX_RULES)
		return perr(c, "rules", "more than %d rules", POLICY_MAX_RULES);
	p->rules = xzalloc((json_array_size(rules) + 1) * sizeof(*p->rules));
	for (size_t i = 0; i < json_array_size(rules); i++) {
		c->rule = (long)i;
		c->name = NULL;
		p->n_rules = i + 1;
		if (parse_rule(c, json_array_get(rules, i), p->rules, i, &p->rules[i]) < 0)
			return -EINVAL;
	}
	return 0;
}

int policy_parse(const char *text, size_t len, struct policy **out, struct lg_err **err)
{
	struct pctx c = {err, -1, NULL};
	struct policy *p;
	json_error_t jerr;
	json_t *doc;
	int r;

	*out = NULL;
	if (len > POLICY_MAX_BYTES)
		return perr(&c, "document", "larger than %d bytes", POLICY_MAX_BYTES);
	/* duplicate keys would let one reading of the file differ from another */
	doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (doc == NULL) {
		lg_err_msg(err, EINVAL, "policy: line %d column %d: %s", jerr.line, jerr.column,
			   jerr.text);
		return -EINVAL;
	}
	p = xzalloc(sizeof(*p));
	p->def_verdict = POLICY_RED;
	p->def_risk = POLICY_RISK_HIGH;
	p->def_reason = xstrdup("no rule covers this action");
	r = parse_doc(&c, doc, p);
	json_decref(doc);
	if (r < 0) {
		policy_free(p);
		return r;
	}
	*out = p;
	return 0;
}

int policy_load_file(const char *path, struct policy **out, struct lg_err **err)
{
	cleanup_close int fd = -1;
	cleanup_free char *buf = NULL;
	struct stat st;
	ssize_t n;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lg_err_sys(err, "open policy `%s`", path);
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat policy `%s`", path);
	if (!S_ISREG(st.st_mode))
		return lg_err_msg(err, EINVAL, "policy `%s` is not a regular file", path);
	if (st.st_size > POLICY_MAX_BYTES)
		return lg_err_set(err, EFBIG, "policy `%s` is larger than %d bytes", path,
				  POLICY_MAX_BYTES);
	/* read one byte more than allowed: the file may grow under us */
	buf = xmalloc(POLICY_MAX_BYTES + 1);
	n = lg_read_all(fd, buf, POLICY_MAX_BYTES + 1);
	if (n < 0)
		return lg_err_set(err, (int)-n, "read policy `%s`", path);
	if (policy_parse(buf, (size_t)n, out, err) < 0)
		return lg_err_wrap(err, "`%s`", path);
	return 0;
}

struct policy *policy_default(void)
{
	struct policy *p = NULL;
	struct lg_err *err = NULL;

	/* the text is a constant checked by the unit tests: failing here is a bug */
	if (policy_parse(default_policy_text, sizeof(default_policy_text) - 1, &p, &err) < 0) {
		fprintf(stderr, "luminaguard: built-in policy: %s\n", err->msg);
		abort();
	}
	return p;
}

size_t policy_rule_count(const struct policy *p)
{
	return p->n_rules;
}

/* ---- classify -------------------------------------------------------------------- */

/*
 * The action as rules see it: the arguments plus what classify derives from
 * them.  Derived values are owned here so the borrowed args are never
 * modified, not even their reference counts (another thread may hold them).
 */
struct view {
	const json_t *obj;
	json_t *command; /* argv joined with spaces, when there is no command */
	json_t *path;	 /* lexically normalized "path" */
	json_t *cwd;	 /* lexically normalized "cwd" */
};

/*
 * "/a//b/./c/../d/" -> "/a/b/d": rules see the path the guest will open,
 * so "/tmp/../etc/passwd" cannot slip past a rule on "/etc/ **".  ".." above
 * the root stays at the root, as the kernel does.  A relative path is seen
 * from "/", the working directory of the guest agent: "etc/x" is "/etc/x",
 * so it cannot slip past a rule on "/etc/ **" either (the MCP server refuses
 * relative paths before it asks; this holds for every other caller).
 * Symbolic links are not (cannot be) resolved here.
 */
static json_t *normalize_path(const char *s, size_t len)
{
	cleanup_free char *out = xmalloc(len + 2);
	size_t o = 0, base, i = 0;

	out[o++] = '/';
	base = o;
	while (i < len) {
		size_t start, clen;

		while (i < len && s[i] == '/')
			i++;
		start = i;
		while (i < len && s[i] != '/')
			i++;
		clen = i - start;
		if (clen == 0 || (clen == 1 && s[start] == '.'))
			continue;
		if (clen == 2 && s[start] == '.' && s[start + 1] == '.') {
			/* drop the last component; at the root there is none */
			while (o > base && out[o - 1] != '/')
				o--;
			if (o > base)
				o--;
			continue;
		}
		if (o > base)
			out[o++] = '/';
		memcpy(out + o, s + start, clen);
		o += clen;
	}
	return json_stringn_nocheck(out, o);
}

static json_t *join_argv(const json_t *argv)
{
	cleanup_free char *buf = NULL;
	size_t total = 0, o = 0, i;
	json_t *a;

	if (!json_is_array(argv))
		return NULL;
	json_array_foreach(argv, i, a)
	{
		if (!json_is_string(a))
			return NULL;
		total += json_string_length(a) + 1;
	}
	buf = xmalloc(total + 1);
	json_array_foreach(argv, i, a)
	{
		if (i > 0)
			buf[o++] = ' ';
		memcpy(buf + o, json_string_value(a), json_string_length(a));
		o += json_string_length(a);
	}
	return json_stringn_nocheck(buf, o);
}

static void view_init(struct view *v, const json_t *args)
{
	json_t *x;

	memset(v, 0, sizeof(*v));
	v->obj = json_is_object(args) ? args : NULL;
	if (v->obj == NULL)
		return;
	if (json_object_get(v->obj, "command") == NULL)
		v->command = join_argv(json_object_get(v->obj, "argv"));
	x = json_object_get(v->obj, "path");
	if (json_is_string(x))
		v->path = normalize_path(json_string_value(x), json_string_length(x));
	x = json_object_get(v->obj, "cwd");
	if (json_is_string(x))
		v->cwd = normalize_path(json_string_value(x), json_string_length(x));
}

static void view_clear(struct view *v)
{
	json_decref(v->command);
	json_decref(v->path);
	json_decref(v->cwd);
}

static const json_t *view_get(const struct view *v, const char *name)
{
	if (v->command != NULL && strcmp(name, "command") == 0)
		return v->command;
	if (v->path != NULL && strcmp(name, "path") == 0)
		return v->path;
	if (v->cwd != NULL && strcmp(name, "cwd") == 0)
		return v->cwd;
	return v->obj != NULL ? json_object_get(v->obj, name) : NULL;
}

static bool regex_match(const regex_t *re, const char *s, size_t len)
{
#ifdef REG_STARTEND
	/* the whole string, NUL bytes and all: a NUL must not end the look early */
	regmatch_t pm = {.rm_so = 0, .rm_eo = (regoff_t)len};
	return regexec(re, s, 1, &pm, REG_STARTEND) == 0;
#else
	return regexec(re, s, 0, NULL, 0) == 0;
#endif
}

/* a < b: -1, a == b: 0, a > b: 1, comparing exactly when both are integers */
static int num_cmp(const json_t *a, const json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b)) {
		json_int_t x = json_integer_value(a), y = json_integer_value(b);
		return x < y ? -1 : x > y;
	}
	double x = json_number_value(a), y = json_number_value(b);
	return x < y ? -1 : x > y;
}

static bool matcher_match(const struct matcher *m, const json_t *v)
{
	if (m->exists >= 0 && (v != NULL) != (m->exists == 1))
		return false;
	if (m->equals != NULL && (v == NULL || !json_equal((json_t *)v, m->equals)))
		return false;
	if (m->glob != NULL || m->has_regex || m->prefix != NULL) {
		const char *s;
		size_t len;

		if (!json_is_string(v))
			return false;
		s = json_string_value(v);
		len = json_string_length(v);
		if (m->glob != NULL && !glob_match(m->glob, s, len))
			return false;
		if (m->has_regex && !regex_match(&m->regex, s, len))
			return false;
		if (m->prefix != NULL &&
		    (len < m->prefix_len || memcmp(s, m->prefix, m->prefix_len) != 0))
			return false;
	}
	if (m->has_min_len || m->has_max_len) {
		size_t len;

		if (json_is_string(v))
			len = json_string_length(v);
		else if (json_is_array(v))
			len = json_array_size(v);
		else
			return false;
		if (m->has_min_len && len < m->min_len)
			return false;
		if (m->has_max_len && len > m->max_len)
			return false;
	}
	if (m->min != NULL || m->max != NULL) {
		if (!json_is_number(v))
			return false;
		if (m->min != NULL && num_cmp(v, m->min) < 0)
			return false;
		if (m->max != NULL && num_cmp(v, m->max) > 0)
			return false;
	}
	if (m->n_any > 0) {
		bool hit = false;
		for (size_t i = 0; i < m->n_any && !hit; i++)
			hit = matcher_match(&m->any[i], v);
		if (!hit)
			return false;
	}
	if (m->not_ != NULL && matcher_match(m->not_, v))
		return false;
	return true;
}

static bool rule_match(const struct rule *r, const char *tool, const struct view *args,
		       const json_t *context)
{
	if (r->tools != NULL) {
		char **t = r->tools;
		while (*t != NULL && strcmp(*t, tool) != 0)
			t++;
		if (*t == NULL)
			return false;
	}
	for (size_t i = 0; i < r->n_args; i++)
		if (!matcher_match(&r->args[i].m, view_get(args, r->args[i].name)))
			return false;
	for (size_t i = 0; i < r->n_ctx; i++) {
		const json_t *v =
		    json_is_object(context) ? json_object_get(context, r->ctx[i].name) : NULL;
		if (!matcher_match(&r->ctx[i].m, v))
			return false;
	}
	return true;
}

void policy_classify(const struct policy *p, const char *tool, const json_t *args,
		     const json_t *context, struct policy_decision *out)
{
	struct view v;

	if (tool == NULL)
		tool = "";
	view_init(&v, args);
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *r = &p->rules[i];
		if (rule_match(r, tool, &v, context)) {
			out->verdict = r->verdict;
			out->risk = r->risk;
			out->rule = xstrdup(r->name);
			out->reason = xstrdup(r->reason);
			view_clear(&v);
			return;
		}
	}
	view_clear(&v);
	out->verdict = p->def_verdict;
	out->risk = p->def_risk;
	out->rule = xstrdup("default");
	out->reason = xstrdup(p->def_reason);
}

void policy_decision_clear(struct policy_decision *d)
{
	free(d->rule);
	free(d->reason);
	d->rule = NULL;
	d->reason = NULL;
}
