/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The audit log.  Every line is one entry, the canonical JSON of the entry
 * (keys sorted, compact, ASCII), whose "hash" is the SHA-256 of the same
 * entry without "hash", and whose "prev" is the hash of the line before.
 * Changing, removing or reordering a line therefore breaks the chain at
 * that line; docs/policy.md says what this does and does not protect
 * against.
 */
#include "audit/audit.h"

#include "common/sha256.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* a longer line cannot be verified (the reader is bounded), so none is written */
#define AUDIT_MAX_LINE (1024 * 1024)
#define DUMP_FLAGS     (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)
#define LOAD_FLAGS     (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)

static const char zero_hash[LG_SHA256_HEX_LEN + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

struct audit_log {
	pthread_mutex_t lock;
	int fd;
	char *path;
	uint64_t seq;			  /* of the last entry; 0 when empty */
	char prev[LG_SHA256_HEX_LEN + 1]; /* hash of the last entry */
	off_t size;			  /* bytes of whole entries */
	bool broken;			  /* a failed fsync: the file's state is unknown */
	char *seal_path;		  /* path.seal: the chain's head, see write_seal() */
};

static bool is_hex64(const json_t *v)
{
	const char *s;

	if (!json_is_string(v) || json_string_length(v) != LG_SHA256_HEX_LEN)
		return false;
	s = json_string_value(v);
	for (size_t i = 0; i < LG_SHA256_HEX_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* "2024-05-01T12:00:00.123456Z" */
static bool is_timestamp(const json_t *v)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
	const char *s;

	if (!json_is_string(v) || json_string_length(v) != sizeof(shape) - 1)
		return false;
	s = json_string_value(v);
	for (size_t i = 0; i < sizeof(shape) - 1; i++)
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			return false;
	return true;
}

/*
 * Checks one line (without its '\n') as entry number `seq` following
 * `prev`; on success copies its hash to hash_out.  Returns NULL or what is
 * wrong, in a buffer of why_len bytes.
 */
static const char *check_line(const char *line, size_t len, uint64_t seq, const char *prev,
			      char hash_out[LG_SHA256_HEX_LEN + 1], char *why, size_t why_len)
{
	json_error_t jerr;
	json_t *e;
	json_t *v;
	char *canon = NULL;
	char *full = NULL;
	char hex[LG_SHA256_HEX_LEN + 1];
	const char *res = why;

	if (len == 0)
		return "empty line";
	e = json_loadb(line, len, LOAD_FLAGS, &jerr);
	if (e == NULL) {
		snprintf(why, why_len, "not valid JSON (%s)", jerr.text);
		return why;
	}
	if (!json_is_object(e)) {
		res = "not a JSON object";
		goto out;
	}
	v = json_object_get(e, "seq");
	if (!json_is_integer(v) || json_integer_value(v) < 1) {
		res = "\"seq\" missing or not a positive integer";
		goto out;
	}
	if ((uint64_t)json_integer_value(v) != seq) {
		snprintf(why, why_len,
			 "seq is %" JSON_INTEGER_FORMAT ", expected %llu (an entry "
			 "was removed, inserted or moved)",
			 json_integer_value(v), (unsigned long long)seq);
		goto out;
	}
	if (!is_timestamp(json_object_get(e, "ts"))) {
		res = "\"ts\" missing or not an RFC 3339 UTC time";
		goto out;
	}
	if (!json_is_string(json_object_get(e, "type"))) {
		res = "\"type\" missing or not a string";
		goto out;
	}
	v = json_object_get(e, "prev");
	if (!is_hex64(v)) {
		res = "\"prev\" missing or not a SHA-256 in hex";
		goto out;
	}
	if (strcmp(json_string_value(v), prev) != 0) {
		res = "\"prev\" is not the hash of the entry before (an entry was removed, "
		      "inserted or changed)";
		goto out;
	}
	v = json_object_get(e, "hash");
	if (!is_hex64(v)) {
		res = "\"hash\" missing or not a SHA-256 in hex";
		goto out;
	}
	memcpy(hash_out, json_string_value(v), LG_SHA256_HEX_LEN + 1);
	/* byte for byte what audit_append writes, so no edit hides in the formatting */
	full = json_dumps(e, DUMP_FLAGS);
	if (full == NULL || strlen(full) != len || memcmp(full, line, len) != 0) {
		res = "not in canonical form (the line was edited)";
		goto out;
	}
	json_object_del(e, "hash");
	canon = json_dumps(e, DUMP_FLAGS);
	if (canon == NULL) {
		res = "cannot re-encode the entry";
		goto out;
	}
	lg_sha256_hex_of(canon, strlen(canon), hex);
	if (strcmp(hex, hash_out) != 0) {
		res = "\"hash\" does not match the entry (the entry was changed)";
		goto out;
	}
	res = NULL;
out:
	free(canon);
	free(full);
	json_decref(e);
	return res;
}

/* ---- the seal ------------------------------------------------------------------ */

/*
 * The chain proves that no entry was changed, removed or moved *between*
 * two others, but lines cut off at the end leave a shorter, valid chain.
 * So the head of the chain (entry count and last hash) is also kept in a
 * second file, path.seal, replaced atomically (temp file, fsync, rename,
 * fsync of the directory) after every append, under the same flock as the
 * append.  Truncating or emptying the log alone then no longer matches the
 * seal.  Deleting or rewriting both files stays possible for whoever can
 * write the directory: docs/policy.md says so.
 */
static char *seal_path_of(const char *path)
{
	return xasprintf("%s.seal", path);
}

static int fsync_dir_of(const char *path)
{
	cleanup_free char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	cleanup_close int fd = -1;

	if (slash == dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	else
		strcpy(dir, ".");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

/* Writes data to path atomically and durably: temp file, fsync, rename, fsync dir. */
static int write_atomic(const char *path, const void *data, size_t len, struct lg_err **err)
{
	cleanup_free char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	cleanup_close int fd = -1;
	ssize_t w;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return lg_err_sys(err, "create `%s`", tmp);
	w = lg_write_all(fd, data, len);
	if (w < 0 || fsync(fd) < 0) {
		int e = w < 0 ? (int)-w : errno;
		unlink(tmp);
		return lg_err_set(err, e, "write `%s`", tmp);
	}
	if (rename(tmp, path) < 0) {
		int r = lg_err_sys(err, "rename `%s` to `%s`", tmp, path);
		unlink(tmp);
		return r;
	}
	if (fsync_dir_of(path) < 0)
		return lg_err_sys(err, "fsync the directory of `%s`", path);
	return 0;
}

static int write_seal(const char *seal_path, uint64_t entries, const char *hash,
		      struct lg_err **err)
{
	char buf[160];
	int n = snprintf(buf, sizeof(buf), "{\"entries\":%llu,\"hash\":\"%s\"}\n",
			 (unsigned long long)entries, hash);

	return write_atomic(seal_path, buf, (size_t)n, err);
}

/* 1: read into *entries and hash; 0: no seal file; <0: *err. */
static int read_seal(const char *seal_path, uint64_t *entries, char hash[LG_SHA256_HEX_LEN + 1],
		     struct lg_err **err)
{
	json_error_t jerr;
	json_t *j, *n, *h;

	j = json_load_file(seal_path, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL) {
		if (access(seal_path, F_OK) < 0 && errno == ENOENT)
			return 0;
		return lg_err_msg(err, EBADMSG, "seal `%s` is not readable JSON: %s", seal_path,
				  jerr.text);
	}
	n = json_object_get(j, "entries");
	h = json_object_get(j, "hash");
	if (!json_is_integer(n) || json_integer_value(n) < 0 || !is_hex64(h)) {
		json_decref(j);
		return lg_err_msg(err, EBADMSG, "seal `%s` is malformed", seal_path);
	}
	*entries = (uint64_t)json_integer_value(n);
	memcpy(hash, json_string_value(h), LG_SHA256_HEX_LEN + 1);
	json_decref(j);
	return 1;
}

/* ---- side files ------------------------------------------------------------------ */

char *audit_blob_dir(const char *path)
{
	return xasprintf("%s.blobs", path);
}

int audit_put_blob(struct audit_log *a, const void *data, size_t len,
		   char ref[AUDIT_BLOB_REF_LEN + 1], struct lg_err **err)
{
	char hex[LG_SHA256_HEX_LEN + 1];
	cleanup_free char *dir = audit_blob_dir(a->path);
	cleanup_free char *file = NULL;
	struct stat st;
	int r;

	lg_sha256_hex_of(data, len, hex);
	snprintf(ref, AUDIT_BLOB_REF_LEN + 1, "sha256:%s", hex);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return lg_err_sys(err, "create `%s`", dir);
	file = xasprintf("%s/%s", dir, hex);
	/* Named by its hash: one already there holds the same bytes (verify checks). */
	if (lstat(file, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == len)
		return 0;
	r = write_atomic(file, data, len, err);
	if (r < 0)
		lg_err_wrap(err, "audit side file");
	return r;
}

/* Checks the side file named by ref (sha256:HEX).  NULL or what is wrong. */
static const char *check_blob(const char *path, const char *ref, char *why, size_t why_len)
{
	cleanup_free char *file = NULL;
	cleanup_free char *dir = audit_blob_dir(path);
	cleanup_close int fd = -1;
	struct lg_sha256 ctx;
	uint8_t d[LG_SHA256_LEN];
	char hex[LG_SHA256_HEX_LEN + 1];
	char buf[65536];
	ssize_t n;

	file = xasprintf("%s/%s", dir, ref + 7);
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(why, why_len, "side file %s: %s", file, strerror(errno));
		return why;
	}
	lg_sha256_init(&ctx);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		lg_sha256_update(&ctx, buf, (size_t)n);
	if (n < 0) {
		snprintf(why, why_len, "side file %s: %s", file, strerror(errno));
		return why;
	}
	lg_sha256_final(&ctx, d);
	lg_sha256_hex(d, hex);
	if (strcmp(hex, ref + 7) != 0) {
		snprintf(why, why_len, "side file %s does not match its hash (it was changed)",
			 file);
		return why;
	}
	return NULL;
}

/* Every top-level "sha256:HEX" string of an entry names a side file. */
static const char *check_blobs(const char *path, const char *line, size_t len, char *why,
			       size_t why_len)
{
	json_t *e;
	const char *k;
	json_t *v;
	const char *bad = NULL;

	if (memmem(line, len, "\"sha256:", 8) == NULL)
		return NULL;
	e = json_loadb(line, len, LOAD_FLAGS, NULL);
	json_object_foreach(e, k, v)
	{
		const char *s = json_string_value(v);
		if (s != NULL && strncmp(s, "sha256:", 7) == 0 &&
		    json_string_length(v) == AUDIT_BLOB_REF_LEN) {
			json_t *h = json_string(s + 7);
			bool hex = is_hex64(h);
			json_decref(h);
			if (hex && (bad = check_blob(path, s, why, why_len)) != NULL)
				break;
		}
	}
	json_decref(e);
	return bad;
}

/* ---- append ------------------------------------------------------------------- */

/*
 * Reads the last line of a log of `size` bytes, which must end in '\n'.
 * Scans back from the end a chunk at a time, never further than a line can
 * be long, so opening a large log costs no more than one line.
 */
static int read_last_line(int fd, off_t size, char **line, size_t *len, struct lg_err **err)
{
	size_t cap = AUDIT_MAX_LINE + 1;
	size_t span = (uint64_t)size < cap ? (size_t)size : cap;
	cleanup_free char *buf = xmalloc(span);
	off_t start = size - (off_t)span;
	size_t i;
	int r;

	r = lg_pread_exact(fd, buf, span, (uint64_t)start, (uint64_t)size);
	if (r < 0)
		return lg_err_set(err, -r, "read");
	if (buf[span - 1] != '\n')
		return lg_err_msg(err, EBADMSG,
				  "the last line is incomplete (a write was cut short; "
				  "see `luminaguard audit verify`)");
	for (i = span - 1; i > 0 && buf[i - 1] != '\n'; i--)
		;
	if (i == 0 && start > 0)
		return lg_err_msg(err, EBADMSG, "the last line is longer than %d bytes",
				  AUDIT_MAX_LINE);
	*len = span - 1 - i;
	*line = xmalloc(*len + 1);
	memcpy(*line, buf + i, *len);
	(*line)[*len] = '\0';
	return 0;
}

/* The last entry's seq and hash, checked on their own (the chain is not). */
static int load_tail(struct audit_log *a, struct lg_err **err)
{
	cleanup_free char *line = NULL;
	json_t *e, *seq, *prev;
	char prev_hex[LG_SHA256_HEX_LEN + 1];
	size_t len = 0;
	char why[256];
	const char *bad;
	int r;

	if (a->size == 0) {
		a->seq = 0;
		memcpy(a->prev, zero_hash, sizeof(a->prev));
		return 0;
	}
	r = read_last_line(a->fd, a->size, &line, &len, err);
	if (r < 0)
		return r;
	e = json_loadb(line, len, LOAD_FLAGS, NULL);
	seq = json_object_get(e, "seq");
	prev = json_object_get(e, "prev");
	if (!json_is_integer(seq) || json_integer_value(seq) < 1 || !is_hex64(prev)) {
		json_decref(e);
		return lg_err_msg(err, EBADMSG,
				  "the last line is not an audit entry (run `luminaguard "
				  "audit verify`)");
	}
	a->seq = (uint64_t)json_integer_value(seq);
	/* its prev is taken on trust here (verify checks the chain); its hash must be right */
	memcpy(prev_hex, json_string_value(prev), sizeof(prev_hex));
	json_decref(e);
	bad = check_line(line, len, a->seq, prev_hex, a->prev, why, sizeof(why));
	if (bad != NULL)
		return lg_err_msg(err, EBADMSG,
				  "the last line is not a valid entry: %s (run "
				  "`luminaguard audit verify`)",
				  bad);
	return 0;
}

/*
 * A log shorter than its seal was cut: refuse to append to it (new entries
 * would hide the cut).  A log without a seal (new, or written before there
 * were seals) gets one for its current head.  Under the flock.
 */
static int check_seal_on_open(struct audit_log *a, struct lg_err **err)
{
	char hash[LG_SHA256_HEX_LEN + 1];
	uint64_t n = 0;
	int r = read_seal(a->seal_path, &n, hash, err);

	if (r < 0)
		return r;
	if (r == 0)
		return write_seal(a->seal_path, a->seq, a->prev, err);
	if (a->seq < n)
		return lg_err_msg(err, EBADMSG,
				  "the log has %llu entries but its seal says %llu: it was cut "
				  "short (run `luminaguard audit verify`)",
				  (unsigned long long)a->seq, (unsigned long long)n);
	if (a->seq == n && strcmp(a->prev, hash) != 0)
		return lg_err_msg(err, EBADMSG,
				  "the last entry is not the one the seal names: the log was "
				  "rewritten (run `luminaguard audit verify`)");
	return 0;
}

int audit_open(const char *path, struct audit_log **out, struct lg_err **err)
{
	struct audit_log *a;
	struct stat st;
	int fd, r;

	*out = NULL;
	/* 0600: the log records what agents asked for, arguments included */
	fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return lg_err_sys(err, "open audit log `%s`", path);
	if (fstat(fd, &st) < 0) {
		r = lg_err_sys(err, "stat audit log `%s`", path);
		close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return lg_err_msg(err, EINVAL, "audit log `%s` is not a regular file", path);
	}
	a = xzalloc(sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	a->fd = fd;
	a->path = xstrdup(path);
	a->size = st.st_size;
	/* Under the writers' lock, so we do not read another writer's half line. */
	if (flock(fd, LOCK_EX) < 0) {
		r = lg_err_sys(err, "lock audit log `%s`", path);
		audit_close(a);
		return r;
	}
	/* The size again, under the lock: the seal may name entries appended since. */
	if (fstat(fd, &st) == 0)
		a->size = st.st_size;
	r = load_tail(a, err);
	a->seal_path = seal_path_of(path);
	if (r == 0)
		r = check_seal_on_open(a, err);
	flock(fd, LOCK_UN);
	if (r < 0) {
		lg_err_wrap(err, "audit log `%s`", path);
		audit_close(a);
		return r;
	}
	*out = a;
	return 0;
}

static void now_rfc3339(char buf[32])
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 32 - n, ".%06ldZ", ts.tv_nsec / 1000);
}

int audit_append(struct audit_log *a, const json_t *event, struct lg_err **err)
{
	static const char *const reserved[] = {"seq", "ts", "prev", "hash"};
	json_t *e;
	char *canon = NULL;
	char *line = NULL;
	char ts[32];
	char hex[LG_SHA256_HEX_LEN + 1];
	size_t len;
	ssize_t w;
	bool locked = false;
	int r = 0;

	if (!json_is_object(event))
		return lg_err_set(err, EINVAL, "audit: event is not a JSON object");
	if (!json_is_string(json_object_get(event, "type")))
		return lg_err_set(err, EINVAL, "audit: event has no \"type\" string");
	for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
		if (json_object_get(event, reserved[i]) != NULL)
			return lg_err_set(err, EINVAL,
					  "audit: event carries \"%s\", which the log sets",
					  reserved[i]);
	/* a deep copy: the caller's event is borrowed and may be shared */
	e = json_deep_copy(event);
	if (e == NULL)
		return lg_err_set(err, ENOMEM, "audit: copy event");

	pthread_mutex_lock(&a->lock);
	if (a->broken) {
		r = lg_err_set(err, EIO, "audit log `%s`: an earlier write failed", a->path);
		goto out;
	}
	/*
	 * Several processes may append to one log (two MCP servers of one
	 * user, say).  Each append holds an exclusive flock from reading the
	 * tail to fsync, so the chain continues from the entry that is really
	 * last and never forks.  The lock goes with the fd, also if we die.
	 */
	if (flock(a->fd, LOCK_EX) < 0) {
		r = lg_err_sys(err, "lock audit log `%s`", a->path);
		goto out;
	}
	locked = true;
	{
		struct stat st;
		if (fstat(a->fd, &st) < 0) {
			r = lg_err_sys(err, "stat audit log `%s`", a->path);
			goto out;
		}
		if (st.st_size != a->size) {
			/* Another writer appended since our last entry: continue from its. */
			a->size = st.st_size;
			r = load_tail(a, err);
			if (r < 0) {
				lg_err_wrap(err, "audit log `%s`", a->path);
				goto out;
			}
		}
	}
	now_rfc3339(ts);
	json_object_set_new(e, "seq", json_integer((json_int_t)(a->seq + 1)));
	json_object_set_new(e, "ts", json_string(ts));
	json_object_set_new(e, "prev", json_string(a->prev));
	canon = json_dumps(e, DUMP_FLAGS);
	if (canon == NULL) {
		r = lg_err_set(err, EINVAL, "audit: cannot encode event");
		goto out;
	}
	lg_sha256_hex_of(canon, strlen(canon), hex);
	json_object_set_new(e, "hash", json_string(hex));
	line = json_dumps(e, DUMP_FLAGS);
	if (line == NULL) {
		r = lg_err_set(err, EINVAL, "audit: cannot encode event");
		goto out;
	}
	len = strlen(line);
	if (len > AUDIT_MAX_LINE) {
		r = lg_err_set(err, E2BIG, "audit: entry of %zu bytes is larger than %d", len,
			       AUDIT_MAX_LINE);
		goto out;
	}
	line[len] = '\n'; /* json_dumps' NUL is replaced; the line is not a C string now */
	/* one write(2) of the whole line, so a reader never sees half an entry */
	w = lg_write_all(a->fd, line, len + 1);
	if (w < 0) {
		r = lg_err_set(err, (int)-w, "write audit log `%s`", a->path);
		/* drop a partial line so the next entry does not land after garbage */
		if (ftruncate(a->fd, a->size) < 0)
			a->broken = true;
		goto out;
	}
	if (fsync(a->fd) < 0) {
		/* after a failed fsync the page cache may no longer say what is on disk */
		r = lg_err_sys(err, "fsync audit log `%s`", a->path);
		a->broken = true;
		goto out;
	}
	a->seq++;
	a->size += (off_t)(len + 1);
	memcpy(a->prev, hex, sizeof(a->prev));
	/*
	 * Still under the flock, so seals are written in log order.  A crash
	 * before this leaves the seal one entry behind, which verify accepts
	 * (the sealed entry is still in the chain); a failure is reported, so
	 * the caller does not treat the event as safely recorded.
	 */
	r = write_seal(a->seal_path, a->seq, a->prev, err);
	if (r < 0)
		lg_err_wrap(err, "audit log `%s`: update the seal", a->path);
out:
	if (locked)
		flock(a->fd, LOCK_UN);
	pthread_mutex_unlock(&a->lock);
	free(canon);
	free(line);
	json_decref(e);
	return r;
}

void audit_close(struct audit_log *a)
{
	if (a == NULL)
		return;
	close(a->fd);
	pthread_mutex_destroy(&a->lock);
	free(a->seal_path);
	free(a->path);
	free(a);
}

/* ---- verify ------------------------------------------------------------------- */

/* A bounded line reader: a line longer than AUDIT_MAX_LINE is an error, not a malloc. */
struct line_reader {
	int fd;
	char *buf;
	size_t cap, start, end;
	bool eof;
};

/* 1: a line in line and len; 0: end of file; -1: *why says what is wrong. */
static int next_line(struct line_reader *lr, const char **line, size_t *len, const char **why,
		     int *errnum)
{
	for (;;) {
		char *nl = memchr(lr->buf + lr->start, '\n', lr->end - lr->start);
		ssize_t n;

		if (nl != NULL) {
			*line = lr->buf + lr->start;
			*len = (size_t)(nl - *line);
			lr->start += *len + 1;
			return 1;
		}
		if (lr->eof) {
			if (lr->start == lr->end)
				return 0;
			*why = "incomplete last line (no newline at the end: a write was cut short "
			       "or the file was truncated)";
			return -1;
		}
		if (lr->end - lr->start > AUDIT_MAX_LINE) {
			*why = "line longer than 1 MiB";
			return -1;
		}
		memmove(lr->buf, lr->buf + lr->start, lr->end - lr->start);
		lr->end -= lr->start;
		lr->start = 0;
		n = read(lr->fd, lr->buf + lr->end, lr->cap - lr->end);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			*errnum = errno;
			*why = "read";
			return -1;
		}
		if (n == 0)
			lr->eof = true;
		lr->end += (size_t)n;
	}
}

int audit_verify_full(const char *path, struct audit_verify_result *res, struct lg_err **err)
{
	cleanup_close int fd = -1;
	cleanup_free char *buf = NULL;
	cleanup_free char *seal = seal_path_of(path);
	struct line_reader lr = {0};
	char prev[LG_SHA256_HEX_LEN + 1];
	char hash[LG_SHA256_HEX_LEN + 1];
	char seal_hash[LG_SHA256_HEX_LEN + 1];
	uint64_t seal_n = 0;
	char why[512];
	size_t n = 0;
	int sealed;

	memset(res, 0, sizeof(*res));
	memcpy(prev, zero_hash, sizeof(prev));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lg_err_sys(err, "audit log %s: open", path);
	/* The seal first: an append between reading it and the log only adds entries. */
	sealed = read_seal(seal, &seal_n, seal_hash, err);
	if (sealed < 0)
		return sealed;
	/* room for a longest line, its newline, and a read's worth more */
	lr.cap = AUDIT_MAX_LINE + 1 + 65536;
	buf = xmalloc(lr.cap);
	lr.fd = fd;
	lr.buf = buf;
	for (;;) {
		const char *line = NULL, *bad = NULL;
		size_t len = 0;
		int errnum = 0;
		int r = next_line(&lr, &line, &len, &bad, &errnum);

		if (r == 0)
			break;
		if (r < 0)
			return lg_err_set(err, errnum, "audit log %s: line %zu: %s", path, n + 1,
					  bad);
		bad = check_line(line, len, n + 1, prev, hash, why, sizeof(why));
		if (bad == NULL)
			bad = check_blobs(path, line, len, why, sizeof(why));
		if (bad != NULL)
			return lg_err_msg(err, EBADMSG, "audit log %s: line %zu: %s", path, n + 1,
					  bad);
		memcpy(prev, hash, sizeof(prev));
		n++;
		if (sealed > 0 && n == seal_n && strcmp(hash, seal_hash) != 0)
			return lg_err_msg(err, EBADMSG,
					  "audit log %s: line %zu is not the entry its seal names "
					  "(the log was rewritten from there on)",
					  path, n);
	}
	if (sealed > 0 && n < seal_n)
		return lg_err_msg(err, EBADMSG,
				  "audit log %s: %zu entries, but its seal says %llu: entries at "
				  "the end were removed",
				  path, n, (unsigned long long)seal_n);
	res->entries = n;
	memcpy(res->last_hash, prev, sizeof(prev));
	res->sealed = sealed > 0;
	res->seal_entries = seal_n;
	return 0;
}

int audit_verify_last(const char *path, size_t *entries, char last_hash[LG_SHA256_HEX_LEN + 1],
		      struct lg_err **err)
{
	struct audit_verify_result res;
	int r = audit_verify_full(path, &res, err);

	*entries = res.entries;
	if (r == 0 && last_hash != NULL)
		memcpy(last_hash, res.last_hash, sizeof(res.last_hash));
	return r;
}

int audit_verify(const char *path, size_t *entries, struct lg_err **err)
{
	return audit_verify_last(path, entries, NULL, err);
}
