/* SPDX-License-Identifier: Apache-2.0 */
#include "host/snapshot.h"

#include "common/log.h"
#include "common/paths.h"
#include "common/sha256.h"
#include "common/util.h"
#include "host/sandbox_internal.h"
#include "image/image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define META_FILE  "meta.json"
#define RAM_FILE   "ram"
#define STATE_FILE "state"
/* Bounds on what a restore reads before it trusts anything. */
#define META_MAX  (64u * 1024u)
#define STATE_MAX (64u * 1024u * 1024u)
/* The directory name: the key's first 128 bits (meta.json holds all of it). */
#define DIR_KEY_LEN 32
/* A restore's RAM memfd: no write, growth or shrinking, and no seal undone. */
#define RAM_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008u /* Linux 6.3; glibc before 2.38 lacks it */
#endif
#define COPY_CHUNK (1u << 20)
#define COPY_PAGE  4096u

static void put_identity(FILE *f, const char *what, const char *path)
{
	struct stat st;

	if (path != NULL && stat(path, &st) == 0)
		fprintf(f, "%s=%s:%llu:%lld.%09ld\n", what, path, (unsigned long long)st.st_size,
			(long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	else
		fprintf(f, "%s=-\n", what);
}

/*
 * The key: sha256 of everything a restore must match.  The manifest holds
 * the sha256 of every file of the image (and of lg-agent); the files' size
 * and mtime catch one replaced without its manifest.  The kernel command
 * line is not in it: a restored kernel never reads it again.
 */
static int snapshot_key2(const struct lg_sandbox_plan *p, char key[LG_SHA256_HEX_LEN + 1],
			 char mhex[LG_SHA256_HEX_LEN + 1], struct lg_err **err)
{
	const struct vm_config *c = &p->cfg;
	cleanup_free char *manifest = xasprintf("%s/manifest.json", p->image->dir);
	cleanup_free char *vmm = NULL;
	char *text = NULL;
	size_t n = 0;
	FILE *f;
	int r;

	if (p->backend->identity == NULL || p->backend->save_state == NULL ||
	    p->backend->load_state == NULL)
		return lg_err_msg(err, EOPNOTSUPP, "the %s backend has no snapshots",
				  p->backend->name);
	r = lg_sha256_file(manifest, mhex, err);
	if (r < 0)
		return lg_err_wrap(err, "image '%s'", p->image->name);
	vmm = p->backend->identity(c, err);
	if (vmm == NULL)
		return -EIO;
	f = open_memstream(&text, &n);
	if (f == NULL)
		abort();
	fprintf(f, "luminaguard snapshot format=%d proto=%u\n", LG_SNAPSHOT_FORMAT,
		LG_PROTO_VERSION);
	fprintf(f, "backend=%s accel=%s\n", p->backend->name, hv_accel_name(c->accel));
	fprintf(f, "cpus=%u memory_mib=%llu layer_mib=%llu ram_mib=%llu\n", c->cpus,
		(unsigned long long)c->memory_mib,
		(unsigned long long)(c->rootfs != NULL ? c->layer_mib : 0),
		(unsigned long long)hv_guest_ram_mib(c));
	fprintf(f, "image=%s manifest=%s\n", p->image->name, mhex);
	put_identity(f, "kernel", c->kernel);
	put_identity(f, "initrd", c->initrd);
	put_identity(f, "rootfs", c->rootfs);
	fputs(vmm, f);
	fclose(f);
	lg_sha256_hex_of(text, n, key);
	free(text);
	return 0;
}

static int snapshot_key(const struct lg_sandbox_plan *p, char key[LG_SHA256_HEX_LEN + 1],
			struct lg_err **err)
{
	char mhex[LG_SHA256_HEX_LEN + 1];

	return snapshot_key2(p, key, mhex, err);
}

static char *snapshots_dir(void)
{
	cleanup_free char *home = lg_home_dir();
	return xasprintf("%s/snapshots", home);
}

static char *dir_for_key(const char *base, const char *key)
{
	return xasprintf("%s/%.*s", base, DIR_KEY_LEN, key);
}

int lg_snapshot_dir(const struct lg_sandbox_opts *o, char **dir, struct lg_err **err)
{
	struct lg_sandbox_plan p;
	char key[LG_SHA256_HEX_LEN + 1];
	cleanup_free char *base = NULL;
	int r;

	r = lg_sandbox_plan(o, &p, err);
	if (r < 0)
		return r;
	r = snapshot_key(&p, key, err);
	lg_sandbox_plan_free(&p);
	if (r < 0)
		return r;
	base = snapshots_dir();
	*dir = dir_for_key(base, key);
	return 0;
}

void lg_snapshot_files_close(struct lg_snapshot_files *f)
{
	if (f->state_fd >= 0)
		close(f->state_fd);
	f->state_fd = -1;
	if (f->lock_fd >= 0)
		close(f->lock_fd);
	f->lock_fd = -1;
	if (f->ram_fd >= 0)
		close(f->ram_fd);
	f->ram_fd = -1;
}

static uint64_t ns_of(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_nsec;
}

static bool all_zero(const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != 0)
			return false;
	return true;
}

/*
 * Copies [off, end) of in to the same offsets of mfd, leaving pages of
 * zeros out (a memfd's hole reads as zeros and takes no memory): guest
 * RAM the kernel freed is zeroed often enough to matter.
 */
static int copy_range(int in, int mfd, uint64_t off, uint64_t end, unsigned char *buf)
{
	while (off < end) {
		size_t want = end - off < COPY_CHUNK ? (size_t)(end - off) : COPY_CHUNK;
		ssize_t n = pread(in, buf, want, (off_t)off);
		size_t i = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* shorter than its size: changed under us */
		while (i < (size_t)n) {
			size_t j = i, len;

			while (j < (size_t)n &&
			       !all_zero(buf + j,
					 (size_t)n - j < COPY_PAGE ? (size_t)n - j : COPY_PAGE))
				j += COPY_PAGE;
			len = (j < (size_t)n ? j : (size_t)n) - i;
			for (size_t done = 0; done < len;) {
				ssize_t w = pwrite(mfd, buf + i + done, len - done,
						   (off_t)(off + i + done));
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					return w < 0 ? -errno : -EIO;
				done += (size_t)w;
			}
			i += len;
			while (i < (size_t)n &&
			       all_zero(buf + i,
					(size_t)n - i < COPY_PAGE ? (size_t)n - i : COPY_PAGE))
				i += COPY_PAGE;
		}
		off += (uint64_t)n;
	}
	return 0;
}

/*
 * The RAM file's data (SEEK_DATA/SEEK_HOLE: only what the guest touched;
 * a file system without them gives the whole file as data) into a new
 * memfd, then sealed.  want: the file must be this inode, with this
 * ctime, before and after the copy (NULL: any).
 */
static int ram_memfd(const char *ram_path, const struct stat *want, int *out, struct lg_err **err)
{
	unsigned char *buf = NULL;
	struct stat st, st2;
	uint64_t off = 0;
	int in, mfd = -1, r;

	in = open(ram_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return lg_err_sys(err, "snapshot: %s", ram_path);
	if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = lg_err_msg(err, EINVAL, "snapshot: %s: not a regular file", ram_path);
		goto out;
	}
	if (want != NULL && (st.st_ino != want->st_ino || st.st_dev != want->st_dev ||
			     ns_of(&st.st_ctim) != ns_of(&want->st_ctim))) {
		r = lg_err_msg(err, ESTALE, "snapshot: %s changed while it was checked", ram_path);
		goto out;
	}
	/* Never executable (mode 0666, F_SEAL_EXEC), and no kernel warning about it. */
	mfd = memfd_create("lg-snapshot-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
	if (mfd < 0 && errno == EINVAL) /* before Linux 6.3 */
		mfd = memfd_create("lg-snapshot-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0) {
		r = lg_err_sys(err, "snapshot: memfd_create");
		goto out;
	}
	if (ftruncate(mfd, st.st_size) < 0) {
		r = lg_err_sys(err, "snapshot: memfd of %lld bytes", (long long)st.st_size);
		goto out;
	}
	buf = xmalloc(COPY_CHUNK);
	r = 0;
	while (r == 0 && off < (uint64_t)st.st_size) {
		off_t data = lseek(in, (off_t)off, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break; /* only a hole is left */
		if (data < 0) {
			data = (off_t)off;
			hole = st.st_size;
		} else {
			hole = lseek(in, data, SEEK_HOLE);
			if (hole < 0)
				hole = st.st_size;
		}
		r = copy_range(in, mfd, (uint64_t)data, (uint64_t)hole, buf);
		off = (uint64_t)hole;
	}
	if (r < 0) {
		r = lg_err_set(err, -r, "snapshot: copying %s", ram_path);
		goto out;
	}
	if (want != NULL && (fstat(in, &st2) < 0 || ns_of(&st2.st_ctim) != ns_of(&want->st_ctim))) {
		r = lg_err_msg(err, ESTALE, "snapshot: %s changed while it was copied", ram_path);
		goto out;
	}
	if (fcntl(mfd, F_ADD_SEALS, RAM_SEALS) < 0) {
		r = lg_err_sys(err, "snapshot: sealing the RAM memfd");
		goto out;
	}
	/* The memfd holds the data now: the file's page cache need not stay. */
	posix_fadvise(in, 0, 0, POSIX_FADV_DONTNEED);
	*out = mfd;
	mfd = -1;
	r = 0;
out:
	free(buf);
	if (mfd >= 0)
		close(mfd);
	close(in);
	return r;
}

int lg_snapshot_ram_memfd(const char *ram_path, int *fd, struct lg_err **err)
{
	return ram_memfd(ram_path, NULL, fd, err);
}

/*
 * The sealed RAM memfds of this process, one per snapshot directory:
 * copying (tens of MiB) is paid by the first restore of a snapshot only,
 * and every VM restored from it maps the same pages.  Most recently used
 * first, at most RAM_CACHE_MAX of them: requests choose shapes, and each
 * copy is memory the kernel cannot drop (only swap), so a service asked
 * for many shapes keeps the copies of the ones in use, not of every one
 * it ever restored.  Dropping one only closes our fd: VMs that map it
 * keep its pages until they end.
 */
#define RAM_CACHE_MAX 4u

struct ram_cached {
	char *dir;
	dev_t dev;
	ino_t ino;
	uint64_t ctime_ns;
	int fd;
	struct ram_cached *next;
};

static pthread_mutex_t ram_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ram_cached *ram_cache;

static void ram_cached_free(struct ram_cached *c)
{
	close(c->fd); /* VMs that map it keep its pages */
	free(c->dir);
	free(c);
}

/* Caller holds ram_cache_lock. */
static void ram_cache_drop_locked(const char *dir)
{
	for (struct ram_cached **pp = &ram_cache; *pp != NULL;) {
		struct ram_cached *c = *pp;

		if (strcmp(c->dir, dir) == 0) {
			*pp = c->next;
			ram_cached_free(c);
		} else {
			pp = &c->next;
		}
	}
}

/* A snapshot remade or removed: its RAM copy goes (once no VM maps it). */
static void ram_cache_drop(const char *dir)
{
	pthread_mutex_lock(&ram_cache_lock);
	ram_cache_drop_locked(dir);
	pthread_mutex_unlock(&ram_cache_lock);
}

/* *fd: a new fd of the sealed copy of dir's RAM file, which is st. */
static int ram_cache_get(const char *dir, const char *ram_path, const struct stat *st, int *fd,
			 struct lg_err **err)
{
	struct ram_cached *c;
	int r = 0;

	pthread_mutex_lock(&ram_cache_lock);
	for (c = ram_cache; c != NULL; c = c->next) {
		if (strcmp(c->dir, dir) == 0)
			break;
	}
	if (c != NULL &&
	    (c->dev != st->st_dev || c->ino != st->st_ino || c->ctime_ns != ns_of(&st->st_ctim))) {
		ram_cache_drop_locked(dir);
		c = NULL;
	}
	if (c != NULL && c != ram_cache) {
		/* To the front: the most recently used. */
		for (struct ram_cached **pp = &ram_cache; *pp != NULL; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
		c->next = ram_cache;
		ram_cache = c;
	}
	if (c == NULL) {
		int mfd;

		r = ram_memfd(ram_path, st, &mfd, err);
		if (r == 0) {
			c = xzalloc(sizeof(*c));
			c->dir = xstrdup(dir);
			c->dev = st->st_dev;
			c->ino = st->st_ino;
			c->ctime_ns = ns_of(&st->st_ctim);
			c->fd = mfd;
			c->next = ram_cache;
			ram_cache = c;
			/* Over the cap: the least recently used copies go. */
			unsigned n = 0;
			for (struct ram_cached **pp = &ram_cache; *pp != NULL;) {
				struct ram_cached *old = *pp;
				if (++n <= RAM_CACHE_MAX) {
					pp = &old->next;
					continue;
				}
				*pp = old->next;
				ram_cached_free(old);
			}
		}
	}
	if (r == 0) {
		*fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 3);
		if (*fd < 0)
			r = lg_err_sys(err, "snapshot: dup");
	}
	pthread_mutex_unlock(&ram_cache_lock);
	return r;
}

static int stale(struct lg_err **err, const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int stale(struct lg_err **err, const char *dir, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return lg_err_msg(err, ESTALE,
			  "snapshot %s is stale or damaged (%s); it is rebuilt by "
			  "the next lg_snapshot_ensure",
			  dir, why);
}

static bool json_u64(json_t *o, const char *k, uint64_t *out)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

/* ram_st: the RAM file as checked. */
static int snapshot_check(const char *dir, const struct lg_sandbox_plan *p,
			  struct lg_snapshot_files *out, struct stat *ram_st, struct lg_err **err)
{
	char key[LG_SHA256_HEX_LEN + 1], hex[LG_SHA256_HEX_LEN + 1];
	cleanup_free char *meta_path = xasprintf("%s/" META_FILE, dir);
	cleanup_free char *state_path = xasprintf("%s/" STATE_FILE, dir);
	cleanup_free char *ram_path = xasprintf("%s/" RAM_FILE, dir);
	cleanup_free char *text = NULL;
	json_t *meta = NULL, *ram, *state;
	json_error_t jerr;
	uint64_t format, ram_size, ino, mtime, ctime_ns, state_size, got;
	const char *mkey, *msha;
	struct stat st;
	ssize_t n;
	int fd = -1, r;

	r = snapshot_key(p, key, err);
	if (r < 0)
		return r;
	fd = open(meta_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return lg_err_set(err, ENOENT, "no snapshot in %s", dir);
		return stale(err, dir, "%s: %s", META_FILE, strerror(errno));
	}
	text = xmalloc(META_MAX + 1);
	n = lg_read_all(fd, text, META_MAX + 1);
	close(fd);
	fd = -1;
	if (n < 0 || (size_t)n > META_MAX)
		return stale(err, dir, "%s unreadable or over %u bytes", META_FILE, META_MAX);
	meta = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(meta)) {
		json_decref(meta);
		return stale(err, dir, "%s is not a JSON object", META_FILE);
	}
	ram = json_object_get(meta, "ram");
	state = json_object_get(meta, "state");
	mkey = json_string_value(json_object_get(meta, "key"));
	msha = json_string_value(json_object_get(state, "sha256"));
	if (!json_u64(meta, "format", &format) || format != LG_SNAPSHOT_FORMAT) {
		r = stale(err, dir, "format %lld, this build reads %d",
			  (long long)json_integer_value(json_object_get(meta, "format")),
			  LG_SNAPSHOT_FORMAT);
		goto out;
	}
	if (mkey == NULL || strcmp(mkey, key) != 0) {
		r = stale(err, dir, "made for another image, size, kernel or VMM");
		goto out;
	}
	if (!json_u64(ram, "size", &ram_size) || !json_u64(ram, "ino", &ino) ||
	    !json_u64(ram, "mtime_ns", &mtime) || !json_u64(ram, "ctime_ns", &ctime_ns) ||
	    !json_u64(state, "size", &state_size) || msha == NULL) {
		r = stale(err, dir, "%s lacks a field", META_FILE);
		goto out;
	}
	/*
	 * The RAM file (hundreds of MiB) is not hashed on every restore: its
	 * size, inode and times must be the ones recorded when it was made.
	 * Any write to it, through any path, moves its ctime, which nobody
	 * can set back.
	 */
	if (lstat(ram_path, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = stale(err, dir, "no RAM file");
		goto out;
	}
	if ((uint64_t)st.st_size != ram_size || ram_size != hv_guest_ram_mib(&p->cfg) << 20) {
		r = stale(err, dir, "RAM file of %llu bytes, want %llu",
			  (unsigned long long)st.st_size,
			  (unsigned long long)(hv_guest_ram_mib(&p->cfg) << 20));
		goto out;
	}
	if ((uint64_t)st.st_ino != ino || ns_of(&st.st_mtim) != mtime ||
	    ns_of(&st.st_ctim) != ctime_ns) {
		r = stale(err, dir, "the RAM file changed after the snapshot was made");
		goto out;
	}
	/* Only this process reads it (restores map a sealed copy). */
	if ((st.st_mode & 077) != 0) {
		r = stale(err, dir, "the RAM file is open to other users (mode %04o)",
			  st.st_mode & 07777);
		goto out;
	}
	*ram_st = st;
	/*
	 * The device state is small (about 60 KiB): it is hashed whole, from
	 * the very fd QEMU then reads, because QEMU's loader is what would
	 * parse a damaged one, and a state that loads wrong can hang the guest
	 * rather than fail.
	 */
	fd = open(state_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = stale(err, dir, "no device state file");
		goto out;
	}
	if ((uint64_t)st.st_size != state_size || state_size > STATE_MAX) {
		r = stale(err, dir, "device state of %llu bytes, want %llu",
			  (unsigned long long)st.st_size, (unsigned long long)state_size);
		goto out;
	}
	r = lg_sha256_fd(fd, hex, &got, err);
	if (r < 0) {
		lg_err_free(err);
		r = stale(err, dir, "device state unreadable");
		goto out;
	}
	if (got != state_size || strcmp(hex, msha) != 0) {
		r = stale(err, dir, "device state checksum mismatch");
		goto out;
	}
	if (lseek(fd, 0, SEEK_SET) != 0) {
		r = lg_err_sys(err, "snapshot %s: seek", dir);
		goto out;
	}
	out->state_fd = fd;
	fd = -1;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	json_decref(meta);
	return r;
}

int lg_snapshot_open(const char *dir, const struct lg_sandbox_plan *p,
		     struct lg_snapshot_files *out, struct lg_err **err)
{
	cleanup_free char *lock_path = xasprintf("%s.lock", dir);
	cleanup_free char *ram_path = xasprintf("%s/" RAM_FILE, dir);
	struct stat ram_st;
	int r;

	out->state_fd = -1;
	out->lock_fd = -1;
	out->ram_fd = -1;
	/*
	 * Shared, against lg_snapshot_ensure's exclusive lock: a rebuild never
	 * replaces the directory between this check and QEMU mapping the RAM
	 * file.  Held until lg_snapshot_files_close (after the spawn).  A
	 * snapshot without a lock file (not made by ensure) goes unlocked.
	 */
	out->lock_fd = open(lock_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (out->lock_fd >= 0) {
		while ((r = flock(out->lock_fd, LOCK_SH)) < 0 && errno == EINTR)
			;
		if (r < 0) {
			r = lg_err_sys(err, "flock %s", lock_path);
			lg_snapshot_files_close(out);
			return r;
		}
	}
	r = snapshot_check(dir, p, out, &ram_st, err);
	/* Still under the shared lock: no rebuild swaps the file meanwhile. */
	if (r == 0) {
		r = ram_cache_get(dir, ram_path, &ram_st, &out->ram_fd, err);
		if (r == -ESTALE) {
			lg_err_free(err);
			r = stale(err, dir, "the RAM file changed while it was read");
		}
	}
	if (r < 0)
		lg_snapshot_files_close(out);
	return r;
}

/* Removes a snapshot directory (no subdirectories): its files, then it. */
static void remove_flat(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
	rmdir(path);
}

/* Leftovers of builds that died (this key's only: the caller holds its lock). */
static void remove_leftovers(const char *base, const char *key)
{
	DIR *d = opendir(base);
	struct dirent *de;
	cleanup_free char *tmp = xasprintf(".tmp-%.*s-", DIR_KEY_LEN, key);
	cleanup_free char *old = xasprintf(".old-%.*s-", DIR_KEY_LEN, key);

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, tmp, strlen(tmp)) == 0 ||
		    strncmp(de->d_name, old, strlen(old)) == 0) {
			cleanup_free char *p = xasprintf("%s/%s", base, de->d_name);
			remove_flat(p);
		}
	}
	closedir(d);
}

int lg_snapshot_sweep(void)
{
	cleanup_free char *base = snapshots_dir();
	DIR *d = opendir(base);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char key[DIR_KEY_LEN + 1];
		cleanup_free char *lock_path = NULL, *p = NULL;
		int lock;

		/* ".tmp-KEY-RANDOM" or ".old-KEY-RANDOM", KEY of DIR_KEY_LEN hex digits. */
		if ((strncmp(de->d_name, ".tmp-", 5) != 0 &&
		     strncmp(de->d_name, ".old-", 5) != 0) ||
		    strlen(de->d_name) < 5 + DIR_KEY_LEN + 1 ||
		    de->d_name[5 + DIR_KEY_LEN] != '-' ||
		    strspn(de->d_name + 5, "0123456789abcdef") < DIR_KEY_LEN)
			continue;
		memcpy(key, de->d_name + 5, DIR_KEY_LEN);
		key[DIR_KEY_LEN] = '\0';
		/* The key's lock: a build (or restore) in progress holds it. */
		lock_path = xasprintf("%s/%s.lock", base, key);
		lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (lock < 0)
			continue;
		if (flock(lock, LOCK_EX | LOCK_NB) == 0) {
			p = xasprintf("%s/%s", base, de->d_name);
			remove_flat(p);
			n++;
		}
		close(lock);
	}
	closedir(d);
	return n;
}

/*
 * Snapshots of an earlier build of this image (its manifest differs) can
 * never be restored again: removed, each under its own lock, skipping one
 * that is busy.  VMs restored from one keep running (they hold its files).
 * Snapshots of other shapes of the same image build stay.
 */
static void prune(const char *base, const char *image, const char *manifest)
{
	DIR *d = opendir(base);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		cleanup_free char *dir = NULL;
		cleanup_free char *meta_path = NULL;
		cleanup_free char *lock_path = NULL;
		json_t *meta;
		const char *mi, *mm;
		json_t *fmt;
		bool old;
		int lock;

		if (de->d_name[0] == '.' || strlen(de->d_name) != DIR_KEY_LEN)
			continue;
		dir = xasprintf("%s/%s", base, de->d_name);
		meta_path = xasprintf("%s/" META_FILE, dir);
		meta = json_load_file(meta_path, JSON_REJECT_DUPLICATES, NULL);
		mi = json_string_value(json_object_get(meta, "image"));
		mm = json_string_value(json_object_get(meta, "manifest"));
		fmt = json_object_get(meta, "format");
		/*
		 * Of this image, and made from another build of it, or in an
		 * earlier format that no build from now on loads (format 1 had
		 * no network port).  A later format is a newer build's: kept.
		 */
		old = mi != NULL && strcmp(mi, image) == 0 &&
		      ((mm != NULL && strcmp(mm, manifest) != 0) ||
		       (json_is_integer(fmt) && json_integer_value(fmt) < LG_SNAPSHOT_FORMAT));
		json_decref(meta);
		if (!old)
			continue;
		lock_path = xasprintf("%s.lock", dir);
		lock = open(lock_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (lock < 0)
			continue;
		if (flock(lock, LOCK_EX | LOCK_NB) == 0) {
			lg_info("removing snapshot %s of an earlier build or format of image '%s'",
				dir, image);
			ram_cache_drop(dir);
			remove_flat(dir);
			unlink(lock_path);
		}
		close(lock);
	}
	closedir(d);
}

static int fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int write_meta(const char *tmp, const char *key, const char *manifest,
		      const struct lg_sandbox_plan *p, const char *agent, uint32_t agent_version,
		      struct lg_err **err)
{
	cleanup_free char *ram_path = xasprintf("%s/" RAM_FILE, tmp);
	cleanup_free char *state_path = xasprintf("%s/" STATE_FILE, tmp);
	cleanup_free char *meta_path = xasprintf("%s/" META_FILE, tmp);
	char hex[LG_SHA256_HEX_LEN + 1], created[32];
	struct stat ram_st;
	uint64_t state_size;
	time_t now = time(NULL);
	struct tm tm;
	json_t *meta;
	char *text;
	int fd, r;

	/* Durable first: the RAM the VM wrote, then the state; then their identities. */
	r = fsync_path(ram_path, O_RDONLY);
	if (r == 0)
		r = fsync_path(state_path, O_RDONLY);
	if (r < 0)
		return lg_err_set(err, -r, "snapshot: fsync");
	fd = open(state_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lg_err_sys(err, "snapshot: %s", state_path);
	r = lg_sha256_fd(fd, hex, &state_size, err);
	close(fd);
	if (r < 0)
		return lg_err_wrap(err, "snapshot: %s", state_path);
	if (stat(ram_path, &ram_st) < 0)
		return lg_err_sys(err, "snapshot: %s", ram_path);
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	/* manifest: what prune() tells an earlier build of the image by. */
	meta = json_pack(
	    "{s:i, s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:s, s:i, s:s,"
	    " s:{s:s, s:I, s:I, s:I, s:I, s:I}, s:{s:s, s:I, s:s}}",
	    "format", LG_SNAPSHOT_FORMAT, "key", key, "backend", p->backend->name, "accel",
	    hv_accel_name(p->cfg.accel), "image", p->image->name, "manifest", manifest, "cpus",
	    (int)p->cfg.cpus, "memory_mib", (json_int_t)p->cfg.memory_mib, "layer_mib",
	    (json_int_t)(p->cfg.rootfs != NULL ? p->cfg.layer_mib : 0), "agent", agent,
	    "agent_version", (int)agent_version, "created", created, "ram", "file", RAM_FILE,
	    "size", (json_int_t)ram_st.st_size, "disk_bytes", (json_int_t)ram_st.st_blocks * 512,
	    "ino", (json_int_t)ram_st.st_ino, "mtime_ns", (json_int_t)ns_of(&ram_st.st_mtim),
	    "ctime_ns", (json_int_t)ns_of(&ram_st.st_ctim), "state", "file", STATE_FILE, "size",
	    (json_int_t)state_size, "sha256", hex);
	text = json_dumps(meta, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(meta);
	if (text == NULL)
		return lg_err_set(err, ENOMEM, "snapshot: meta");
	fd = open(meta_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(text);
		return lg_err_sys(err, "snapshot: %s", meta_path);
	}
	r = lg_write_all(fd, text, strlen(text)) < 0 || fsync(fd) < 0 ? -errno : 0;
	close(fd);
	free(text);
	if (r == 0)
		r = fsync_path(tmp, O_RDONLY | O_DIRECTORY);
	if (r < 0)
		return lg_err_set(err, -r, "snapshot: %s", meta_path);
	return 0;
}

/* Boots the VM, saves it into tmp (ram, state, meta.json) and ends the VM. */
static int build(const struct lg_sandbox_opts *o, const struct lg_sandbox_plan *p, const char *tmp,
		 const char *key, const char *manifest, struct lg_err **err)
{
	cleanup_free char *ram_path = xasprintf("%s/" RAM_FILE, tmp);
	cleanup_free char *state_path = xasprintf("%s/" STATE_FILE, tmp);
	cleanup_free char *agent = NULL;
	struct lg_sandbox_opts bo = *o;
	struct lg_sandbox *sb = NULL;
	uint32_t version;
	uint64_t t0 = lg_now_ms();
	int fd, r;

	/*
	 * A new RAM file of the VM's size (sparse: only what the guest touches
	 * takes disk).  While this VM writes it (share=on), and as root,
	 * world-writable inside a 0700 directory: the jailed QEMU runs as a
	 * uid of its own, and no other host user can reach the file.  Our own
	 * freshly booted VM, before anything but its agent ran.  Otherwise the
	 * jail keeps our uid and 0600 is enough.  Back to 0600 once that VM
	 * is gone: nothing but this process reads it after (restores map a
	 * sealed copy, never the file).
	 */
	fd = open(ram_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return lg_err_sys(err, "snapshot: %s", ram_path);
	r = fchmod(fd, geteuid() == 0 ? 0666 : 0600) < 0 ||
		    ftruncate(fd, (off_t)(hv_guest_ram_mib(&p->cfg) << 20)) < 0
		? -errno
		: 0;
	close(fd);
	if (r < 0)
		return lg_err_set(err, -r, "snapshot: %s", ram_path);

	bo.snapshot = NULL;
	bo.hostname = NULL;
	/*
	 * With the network port and nothing attached: the VMs restored from
	 * it get the port too, and their claimers attach egress (or close it)
	 * with lg_sandbox_set_net.  The guest's forwarder is idle at the save.
	 */
	bo.net = NULL;
	bo.net_port = true;
	r = lg_sandbox_create_shared_ram(&bo, ram_path, &sb, err);
	if (r < 0)
		return lg_err_wrap(err, "snapshot of image '%s'", p->image->name);
	version = lg_agent_version(lg_sandbox_agent(sb));
	agent = xstrdup(lg_agent_name(lg_sandbox_agent(sb)));
	if (version < LG_PROTO_VERSION_ADOPT) {
		r = lg_err_msg(err, EOPNOTSUPP,
			       "image '%s' has a guest agent of protocol %u, too old for snapshots "
			       "(needs %u); rebuild it with: %s",
			       p->image->name, version, LG_PROTO_VERSION_ADOPT, p->image->rebuild);
		lg_sandbox_destroy(sb);
		return r;
	}
	fd = open(state_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = lg_err_sys(err, "snapshot: %s", state_path);
		lg_sandbox_destroy(sb);
		return r;
	}
	/* Right after HELLO the agent is idle: nothing in flight on its channel. */
	r = lg_sandbox_save_state(sb, fd, err);
	close(fd);
	/* Paused for good: no poweroff through the agent, the backend ends it. */
	lg_sandbox_destroy(sb);
	if (r < 0)
		return r;
	/* Before write_meta, which records the ctime this moves. */
	if (chmod(ram_path, 0600) < 0)
		return lg_err_sys(err, "snapshot: %s", ram_path);
	r = write_meta(tmp, key, manifest, p, agent, version, err);
	if (r == 0)
		lg_info("snapshot of image '%s' (%u cpus, %llu MiB) made in %llu ms",
			p->image->name, p->cfg.cpus, (unsigned long long)hv_guest_ram_mib(&p->cfg),
			(unsigned long long)(lg_now_ms() - t0));
	return r;
}

int lg_snapshot_ensure(const struct lg_sandbox_opts *o, char **dir, struct lg_err **err)
{
	struct lg_sandbox_plan p;
	struct lg_snapshot_files files;
	struct stat ram_st;
	char key[LG_SHA256_HEX_LEN + 1], mhex[LG_SHA256_HEX_LEN + 1], rnd[9];
	cleanup_free char *base = snapshots_dir();
	cleanup_free char *final = NULL;
	cleanup_free char *lock_path = NULL;
	cleanup_free char *tmp = NULL;
	int lock = -1, r;

	r = lg_sandbox_plan(o, &p, err);
	if (r < 0)
		return r;
	r = snapshot_key2(&p, key, mhex, err);
	if (r < 0)
		goto out;
	r = lg_mkdir_p(base, 0700);
	if (r < 0) {
		r = lg_err_set(err, -r, "cannot create %s", base);
		goto out;
	}
	final = dir_for_key(base, key);
	lock_path = xasprintf("%s.lock", final);
	lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0) {
		r = lg_err_sys(err, "%s", lock_path);
		goto out;
	}
	/* Per open file description: also excludes another thread of this process. */
	while ((r = flock(lock, LOCK_EX)) < 0 && errno == EINTR)
		;
	if (r < 0) {
		r = lg_err_sys(err, "flock %s", lock_path);
		goto out;
	}
	files.state_fd = files.lock_fd = files.ram_fd = -1;
	r = snapshot_check(final, &p, &files, &ram_st, err);
	if (r == 0) {
		lg_snapshot_files_close(&files);
		goto done;
	}
	/* Remade from here on: a RAM copy this process holds of it is stale. */
	ram_cache_drop(final);
	if (r != -ENOENT && r != -ESTALE)
		goto out;
	if (r == -ESTALE)
		lg_info("%s; rebuilding it", (*err)->msg);
	lg_err_free(err);

	remove_leftovers(base, key);
	lg_random_hex(rnd, 4);
	rnd[8] = '\0';
	tmp = xasprintf("%s/.tmp-%.*s-%s", base, DIR_KEY_LEN, key, rnd);
	if (mkdir(tmp, 0700) < 0) {
		r = lg_err_sys(err, "%s", tmp);
		goto out;
	}
	r = build(o, &p, tmp, key, mhex, err);
	if (r < 0) {
		remove_flat(tmp);
		goto out;
	}
	/* A directory cannot be renamed over a non-empty one: the old one goes first. */
	if (access(final, F_OK) == 0) {
		cleanup_free char *old = xasprintf("%s/.old-%.*s-%s", base, DIR_KEY_LEN, key, rnd);
		if (rename(final, old) == 0)
			remove_flat(old);
	}
	if (rename(tmp, final) < 0) {
		r = lg_err_sys(err, "snapshot: rename into %s", final);
		remove_flat(tmp);
		goto out;
	}
	fsync_path(base, O_RDONLY | O_DIRECTORY);
	prune(base, p.image->name, mhex);
done:
	*dir = final;
	final = NULL;
	r = 0;
out:
	if (lock >= 0)
		close(lock); /* and the flock with it */
	lg_sandbox_plan_free(&p);
	return r;
}
