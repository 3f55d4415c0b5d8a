/* SPDX-License-Identifier: Apache-2.0 */
/*
 * /etc/passwd and /etc/group for EXEC's USER (see user.h).  Everything
 * works on (pointer, length) spans of the file in memory: no line or field
 * is copied into a fixed buffer, so a long line is only a long line.
 */
#include "guest/user.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PASSWD_FILE "/etc/passwd"
#define GROUP_FILE  "/etc/group"
/* Longest name accepted in a spec (Linux's utmp has 32; useradd allows 256). */
#define NAME_MAX_LEN 256

struct span {
	const char *p;
	size_t n;
};

/* The next line of *rest (without its '\n'); false at the end. */
static bool next_line(struct span *rest, struct span *line)
{
	const char *nl;

	if (rest->n == 0)
		return false;
	nl = memchr(rest->p, '\n', rest->n);
	line->p = rest->p;
	line->n = nl != NULL ? (size_t)(nl - rest->p) : rest->n;
	rest->p += line->n + (nl != NULL);
	rest->n -= line->n + (nl != NULL);
	if (line->n > 0 && line->p[line->n - 1] == '\r')
		line->n--;
	return true;
}

/* Splits line into at most max ':'-separated fields; returns how many there are. */
static size_t split_fields(struct span line, struct span *f, size_t max)
{
	size_t k = 0;

	while (k < max) {
		const char *c = memchr(line.p, ':', line.n);

		f[k].p = line.p;
		f[k].n = c != NULL ? (size_t)(c - line.p) : line.n;
		k++;
		if (c == NULL)
			break;
		line.n -= f[k - 1].n + 1;
		line.p = c + 1;
	}
	return k;
}

static bool span_eq(struct span s, const char *z)
{
	size_t n = strlen(z);
	return s.n == n && (n == 0 || memcmp(s.p, z, n) == 0);
}

