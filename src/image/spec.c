/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image spec reader.  Its errors must name the line ("spec.json:3:
 * unknown key ..."), and jansson keeps no positions, so this is a small
 * strict JSON reader of its own, driven by the schema instead of building
 * a generic tree: each value is checked where it is read, and anything the
 * schema does not expect (an unknown key, a number where a string goes)
 * ends the parse at once, so no value is ever skipped over.  The schema
 * nests three deep at most (top object, "files" array, a file's object),
 * which bounds recursion without a depth counter; numbers, true, false and
 * null are lexed only to name them in a type error.
 *
 * The text is untrusted in the sense that a spec may come from anyone's
 * repository: the input is bounded (LG_SPEC_FILE_MAX), so are the counts
 * and lengths in it, strings must be UTF-8 without NUL, and every part of
 * the input quoted in an error is made printable first, so a key cannot
 * forge a second line or a terminal escape.
 */
#include "image/spec.h"

#include "common/encoding.h"
#include "common/err.h"
#include "common/util.h"
#include "image/image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes of input quoted in a message, at most. */
#define QUOTE_MAX 64

enum tok_kind {
	T_EOF,
	T_LBRACE,
	T_RBRACE,
	T_LBRACKET,
	T_RBRACKET,
	T_COLON,
	T_COMMA,
	T_STRING,
	T_NUMBER,
	T_TRUE,
	T_FALSE,
	T_NULL,
};

static const char *const tok_names[] = {
    [T_EOF] = "the end of the file",
    [T_LBRACE] = "an object",
    [T_RBRACE] = "\"}\"",
    [T_LBRACKET] = "an array",
    [T_RBRACKET] = "\"]\"",
    [T_COLON] = "\":\"",
    [T_COMMA] = "\",\"",
    [T_STRING] = "a string",
    [T_NUMBER] = "a number",
    [T_TRUE] = "true",
    [T_FALSE] = "false",
    [T_NULL] = "null",
};

struct tok {
	enum tok_kind kind;
	unsigned line;
	char *str; /* T_STRING: decoded, NUL-terminated, owned */
	size_t len;
};

struct rd {
	const unsigned char *p, *end;
	unsigned line;
	char *origin;	/* printable */
	char *base_dir; /* absolute; computed at the first relative "src" */
	const char *base_arg;
	struct lg_err **err;
};

/*
 * A printable copy of s[0..n) for a one-line message: bytes outside
 * printable ASCII become \xNN, a quote or backslash is escaped, and past
 * max bytes the rest becomes "...".
 */
static char *printable(const char *s, size_t n, size_t max)
{
	char *out = xmalloc((n < max ? n : max) * 4 + 4);
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i == max) {
			memcpy(out + j, "...", 3);
			j += 3;
			break;
		}
		if (c < 0x20 || c >= 0x7f) {
			j += (size_t)sprintf(out + j, "\\x%02x", c);
		} else {
			if (c == '"' || c == '\\')
				out[j++] = '\\';
			out[j++] = (char)c;
		}
	}
	out[j] = '\0';
	return out;
}

static int fail(struct rd *r, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct rd *r, unsigned line, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return lg_err_msg(r->err, EINVAL, "%s:%u: %s", r->origin, line, msg);
}

