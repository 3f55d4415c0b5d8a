/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The uid pool: <lockdir>/<uid> files, each flock'ed by the process whose
 * VM runs as that uid.  A lock dies with its process, so a crashed
 * luminaguard gives its uids back by itself; a stale file without a lock is
 * simply taken over.
 *
 * Taking a uid is the classic lock-file dance: open (creating), flock
 * LOCK_EX|LOCK_NB, then check that the file we locked is still the one at
 * the path.  A releaser unlinks while holding its lock; if we opened the
 * file just before that unlink and locked it just after, we would hold a
 * lock on an orphan inode while a third process creates a fresh file and
 * locks it too: two VMs as one uid.  The fstat/fstatat comparison catches
 * that, and we retry.
 */
#include "jail/uidpool.h"

#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Tries of one uid whose file keeps being unlinked under us. */
#define UNLINK_RETRIES 8

/*
 * Opens the lock directory, creating it (0700) if missing.  It must be a
 * real directory owned by root and writable by nobody else: whoever can
 * write in it can unlink a held lock file, or swap in a file of their own,
 * and make two VMs share a uid (signals, ptrace and /proc between them).
 * A symlink is refused for the same reason: it would put the locks in a
 * directory chosen by whoever could create the link.
 */
static int open_lockdir(const char *dir, struct lg_err **err)
{
	struct stat st;
	int r = lg_mkdir_p(dir, 0700);
	int fd;

	if (r < 0 && r != -ENOTDIR)
		return lg_err_set(err, -r, "cannot create the uid lock directory %s", dir);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ELOOP || errno == ENOTDIR)
			return lg_err_msg(err, errno,
					  "uid lock directory %s is not a directory (a symlink?); "
					  "remove it",
					  dir);
		return lg_err_sys(err, "cannot open the uid lock directory %s", dir);
	}
	if (fstat(fd, &st) < 0) {
		r = lg_err_sys(err, "cannot stat %s", dir);
		close(fd);
		return r;
	}
	if (st.st_uid != 0 || (st.st_mode & 022)) {
		close(fd);
		return lg_err_msg(err, EPERM,
				  "uid lock directory %s must be owned by root and writable by "
				  "nobody else (chown root %s && chmod 700 %s)",
				  dir, dir, dir);
	}
	return fd;
}

static uint64_t random_u64(void)
{
	uint64_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
		return r;
	/* No entropy yet (early boot): spreading, not secrecy, is the point. */
	return ((uint64_t)getpid() << 32) ^ lg_now_ns();
}

/*
 * Tries to lock dirfd/name.  Returns the locked fd, -EWOULDBLOCK when
 * another process holds it, or another -errno.
 */
static int try_lock(int dirfd, const char *name)
{
	for (int i = 0; i < UNLINK_RETRIES; i++) {
		struct stat a, b;
		int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);

		if (fd < 0)
			return -errno;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int e = errno;

			close(fd);
			return e == EAGAIN ? -EWOULDBLOCK : -e;
		}
		if (fstat(fd, &a) == 0 && fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return fd;
		/* Unlinked (or replaced) by a releaser between open and flock. */
		close(fd);
	}
	return -EWOULDBLOCK;
}

int lg_uid_acquire(const char *lockdir, uid_t first, uid_t last, struct lg_uid_lease *out,
		   struct lg_err **err)
{
	uint64_t n, start;
	int dirfd;

	memset(out, 0, sizeof(*out));
	out->lock_fd = -1;
	if (lockdir == NULL)
		lockdir = LG_UIDPOOL_DIR;
	/* uid 0 is root, and (uid_t)-1 means "no change" to setresuid. */
	if (first == 0 || first > last || last == (uid_t)-1)
		return lg_err_msg(err, EINVAL,
				  "invalid per-VM uid range %u-%u: it must not include 0 or %u",
				  (unsigned)first, (unsigned)last, (unsigned)(uid_t)-1);
	dirfd = open_lockdir(lockdir, err);
	if (dirfd < 0)
		return dirfd;
	n = (uint64_t)last - first + 1;
	/* A random start: concurrent luminaguards rarely race for one uid. */
	start = random_u64() % n;
	for (uint64_t i = 0; i < n; i++) {
		uid_t uid = (uid_t)(first + (start + i) % n);
		char name[16], pid[24];
		int fd;

		snprintf(name, sizeof(name), "%u", (unsigned)uid);
		fd = try_lock(dirfd, name);
		if (fd == -EWOULDBLOCK)
			continue;
		if (fd < 0) {
			int r = lg_err_set(err, -fd, "cannot lock %s/%s", lockdir, name);

			close(dirfd);
			return r;
		}
		/* Who holds it, for people looking at the directory. */
		snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
		if (ftruncate(fd, 0) == 0)
			(void)!pwrite(fd, pid, strlen(pid), 0);
		close(dirfd);
		out->uid = uid;
		out->lock_fd = fd;
		out->path = xasprintf("%s/%s", lockdir, name);
		return 0;
	}
	close(dirfd);
	return lg_err_msg(err, EAGAIN,
			  "no free per-VM uid: all %" PRIu64
			  " uids in %u-%u are in use by running VMs (see %s)",
			  n, (unsigned)first, (unsigned)last, lockdir);
}

int lg_uid_sweep_stale(const char *lockdir)
{
	struct stat st;
	struct dirent *e;
	DIR *d;
	int dirfd, n = 0;

	if (lockdir == NULL)
		lockdir = LG_UIDPOOL_DIR;
	/* Never create it (open_lockdir would): nothing to sweep where there is none. */
	if (lstat(lockdir, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	dirfd = open_lockdir(lockdir, NULL);
	if (dirfd < 0)
		return 0;
	d = fdopendir(dirfd);
	if (d == NULL) {
		close(dirfd);
		return 0;
	}
	while ((e = readdir(d)) != NULL) {
		int fd;

		if (e->d_name[0] < '1' || e->d_name[0] > '9' ||
		    strspn(e->d_name, "0123456789") != strlen(e->d_name))
			continue;
		fd = try_lock(dirfd, e->d_name);
		if (fd < 0)
			continue; /* held: a VM of a live luminaguard */
		/* Unlink before unlocking, as lg_uid_release does. */
		if (unlinkat(dirfd, e->d_name, 0) == 0)
			n++;
		close(fd);
	}
	closedir(d);
	return n;
}

void lg_uid_release(struct lg_uid_lease *l)
{
	/* A zeroed lease (lock_fd 0, no path) holds nothing: leave fd 0 alone. */
	if (l == NULL || l->path == NULL)
		return;
	/* Unlink before unlocking: see the comment at the top for the race. */
	(void)unlink(l->path);
	close(l->lock_fd);
	free(l->path);
	l->path = NULL;
	l->lock_fd = -1;
	l->uid = 0;
}