/* A decimal id, 0..2^32-2: (uid_t)-1 means "unchanged" to setresuid and is no id. */
static bool parse_id(struct span s, uint32_t *out)
{
	uint64_t v = 0;

	if (s.n == 0 || s.n > 10)
		return false;
	for (size_t i = 0; i < s.n; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s.p[i] - '0');
	}
	if (v >= UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static char *span_dup(struct span s)
{
	char *z = xmalloc(s.n + 1);

	if (s.n > 0)
		memcpy(z, s.p, s.n);
	z[s.n] = '\0';
	return z;
}

static void add_group(struct guest_user *u, gid_t g)
{
	for (size_t i = 0; i < u->ngroups; i++)
		if (u->groups[i] == g)
			return;
	if (u->ngroups < USER_MAX_GROUPS)
		u->groups[u->ngroups++] = g;
}

/* Does the comma-separated member list name `name`? */
static bool has_member(struct span list, const char *name)
{
	while (list.n > 0) {
		const char *c = memchr(list.p, ',', list.n);
		struct span m = {list.p, c != NULL ? (size_t)(c - list.p) : list.n};

		/* "a, b" happens in hand-edited files. */
		while (m.n > 0 && (m.p[0] == ' ' || m.p[0] == '\t')) {
			m.p++;
			m.n--;
		}
		while (m.n > 0 && (m.p[m.n - 1] == ' ' || m.p[m.n - 1] == '\t'))
			m.n--;
		if (span_eq(m, name))
			return true;
		if (c == NULL)
			break;
		list.n -= (size_t)(c - list.p) + 1;
		list.p = c + 1;
	}
	return false;
}

/* Every group whose member list names u->name. */
static void scan_groups(struct guest_user *u, const char *group, size_t group_len)
{
	struct span rest = {group, group_len}, line;

	while (group != NULL && next_line(&rest, &line)) {
		struct span f[4];
		uint32_t gid;

		/* name:password:gid:members; NIS "+"/"-" lines and comments are not groups. */
		if (line.n == 0 || line.p[0] == '#' || line.p[0] == '+' || line.p[0] == '-')
			continue;
		if (split_fields(line, f, 4) < 4 || !parse_id(f[2], &gid))
			continue;
		if (has_member(f[3], u->name))
			add_group(u, (gid_t)gid);
	}
}

static bool spec_is_uid(const char *spec, uint32_t *uid)
{
	return parse_id((struct span){spec, strlen(spec)}, uid);
}

int user_resolve(const char *spec, const char *passwd, size_t passwd_len, const char *group,
		 size_t group_len, struct guest_user *u, struct lg_err **err)
{
	struct span rest = {passwd, passwd_len}, line;
	size_t len = strlen(spec);
	uint32_t want_uid = 0;
	bool by_uid = spec_is_uid(spec, &want_uid);

	memset(u, 0, sizeof(*u));
	if (!by_uid && (len == 0 || len > NAME_MAX_LEN || strpbrk(spec, ":,\n\r") != NULL ||
			(spec[0] >= '0' && spec[0] <= '9' && strspn(spec, "0123456789") == len)))
		return lg_err_set(err, EINVAL, "bad user '%.64s'", spec);

	while (passwd != NULL && next_line(&rest, &line)) {
		struct span f[7];
		size_t nf;
		uint32_t uid, gid;

		/* name:password:uid:gid:gecos:home:shell; the shell may be missing. */
		if (line.n == 0 || line.p[0] == '#' || line.p[0] == '+' || line.p[0] == '-')
			continue;
		nf = split_fields(line, f, 7);
		if (nf < 4 || f[0].n == 0 || !parse_id(f[2], &uid) || !parse_id(f[3], &gid))
			continue;
		if (by_uid ? uid != want_uid : !span_eq(f[0], spec))
			continue;
		u->uid = (uid_t)uid;
		u->gid = (gid_t)gid;
		u->name = span_dup(f[0]);
		/* Relative or missing: commands start in "/", as login(1) does without a home. */
		u->home = nf >= 6 && f[5].n > 0 && f[5].p[0] == '/' ? span_dup(f[5]) : xstrdup("/");
		add_group(u, u->gid);
		scan_groups(u, group, group_len);
		return 0;
	}
	if (!by_uid)
		return lg_err_msg(err, ENOENT, "no user '%s' in " PASSWD_FILE, spec);
	u->uid = (uid_t)want_uid;
	u->gid = (gid_t)want_uid;
	u->name = xasprintf("%u", want_uid);
	u->home = xstrdup("/");
	add_group(u, u->gid);
	return 0;
}

/* The whole file, bounded; a missing file is empty (an initramfs may have none). */
static int read_small_file(const char *path, char **out, size_t *len, struct lg_err **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	ssize_t n;

	*out = NULL;
	*len = 0;
	if (fd < 0)
		return errno == ENOENT ? 0 : lg_err_sys(err, "open %s", path);
	/* A FIFO or device put there would block or never end. */
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return lg_err_set(err, EINVAL, "%s is not a regular file", path);
	if ((uint64_t)st.st_size > USER_FILE_MAX)
		return lg_err_set(err, EFBIG, "%s is larger than %u bytes", path, USER_FILE_MAX);
	*out = xmalloc((size_t)st.st_size + 1);
	n = lg_read_all(fd, *out, (size_t)st.st_size);
	if (n < 0) {
		free(*out);
		*out = NULL;
		return lg_err_set(err, (int)-n, "read %s", path);
	}
	*len = (size_t)n;
	return 0;
}

int user_lookup(const char *spec, struct guest_user *u, struct lg_err **err)
{
	cleanup_free char *passwd = NULL, *group = NULL;
	size_t plen, glen;
	int r;

	if ((r = read_small_file(PASSWD_FILE, &passwd, &plen, err)) < 0 ||
	    (r = read_small_file(GROUP_FILE, &group, &glen, err)) < 0)
		return r;
	return user_resolve(spec, passwd, plen, group, glen, u, err);
}

void guest_user_free(struct guest_user *u)
{
	free(u->name);
	free(u->home);
	memset(u, 0, sizeof(*u));
}