/* Like fail(), quoting s (made printable) where fmt has its one %s. */
static int fail_quoting(struct rd *r, unsigned line, const char *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_quoting(struct rd *r, unsigned line, const char *s, const char *fmt, ...)
{
	cleanup_free char *q = printable(s, strlen(s), QUOTE_MAX);
	char head[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	/* head holds one "%Q" where the quoted text goes. */
	char *at = strstr(head, "%Q");
	if (at == NULL)
		return fail(r, line, "%s", head);
	*at = '\0';
	return fail(r, line, "%s%s%s", head, q, at + 2);
}

static void tok_free(struct tok *t)
{
	free(t->str);
	t->str = NULL;
}

/* Four hex digits at q (q + 4 <= end checked by the caller); -1 if not hex. */
static long hex4(const unsigned char *q)
{
	long v = 0;

	for (int i = 0; i < 4; i++) {
		int h = lg_hex_digit(q[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

static size_t put_utf8(char *o, unsigned long cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * A string token; r->p is at its opening quote.  The decoded text is never
 * longer than the source (an escape of 6 or 12 bytes becomes at most 3 or
 * 4), so one allocation of the source's length bounds it.
 */
static int lex_string(struct rd *r, struct tok *t)
{
	const unsigned char *q = r->p + 1, *s = q;
	char *out;
	size_t j = 0;
	int ret;

	while (s < r->end && *s != '"') {
		if (*s == '\\' && s + 1 < r->end)
			s++;
		s++;
	}
	if (s >= r->end)
		return fail(r, t->line, "unterminated string");
	out = xmalloc((size_t)(s - q) + 1);
	while (q < s) {
		unsigned char c = *q++;
		long cp;

		if (c < 0x20) {
			ret =
			    fail(r, t->line,
				 "control character 0x%02x in a string (write it as an escape)", c);
			goto bad;
		}
		if (c != '\\') {
			out[j++] = (char)c;
			continue;
		}
		/* The scan above stepped over the byte after every backslash, so q < s. */
		c = *q++;
		switch (c) {
		case '"':
		case '\\':
		case '/':
			out[j++] = (char)c;
			continue;
		case 'b':
			out[j++] = '\b';
			continue;
		case 'f':
			out[j++] = '\f';
			continue;
		case 'n':
			out[j++] = '\n';
			continue;
		case 'r':
			out[j++] = '\r';
			continue;
		case 't':
			out[j++] = '\t';
			continue;
		case 'u':
			break;
		default:
			if (c >= 0x20 && c < 0x7f)
				ret = fail(r, t->line, "invalid escape \"\\%c\" in a string", c);
			else
				ret = fail(r, t->line, "invalid escape in a string");
			goto bad;
		}
		if (s - q < 4 || (cp = hex4(q)) < 0) {
			ret = fail(r, t->line, "\"\\u\" must be followed by 4 hex digits");
			goto bad;
		}
		q += 4;
		if (cp == 0) {
			/* Every value ends up in a C string: a NUL would cut it silently. */
			ret = fail(r, t->line, "\"\\u0000\" in a string: NUL is not allowed");
			goto bad;
		}
		if (cp >= 0xdc00 && cp <= 0xdfff) {
			ret = fail(r, t->line, "unpaired surrogate \"\\u%04lx\" in a string", cp);
			goto bad;
		}
		if (cp >= 0xd800 && cp <= 0xdbff) {
			long lo;
			if (s - q < 6 || q[0] != '\\' || q[1] != 'u' || (lo = hex4(q + 2)) < 0 ||
			    lo < 0xdc00 || lo > 0xdfff) {
				ret = fail(r, t->line,
					   "unpaired surrogate \"\\u%04lx\" in a string", cp);
				goto bad;
			}
			q += 6;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		}
		j += put_utf8(out + j, (unsigned long)cp);
	}
	/* Escapes only ever produce well-formed UTF-8; this checks the raw bytes. */
	if (!lg_utf8_valid((const uint8_t *)out, j)) {
		ret = fail(r, t->line, "invalid UTF-8 in a string");
		goto bad;
	}
	out[j] = '\0';
	t->kind = T_STRING;
	t->str = out;
	t->len = j;
	r->p = s + 1;
	return 0;
bad:
	free(out);
	return ret;
}

static bool is_digit(const struct rd *r, const unsigned char *q)
{
	return q < r->end && *q >= '0' && *q <= '9';
}

/* JSON's number grammar, kept only to name the token in an error. */
static int lex_number(struct rd *r, struct tok *t)
{
	const unsigned char *q = r->p;

	if (*q == '-')
		q++;
	if (q < r->end && *q == '0')
		q++;
	else if (is_digit(r, q))
		while (is_digit(r, q))
			q++;
	else
		return fail(r, t->line, "invalid number");
	if (q < r->end && *q == '.') {
		q++;
		if (!is_digit(r, q))
			return fail(r, t->line, "invalid number");
		while (is_digit(r, q))
			q++;
	}
	if (q < r->end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < r->end && (*q == '+' || *q == '-'))
			q++;
		if (!is_digit(r, q))
			return fail(r, t->line, "invalid number");
		while (is_digit(r, q))
			q++;
	}
	r->p = q;
	t->kind = T_NUMBER;
	return 0;
}

static bool lex_word(struct rd *r, const char *w)
{
	size_t n = strlen(w);

	if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0)
		return false;
	r->p += n;
	return true;
}

static int lex(struct rd *r, struct tok *t)
{
	unsigned char c;

	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\r' || *r->p == '\n')) {
		if (*r->p == '\n')
			r->line++;
		r->p++;
	}
	t->line = r->line;
	t->str = NULL;
	t->len = 0;
	if (r->p == r->end) {
		t->kind = T_EOF;
		return 0;
	}
	c = *r->p;
	switch (c) {
	case '{':
		t->kind = T_LBRACE;
		break;
	case '}':
		t->kind = T_RBRACE;
		break;
	case '[':
		t->kind = T_LBRACKET;
		break;
	case ']':
		t->kind = T_RBRACKET;
		break;
	case ':':
		t->kind = T_COLON;
		break;
	case ',':
		t->kind = T_COMMA;
		break;
	case '"':
		return lex_string(r, t);
	case 't':
		if (!lex_word(r, "true"))
			goto bad;
		t->kind = T_TRUE;
		return 0;
	case 'f':
		if (!lex_word(r, "false"))
			goto bad;
		t->kind = T_FALSE;
		return 0;
	case 'n':
		if (!lex_word(r, "null"))
			goto bad;
		t->kind = T_NULL;
		return 0;
	default:
		if (c == '-' || (c >= '0' && c <= '9'))
			return lex_number(r, t);
		goto bad;
	}
	r->p++;
	return 0;
bad:
	if (c > 0x20 && c < 0x7f)
		return fail(r, t->line, "unexpected character '%c'", c);
	return fail(r, t->line, "unexpected byte 0x%02x", c);
}

/* Reads the next token, which must be `kind`: else "WHAT must be EXPECTED, got X". */
static int want(struct rd *r, struct tok *t, enum tok_kind kind, const char *what,
		const char *expected)
{
	int ret = lex(r, t);

	if (ret < 0)
		return ret;
	if (t->kind != kind) {
		tok_free(t);
		return fail(r, t->line, "%s must be %s, got %s", what, expected,
			    tok_names[t->kind]);
	}
	return 0;
}

/*
 * Steps through an array whose "[" was just read.  Returns 1 with *t the
 * first token of the next element (a string is the whole element), 0 at
 * "]", negative on error.  *index counts the elements seen.
 */
static int next_element(struct rd *r, const char *what, size_t *index, struct tok *t)
{
	int ret = lex(r, t);

	if (ret < 0)
		return ret;
	if (*index > 0) {
		if (t->kind == T_RBRACKET)
			return 0;
		if (t->kind != T_COMMA) {
			tok_free(t);
			return fail(r, t->line, "expected \",\" or \"]\" in %s, got %s", what,
				    tok_names[t->kind]);
		}
		if ((ret = lex(r, t)) < 0)
			return ret;
		if (t->kind == T_RBRACKET)
			return fail(r, t->line, "trailing \",\" before \"]\" in %s", what);
	} else if (t->kind == T_RBRACKET) {
		return 0;
	}
	(*index)++;
	return 1;
}

/*
 * Steps through an object whose "{" was just read.  Returns 1 with *key
 * the next member's name (the caller frees it) and the reader before its
 * value, 0 at "}", negative on error.
 */
static int next_member(struct rd *r, const char *what, size_t *index, struct tok *key)
{
	struct tok t;
	int ret = lex(r, &t);

	if (ret < 0)
		return ret;
	if (*index > 0) {
		if (t.kind == T_RBRACE)
			return 0;
		if (t.kind != T_COMMA) {
			tok_free(&t);
			return fail(r, t.line, "expected \",\" or \"}\" in %s, got %s", what,
				    tok_names[t.kind]);
		}
		if ((ret = lex(r, &t)) < 0)
			return ret;
		if (t.kind == T_RBRACE)
			return fail(r, t.line, "trailing \",\" before \"}\" in %s", what);
	} else if (t.kind == T_RBRACE) {
		return 0;
	}
	if (t.kind != T_STRING) {
		tok_free(&t);
		return fail(r, t.line, "expected a key (a string) in %s, got %s", what,
			    tok_names[t.kind]);
	}
	*key = t;
	if ((ret = lex(r, &t)) < 0)
		goto bad;
	if (t.kind != T_COLON) {
		tok_free(&t);
		ret = fail_quoting(r, t.line, key->str, "expected \":\" after key \"%%Q\", got %s",
				   tok_names[t.kind]);
		goto bad;
	}
	(*index)++;
	return 1;
bad:
	tok_free(key);
	return ret;
}

/* ---- values ---- */

static char *dupn(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static void strv_push(char ***v, size_t *n, char *s)
{
	*v = xrealloc(*v, (*n + 2) * sizeof(**v));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

static size_t strv_len(char **v)
{
	size_t n = 0;

	while (v[n] != NULL)
		n++;
	return n;
}

/*
 * A path inside the image: absolute, bounded, and without a ".." component
 * (the builder joins it under the image root, and ".." would climb out).
 */
static int check_image_path(struct rd *r, unsigned line, const char *what, const char *p)
{
	size_t n = strlen(p);

	if (p[0] != '/')
		return fail_quoting(r, line, p, "%s \"%%Q\" must be an absolute path", what);
	if (n > LG_SPEC_PATH_MAX)
		return fail(r, line, "%s is %zu bytes long, at most %u", what, n, LG_SPEC_PATH_MAX);
	for (const char *c = p; *c;) {
		const char *e = strchrnul(c, '/');
		if (e - c == 2 && c[0] == '.' && c[1] == '.')
			return fail_quoting(r, line, p, "%s \"%%Q\" has a \"..\" component", what);
		c = *e ? e + 1 : e;
	}
	return 0;
}

/* A scalar string value for KEY; *t holds it on success. */
static int scalar(struct rd *r, const char *key, struct tok *t)
{
	char what[64];

	snprintf(what, sizeof(what), "\"%s\"", key);
	return want(r, t, T_STRING, what, "a string");
}

static int parse_name(struct rd *r, struct lg_image_spec *s, const char *key)
{
	struct tok t;
	int ret = scalar(r, key, &t);

	if (ret < 0)
		return ret;
	if (!lg_image_name_valid(t.str)) {
		ret = fail_quoting(r, t.line, t.str,
				   "invalid image name \"%%Q\" (1 to %d letters, digits, '.', '_' "
				   "or '-', not starting with '.')",
				   LG_IMAGE_NAME_MAX);
		tok_free(&t);
		return ret;
	}
	s->name = t.str;
	return 0;
}

static int parse_suite(struct rd *r, struct lg_image_spec *s, const char *key)
{
	struct tok t;
	int ret = scalar(r, key, &t);

	if (ret < 0)
		return ret;
	if (!lg_suite_name_valid(t.str)) {
		ret = fail_quoting(r, t.line, t.str,
				   "invalid suite \"%%Q\" (a Debian suite or codename such as "
				   "\"bookworm\": lowercase letters, digits, '.' and '-')");
		tok_free(&t);
		return ret;
	}
	s->suite = t.str;
	return 0;
}

static int parse_user(struct rd *r, struct lg_image_spec *s, const char *key)
{
	struct tok t;
	int ret = scalar(r, key, &t);

	if (ret < 0)
		return ret;
	if (!lg_user_name_valid(t.str)) {
		ret = fail_quoting(r, t.line, t.str,
				   "invalid user name \"%%Q\" (lowercase letters, digits, '_' "
				   "and '-', starting with a letter or '_', at most %d)",
				   LG_USER_NAME_MAX);
		tok_free(&t);
		return ret;
	}
	s->user = t.str;
	return 0;
}

static int parse_workdir(struct rd *r, struct lg_image_spec *s, const char *key)
{
	struct tok t;
	int ret = scalar(r, key, &t);

	if (ret < 0)
		return ret;
	if ((ret = check_image_path(r, t.line, "\"workdir\"", t.str)) < 0) {
		tok_free(&t);
		return ret;
	}
	s->workdir = t.str;
	return 0;
}

static int parse_packages(struct rd *r, struct lg_image_spec *s, const char *key)
{
	size_t i = 0, n = strv_len(s->packages);
	struct tok t;
	int ret;

	if ((ret = want(r, &t, T_LBRACKET, "\"packages\"", "an array of strings")) < 0)
		return ret;
	while ((ret = next_element(r, "\"packages\"", &i, &t)) == 1) {
		if (t.kind != T_STRING) {
			tok_free(&t);
			return fail(r, t.line, "\"packages\"[%zu] must be a string, got %s", i - 1,
				    tok_names[t.kind]);
		}
		if (i > LG_SPEC_PACKAGES_MAX) {
			tok_free(&t);
			return fail(r, t.line, "\"packages\" has more than %d entries",
				    LG_SPEC_PACKAGES_MAX);
		}
		if (!lg_package_name_valid(t.str)) {
			ret =
			    fail_quoting(r, t.line, t.str,
					 "\"packages\"[%zu]: invalid package name \"%%Q\" (Debian "
					 "names: lowercase letters, digits, '+', '-' and '.', 2 "
					 "to %d, starting with a letter or digit)",
					 i - 1, LG_PACKAGE_NAME_MAX);
			tok_free(&t);
			return ret;
		}
		strv_push(&s->packages, &n, t.str);
	}
	return ret;
}

static int parse_run(struct rd *r, struct lg_image_spec *s, const char *key)
{
	size_t i = 0, n = strv_len(s->run);
	struct tok t;
	int ret;

	if ((ret = want(r, &t, T_LBRACKET, "\"run\"", "an array of strings")) < 0)
		return ret;
	while ((ret = next_element(r, "\"run\"", &i, &t)) == 1) {
		if (t.kind != T_STRING) {
			tok_free(&t);
			return fail(r, t.line, "\"run\"[%zu] must be a string, got %s", i - 1,
				    tok_names[t.kind]);
		}
		if (i > LG_SPEC_RUN_MAX) {
			tok_free(&t);
			return fail(r, t.line, "\"run\" has more than %d entries", LG_SPEC_RUN_MAX);
		}
		if (t.len == 0 || t.len > LG_SPEC_RUN_LEN_MAX) {
			tok_free(&t);
			return fail(r, t.line, "\"run\"[%zu] is %zu bytes long, must be 1 to %d",
				    i - 1, t.len, LG_SPEC_RUN_LEN_MAX);
		}
		strv_push(&s->run, &n, t.str);
	}
	return ret;
}

static bool env_name_valid(const char *k)
{
	size_t n = 0;

	for (const char *c = k; *c; c++, n++) {
		bool alpha = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || *c == '_';
		if (!alpha && (n == 0 || !(*c >= '0' && *c <= '9')))
			return false;
	}
	return n >= 1 && n <= LG_SPEC_ENV_KEY_MAX;
}

struct env_ent {
	const char *kv; /* "KEY=VALUE" in s->env */
	size_t klen;
	unsigned line;
};

static int env_cmp(const void *a, const void *b)
{
	const struct env_ent *x = a, *y = b;
	size_t n = x->klen < y->klen ? x->klen : y->klen;
	int c = memcmp(x->kv, y->kv, n);

	if (c != 0)
		return c;
	if (x->klen != y->klen)
		return x->klen < y->klen ? -1 : 1;
	return x->line < y->line ? -1 : x->line > y->line;
}

/*
 * A repeated variable is an error like a repeated key.  Sorted rather than
 * compared pairwise: 1024 long names with a common prefix would make the
 * pairwise check quadratic in bytes.
 */
static int env_check_dups(struct rd *r, struct env_ent *ents, size_t n)
{
	if (n < 2)
		return 0; /* and ents may be NULL, which qsort must not get */
	qsort(ents, n, sizeof(*ents), env_cmp);
	for (size_t i = 1; i < n; i++) {
		if (ents[i].klen == ents[i - 1].klen &&
		    memcmp(ents[i].kv, ents[i - 1].kv, ents[i].klen) == 0) {
			cleanup_free char *k = dupn(ents[i].kv, ents[i].klen);
			return fail_quoting(
			    r, ents[i].line, k,
			    "duplicate variable \"%%Q\" in \"env\" (first on line %u)",
			    ents[i - 1].line);
		}
	}
	return 0;
}

static int parse_env(struct rd *r, struct lg_image_spec *s, const char *key)
{
	cleanup_free struct env_ent *ents = NULL;
	size_t i = 0, n = strv_len(s->env);
	struct tok k, v;
	int ret;

	if ((ret = want(r, &k, T_LBRACE, "\"env\"", "an object of strings")) < 0)
		return ret;
	while ((ret = next_member(r, "\"env\"", &i, &k)) == 1) {
		if (i > LG_SPEC_ENV_MAX) {
			tok_free(&k);
			return fail(r, k.line, "\"env\" has more than %d variables",
				    LG_SPEC_ENV_MAX);
		}
		if (!env_name_valid(k.str)) {
			ret = fail_quoting(r, k.line, k.str,
					   "invalid variable name \"%%Q\" in \"env\" ([A-Za-z_]"
					   "[A-Za-z0-9_]*, at most %d)",
					   LG_SPEC_ENV_KEY_MAX);
			tok_free(&k);
			return ret;
		}
		if ((ret = lex(r, &v)) < 0) {
			tok_free(&k);
			return ret;
		}
		if (v.kind != T_STRING) {
			tok_free(&v);
			ret = fail_quoting(r, v.line, k.str,
					   "\"env\".\"%%Q\" must be a string, got %s",
					   tok_names[v.kind]);
			tok_free(&k);
			return ret;
		}
		if (v.len > LG_SPEC_ENV_VAL_MAX) {
			ret = fail_quoting(r, v.line, k.str,
					   "\"env\".\"%%Q\" is %zu bytes long, at most %d", v.len,
					   LG_SPEC_ENV_VAL_MAX);
			tok_free(&k);
			tok_free(&v);
			return ret;
		}
		strv_push(&s->env, &n, xasprintf("%s=%s", k.str, v.str));
		ents = xrealloc(ents, i * sizeof(*ents));
		ents[i - 1] = (struct env_ent){.kv = s->env[n - 1], .klen = k.len, .line = k.line};
		tok_free(&k);
		tok_free(&v);
	}
	if (ret < 0)
		return ret;
	return env_check_dups(r, ents, i);
}

/* "0644": 1 to 5 octal digits, 1 to 07777.  JSON has no octal numbers, so a string. */
static bool parse_mode(const char *s, unsigned *mode)
{
	unsigned m = 0;
	size_t n = strlen(s);

	if (n < 1 || n > 5)
		return false;
	for (const char *c = s; *c; c++) {
		if (*c < '0' || *c > '7')
			return false;
		m = m * 8 + (unsigned)(*c - '0');
	}
	if (m == 0 || m > 07777)
		return false;
	*mode = m;
	return true;
}

static int absolute_src(struct rd *r, unsigned line, const char *what, char *src, char **out)
{
	size_t n = strlen(src);

	if (n == 0)
		return fail(r, line, "%s is empty", what);
	if (src[0] != '/') {
		if (r->base_dir == NULL) {
			cleanup_free char *cwd = getcwd(NULL, 0);
			if (cwd == NULL)
				return lg_err_sys(r->err, "%s: current directory", r->origin);
			if (r->base_arg == NULL)
				r->base_dir = steal_pointer(&cwd);
			else if (r->base_arg[0] == '/')
				r->base_dir = xstrdup(r->base_arg);
			else
				r->base_dir = xasprintf("%s/%s", cwd, r->base_arg);
		}
		*out = xasprintf("%s/%s", r->base_dir, src);
	} else {
		*out = xstrdup(src);
	}
	n = strlen(*out);
	if (n > LG_SPEC_PATH_MAX) {
		free(*out);
		*out = NULL;
		return fail(r, line, "%s is %zu bytes long as an absolute path, at most %u", what,
			    n, LG_SPEC_PATH_MAX);
	}
	return 0;
}

static int parse_file(struct rd *r, size_t idx, unsigned open_line, struct lg_image_file *f)
{
	static const char *const keys[] = {"src", "dst", "mode"};
	unsigned seen[3] = {0};
	char what[64];
	size_t i = 0;
	struct tok k, v;
	int ret;

	snprintf(what, sizeof(what), "\"files\"[%zu]", idx);
	while ((ret = next_member(r, what, &i, &k)) == 1) {
		size_t which;
		char vwhat[96];

		for (which = 0; which < ARRAY_SIZE(keys); which++)
			if (strcmp(k.str, keys[which]) == 0)
				break;
		if (which == ARRAY_SIZE(keys)) {
			ret =
			    fail_quoting(r, k.line, k.str,
					 "unknown key \"%%Q\" in %s (known: src, dst, mode)", what);
			tok_free(&k);
			return ret;
		}
		tok_free(&k);
		if (seen[which]) {
			return fail(r, k.line, "duplicate key \"%s\" in %s (first on line %u)",
				    keys[which], what, seen[which]);
		}
		seen[which] = k.line;
		snprintf(vwhat, sizeof(vwhat), "%s.%s", what, keys[which]);
		if ((ret = lex(r, &v)) < 0)
			return ret;
		if (v.kind != T_STRING) {
			tok_free(&v);
			if (which == 2)
				return fail(r, v.line,
					    "%s must be a string of octal digits such as \"0644\", "
					    "got %s",
					    vwhat, tok_names[v.kind]);
			return fail(r, v.line, "%s must be a string, got %s", vwhat,
				    tok_names[v.kind]);
		}
		switch (which) {
		case 0:
			ret = absolute_src(r, v.line, vwhat, v.str, &f->src);
			break;
		case 1:
			ret = check_image_path(r, v.line, vwhat, v.str);
			if (ret == 0 && v.str[v.len - 1] == '/')
				ret = fail_quoting(r, v.line, v.str,
						   "%s \"%%Q\" must name a file, not end in '/'",
						   vwhat);
			if (ret == 0)
				f->dst = steal_pointer(&v.str);
			break;
		default:
			if (!parse_mode(v.str, &f->mode))
				ret =
				    fail_quoting(r, v.line, v.str,
						 "%s \"%%Q\" is not an octal mode from \"0001\" to "
						 "\"7777\" (leave mode out to keep the source's)",
						 vwhat);
			break;
		}
		tok_free(&v);
		if (ret < 0)
			return ret;
	}
	if (ret < 0)
		return ret;
	if (!seen[0])
		return fail(r, open_line, "%s has no \"src\"", what);
	if (!seen[1])
		return fail(r, open_line, "%s has no \"dst\"", what);
	return 0;
}

static int parse_files(struct rd *r, struct lg_image_spec *s, const char *key)
{
	size_t i = 0;
	struct tok t;
	int ret;

	if ((ret = want(r, &t, T_LBRACKET, "\"files\"", "an array of objects")) < 0)
		return ret;
	while ((ret = next_element(r, "\"files\"", &i, &t)) == 1) {
		if (t.kind != T_LBRACE) {
			tok_free(&t);
			return fail(r, t.line, "\"files\"[%zu] must be an object, got %s", i - 1,
				    tok_names[t.kind]);
		}
		if (s->nfiles >= LG_SPEC_FILES_MAX)
			return fail(r, t.line, "\"files\" has more than %d entries",
				    LG_SPEC_FILES_MAX);
		s->files = xrealloc(s->files, (s->nfiles + 1) * sizeof(*s->files));
		s->files[s->nfiles] = (struct lg_image_file){0};
		/* Counted before it is filled, so a half-read entry is freed with the rest. */
		s->nfiles++;
		if ((ret = parse_file(r, i - 1, t.line, &s->files[s->nfiles - 1])) < 0)
			return ret;
	}
	return ret;
}

static const struct field {
	const char *name;
	int (*parse)(struct rd *r, struct lg_image_spec *s, const char *key);
} fields[] = {
    {"name", parse_name},   {"suite", parse_suite}, {"packages", parse_packages},
    {"files", parse_files}, {"env", parse_env},	    {"workdir", parse_workdir},
    {"user", parse_user},   {"run", parse_run},
};
#define KNOWN_KEYS "name, suite, packages, files, env, workdir, user, run"

static int parse_top(struct rd *r, struct lg_image_spec *s)
{
	unsigned seen[ARRAY_SIZE(fields)] = {0};
	size_t i = 0;
	struct tok t;
	int ret;

	if ((ret = lex(r, &t)) < 0)
		return ret;
	if (t.kind == T_EOF)
		return fail(r, t.line, "empty file: expected a JSON object");
	if (t.kind != T_LBRACE) {
		tok_free(&t);
		return fail(r, t.line, "the top level must be an object, got %s",
			    tok_names[t.kind]);
	}
	while ((ret = next_member(r, "the top-level object", &i, &t)) == 1) {
		size_t f;

		for (f = 0; f < ARRAY_SIZE(fields); f++)
			if (strcmp(t.str, fields[f].name) == 0)
				break;
		if (f == ARRAY_SIZE(fields)) {
			ret = fail_quoting(r, t.line, t.str,
					   "unknown key \"%%Q\" (known: " KNOWN_KEYS ")");
			tok_free(&t);
			return ret;
		}
		tok_free(&t);
		if (seen[f])
			return fail(r, t.line, "duplicate key \"%s\" (first on line %u)",
				    fields[f].name, seen[f]);
		seen[f] = t.line;
		if ((ret = fields[f].parse(r, s, fields[f].name)) < 0)
			return ret;
	}
	if (ret < 0)
		return ret;
	if ((ret = lex(r, &t)) < 0)
		return ret;
	if (t.kind != T_EOF) {
		tok_free(&t);
		return fail(r, t.line, "trailing data after the top-level object: %s",
			    tok_names[t.kind]);
	}
	return 0;
}

int lg_image_spec_parse(const char *text, size_t len, const char *origin, const char *base_dir,
			struct lg_image_spec **out, struct lg_err **err)
{
	struct rd r = {
	    .p = (const unsigned char *)text,
	    .end = (const unsigned char *)text + len,
	    .line = 1,
	    .origin = printable(origin ? origin : "spec", strlen(origin ? origin : "spec"), 256),
	    .base_arg = base_dir,
	    .err = err,
	};
	struct lg_image_spec *s;
	int ret;

	*out = NULL;
	if (len > LG_SPEC_FILE_MAX) {
		ret = lg_err_msg(err, EFBIG, "%s: %zu bytes, a spec file holds at most %u",
				 r.origin, len, LG_SPEC_FILE_MAX);
		free(r.origin);
		return ret;
	}
	s = xzalloc(sizeof(*s));
	s->packages = xzalloc(sizeof(char *));
	s->env = xzalloc(sizeof(char *));
	s->run = xzalloc(sizeof(char *));
	ret = parse_top(&r, s);
	free(r.origin);
	free(r.base_dir);
	if (ret < 0) {
		lg_image_spec_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

int lg_image_spec_load(const char *path, struct lg_image_spec **out, struct lg_err **err)
{
	cleanup_close int fd = -1;
	cleanup_free char *buf = NULL, *dir = NULL;
	const char *slash;
	struct stat st;
	ssize_t n;

	*out = NULL;
	/* O_NONBLOCK: a fifo named as the spec must not hang the open. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return lg_err_sys(err, "open %s", path);
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return lg_err_msg(err, EINVAL, "%s: not a regular file", path);
	if (st.st_size > (off_t)LG_SPEC_FILE_MAX)
		return lg_err_msg(err, EFBIG, "%s: %lld bytes, a spec file holds at most %u", path,
				  (long long)st.st_size, LG_SPEC_FILE_MAX);
	/* One byte more than allowed: a file that grew since fstat is caught too. */
	buf = xmalloc(LG_SPEC_FILE_MAX + 1);
	n = lg_read_all(fd, buf, LG_SPEC_FILE_MAX + 1);
	if (n < 0) {
		errno = (int)-n;
		return lg_err_sys(err, "read %s", path);
	}
	if ((size_t)n > LG_SPEC_FILE_MAX)
		return lg_err_msg(err, EFBIG, "%s: a spec file holds at most %u bytes", path,
				  LG_SPEC_FILE_MAX);
	slash = strrchr(path, '/');
	if (slash == NULL)
		dir = xstrdup(".");
	else if (slash == path)
		dir = xstrdup("/");
	else
		dir = dupn(path, (size_t)(slash - path));
	return lg_image_spec_parse(buf, (size_t)n, path, dir, out, err);
}

void lg_image_spec_free(struct lg_image_spec *s)
{
	if (s == NULL)
		return;
	free(s->name);
	free(s->suite);
	lg_strv_free(s->packages);
	for (size_t i = 0; i < s->nfiles; i++) {
		free(s->files[i].src);
		free(s->files[i].dst);
	}
	free(s->files);
	lg_strv_free(s->env);
	free(s->workdir);
	free(s->user);
	lg_strv_free(s->run);
	free(s);
}

static bool lower_or_digit(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool lg_package_name_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL || !lower_or_digit(s[0]))
		return false;
	for (const char *c = s; *c; c++, n++)
		if (!lower_or_digit(*c) && *c != '+' && *c != '-' && *c != '.')
			return false;
	return n >= 2 && n <= LG_PACKAGE_NAME_MAX;
}

bool lg_suite_name_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL || !lower_or_digit(s[0]))
		return false;
	for (const char *c = s; *c; c++, n++)
		if (!lower_or_digit(*c) && *c != '-' && *c != '.')
			return false;
	return n >= 1 && n <= LG_SUITE_NAME_MAX;
}

bool lg_user_name_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return false;
	for (const char *c = s; *c; c++, n++)
		if (!lower_or_digit(*c) && *c != '_' && *c != '-')
			return false;
	return n >= 1 && n <= LG_USER_NAME_MAX;
}

int lg_package_list_parse(const char *csv, char ***out, struct lg_err **err)
{
	char **v = xzalloc(sizeof(char *));
	size_t n = 0;
	const char *c = csv;

	*out = NULL;
	for (;;) {
		const char *e = strchrnul(c, ',');
		const char *b = c, *z = e;
		cleanup_free char *name = NULL, *q = NULL;

		while (b < z && (*b == ' ' || *b == '\t'))
			b++;
		while (z > b && (z[-1] == ' ' || z[-1] == '\t'))
			z--;
		if (b == z) {
			q = printable(csv, strlen(csv), QUOTE_MAX);
			lg_strv_free(v);
			return lg_err_msg(err, EINVAL, "empty package name in the list \"%s\"", q);
		}
		name = dupn(b, (size_t)(z - b));
		if (!lg_package_name_valid(name)) {
			q = printable(name, strlen(name), QUOTE_MAX);
			lg_strv_free(v);
			return lg_err_msg(
			    err, EINVAL,
			    "invalid package name \"%s\" (Debian names: lowercase "
			    "letters, digits, '+', '-' and '.', 2 to %d, starting with "
			    "a letter or digit)",
			    q, LG_PACKAGE_NAME_MAX);
		}
		if (n >= LG_SPEC_PACKAGES_MAX) {
			lg_strv_free(v);
			return lg_err_msg(err, EINVAL, "more than %d packages in the list",
					  LG_SPEC_PACKAGES_MAX);
		}
		strv_push(&v, &n, steal_pointer(&name));
		if (*e == '\0')
			break;
		c = e + 1;
	}
	*out = v;
	return 0;
}
