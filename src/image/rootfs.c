/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Root file systems for images (issue 9): a Debian root built with
 * mmdebstrap into a tarball, and a tarball (ours or the user's, hostile)
 * turned into the read-only erofs file QEMU opens.  See docs/images.md,
 * "Building a root file system".
 *
 * Helpers are spawned from an argv, never through a shell of ours; their
 * stderr goes to a memfd whose last line ends our one-line error.
 */
#include "image/rootfs.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/env.h"
#include "common/err.h"
#include "common/util.h"
#include "image/spec.h"
#include "image/tar.h"

extern char **environ;

#define ERR_LINE_MAX 400
/* Bytes a decompressor may still produce after the archive's end blocks (tar pads to 10 KiB
 * records; anything much larger is not padding).  Beyond it the import is refused rather than
 * decompressing a bomb to nowhere. */
#define TRAILER_MAX (16u << 20)
/* Bounds on the dpkg status file read to count packages (a hostile tree may hold anything). */
#define DPKG_STATUS_MAX (256u << 20)
/* mmdebstrap's special hooks see these paths inside the root; removed by the build script. */
#define HOOK_DIR    "/tmp"
#define HOOK_SCRIPT HOOK_DIR "/lg-build.sh"
/* How the build script's own error lines start. */
#define BUILD_TAG "lg-build: "

static void progress(void (*fn)(void *, const char *), void *data, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void progress(void (*fn)(void *, const char *), void *data, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (fn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fn(data, msg);
}

/* The full path of prog on $PATH, or NULL. */
static char *find_program(const char *prog)
{
	const char *path = lg_env()->path;

	while (*path) {
		const char *end = strchrnul(path, ':');
		char *cand = xasprintf("%.*s/%s", (int)(end - path), path, prog);

		if (end > path && access(cand, X_OK) == 0)
			return cand;
		free(cand);
		path = *end ? end + 1 : end;
	}
	return NULL;
}

/* The last non-empty line of what fd (a memfd) holds, printable, at most ERR_LINE_MAX bytes:
 * the build script's own (BUILD_TAG) if any, else the last starting with prefer ("E: "). */
static void last_line(int fd, const char *prefer, char *out, size_t outsz)
{
	char buf[8192];
	off_t size = lseek(fd, 0, SEEK_END);
	off_t off = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
	ssize_t n = size > 0 ? pread(fd, buf, (size_t)(size - off), off) : 0;
	char *best = NULL, *last = NULL, *ours = NULL;

	out[0] = '\0';
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (char *line = buf, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (line[0] == '\0')
			continue;
		last = line;
		if (strncmp(line, BUILD_TAG, strlen(BUILD_TAG)) == 0)
			ours = line;
		else if (prefer && strncmp(line, prefer, strlen(prefer)) == 0)
			best = line;
	}
	if (ours)
		best = ours;
	if (best == NULL)
		best = last;
	if (best == NULL)
		return;
	size_t i = 0;
	for (; best[i] && i + 1 < outsz && i < ERR_LINE_MAX; i++)
		out[i] = isprint((unsigned char)best[i]) ? best[i] : '?';
	out[i] = '\0';
}

/*
 * Spawns argv[0] (a full path) with stdin from in_fd and stdout to out_fd (-1: /dev/null) and
 * stderr to errfd (a memfd the caller reads).  Returns the pid or -errno.
 */
static pid_t spawn(char *const argv[], int in_fd, int out_fd, int errfd)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t dfl;
	pid_t pid;
	int ret;

	/* Helpers die of ^C even when spawned by the worker, which ignores it (see there). */
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGHUP);
	sigaddset(&dfl, SIGQUIT);
	sigaddset(&dfl, SIGPIPE);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
	posix_spawn_file_actions_init(&fa);
	if (in_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
	else
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (out_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
	else
		posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, errfd, 2);
	ret = posix_spawn(&pid, argv[0], &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return ret ? -ret : pid;
}

static int wait_status(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

/* "exit 3", "killed by signal 9" */
static void describe_status(int status, char *buf, size_t n)
{
	if (status >= 0 && WIFEXITED(status))
		snprintf(buf, n, "exit %d", WEXITSTATUS(status));
	else if (status >= 0 && WIFSIGNALED(status))
		snprintf(buf, n, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, n, "status unknown");
}

/* Runs argv to completion; on failure sets *err to "WHAT failed (exit N): LAST LINE". */
static int run_tool(char *const argv[], const char *what, const char *prefer, struct lg_err **err)
{
	cleanup_close int errfd = memfd_create("lg-stderr", MFD_CLOEXEC);
	char line[ERR_LINE_MAX + 1], how[64];
	pid_t pid;
	int status;

	if (errfd < 0)
		return lg_err_sys(err, "%s: memfd_create", what);
	pid = spawn(argv, -1, -1, errfd);
	if (pid < 0)
		return lg_err_set(err, (int)-pid, "%s: cannot start %s", what, argv[0]);
	status = wait_status(pid);
	if (status == 0)
		return 0;
	describe_status(status, how, sizeof(how));
	last_line(errfd, prefer, line, sizeof(line));
	return lg_err_msg(err, EIO, "%s failed (%s)%s%s", what, how, line[0] ? ": " : "", line);
}

/* ---------------------------------------------------------------------------------------------
 * tarball -> erofs
 */

enum compression { C_NONE, C_GZIP, C_XZ, C_ZSTD };

static const struct {
	const char *name, *prog;
	unsigned char magic[6];
	size_t len;
} decompressors[] = {
    [C_GZIP] = {"gzip", "gzip", {0x1f, 0x8b}, 2},
    [C_XZ] = {"xz", "xz", {0xfd, '7', 'z', 'X', 'Z', 0x00}, 6},
    [C_ZSTD] = {"zstd", "zstd", {0x28, 0xb5, 0x2f, 0xfd}, 4},
};

static enum compression sniff(const unsigned char *b, size_t n)
{
	for (size_t i = C_GZIP; i < ARRAY_SIZE(decompressors); i++)
		if (n >= decompressors[i].len &&
		    memcmp(b, decompressors[i].magic, decompressors[i].len) == 0)
			return (enum compression)i;
	return C_NONE;
}

/* What the worker (in-process as root, or a child in a user namespace) needs and reports. */
struct worker {
	int in_fd; /* the plain tar stream */
	const char *tree, *work_dir, *tmp_out, *mkfs, *compress;
	bool keep_owners;
	struct lg_rootfs_stats st;
};

/* Counts "Status: install ok installed" in TREE/var/lib/dpkg/status.  The tree came from a
 * hostile tar: every component is opened with O_NOFOLLOW, so a symlink planted at
 * var/lib/dpkg/status (to a host file) is never followed. */
static unsigned count_packages(const char *tree)
{
	static const char *const dirs[] = {"var", "lib", "dpkg"};
	static const char needle[] = "\nStatus: install ok installed\n";
	int fd = open(tree, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	unsigned count = 0;
	struct stat sb;

	for (size_t i = 0; fd >= 0 && i < ARRAY_SIZE(dirs); i++) {
		int next = openat(fd, dirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	if (fd < 0)
		return 0;
	int sfd = openat(fd, "status", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	close(fd);
	if (sfd < 0)
		return 0;
	if (fstat(sfd, &sb) < 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > DPKG_STATUS_MAX) {
		close(sfd);
		return 0;
	}
	char *buf = xmalloc((size_t)sb.st_size + 2);
	ssize_t n = lg_read_all(sfd, buf + 1, (size_t)sb.st_size);
	close(sfd);
	if (n > 0) {
		/* A newline before and after the text makes every line "\n...\n". */
		size_t len = (size_t)n + 2;
		buf[0] = '\n';
		buf[len - 1] = '\n';
		for (char *p = buf;
		     (p = memmem(p, len - (size_t)(p - buf), needle, sizeof(needle) - 1));
		     p += sizeof(needle) - 2)
			count++;
	}
	free(buf);
	return count;
}

/* Reads what the decompressor still writes after the archive's end, so it can exit on its own
 * (a closed pipe would kill it with SIGPIPE and hide whether the stream was whole). */
static int drain(int fd, struct lg_err **err)
{
	char buf[65536];
	uint64_t total = 0;
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return lg_err_sys(err, "reading the tar stream");
		}
		total += (uint64_t)n;
		if (total > TRAILER_MAX)
			return lg_err_msg(
			    err, EINVAL,
			    "more than %u MiB of data after the end of the tar archive",
			    TRAILER_MAX >> 20);
	}
	return 0;
}

/* Extract, mkfs.erofs, remove the tree: the steps that must see the files' owners. */
static int work(struct worker *w, struct lg_err **err)
{
	struct lg_tar_opts to = {
	    .keep_owners = w->keep_owners,
	    /*
	     * Setuid/setgid bits are kept: the image is executed only by the guest kernel, where
	     * the tar's author already controls every binary root runs; a setid bit gives them
	     * nothing more there, and su/passwd/sudo need it for a non-root guest user.  On the
	     * host the bits are inert: the tree sits under work_dir (0700, ours alone) until it
	     * is removed, and QEMU reads the erofs file as a block device, never executing it.
	     */
	    .keep_setid = true,
	};
	struct lg_tar_stats ts = {0};
	int ret;

	if (mkdir(w->tree, 0755) < 0) {
		ret = lg_err_sys(err, "mkdir %s", w->tree);
		goto out;
	}
	ret = lg_tar_extract(w->in_fd, w->tree, &to, &ts, err);
	if (ret == 0)
		ret = drain(w->in_fd, err);
	close(w->in_fd);
	w->in_fd = -1;
	if (ret < 0)
		goto out;
	w->st.entries = ts.entries;
	w->st.bytes = ts.bytes;
	w->st.skipped_special = ts.skipped_special;
	w->st.setid_cleared = ts.setid_cleared;
	w->st.owners_kept = ts.owners_applied;
	w->st.packages = count_packages(w->tree);

	/*
	 * -x-1: no xattrs are read from the tree (the extractor sets none, and a host file
	 * system's own labels do not belong in the image).  No -T: a fixed timestamp would
	 * replace every file's mtime, and Python compares a .pyc with its source's mtime.
	 */
	char *z = strcmp(w->compress, "none") ? xasprintf("-z%s", w->compress) : NULL;
	char *argv[8];
	size_t i = 0;
	argv[i++] = (char *)w->mkfs;
	argv[i++] = "--quiet";
	argv[i++] = "-x-1";
	if (z)
		argv[i++] = z;
	argv[i++] = (char *)w->tmp_out;
	argv[i++] = (char *)w->tree;
	argv[i] = NULL;
	ret = run_tool(argv, "mkfs.erofs", NULL, err);
	free(z);
out:
	if (w->in_fd >= 0)
		close(w->in_fd);
	/* Here, not in the caller: in a user namespace only we can remove files owned by
	 * subordinate ids. */
	int r = lg_rm_rf(w->work_dir);
	if (r < 0 && ret == 0)
		ret = lg_err_set(err, -r, "removing %s", w->work_dir);
	return ret;
}

/* The first "START:COUNT" range for the user in /etc/subuid or /etc/subgid (by name or id). */
static bool subid_range(const char *file, const char *name, unsigned long id, unsigned long *start,
			unsigned long *count)
{
	cleanup_file FILE *f = fopen(file, "re");
	char line[512], idstr[32];

	if (f == NULL)
		return false;
	snprintf(idstr, sizeof(idstr), "%lu", id);
	while (fgets(line, sizeof(line), f)) {
		char *s1 = strchr(line, ':'), *s2, *end;
		if (s1 == NULL || (s2 = strchr(s1 + 1, ':')) == NULL)
			continue;
		*s1 = '\0';
		if (strcmp(line, idstr) && (name == NULL || strcmp(line, name)))
			continue;
		errno = 0;
		*start = strtoul(s1 + 1, &end, 10);
		if (end != s2 || errno)
			continue;
		*count = strtoul(s2 + 1, &end, 10);
		if (errno || *count == 0 || (*end != '\n' && *end != '\0'))
			continue;
		return true;
	}
	return false;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = lg_write_all(fd, text, strlen(text));
	close(fd);
	return n < 0 ? (int)n : 0;
}

/* Maps the child's user namespace with newuidmap/newgidmap: 0 -> us, 1..N -> our subordinate
 * ids, so the tar's owners (root, _apt, messagebus...) exist in it and land in the image. */
static int map_subids(pid_t child, const char *newuidmap, const char *newgidmap, unsigned long us,
		      unsigned long ustart, unsigned long ucount, unsigned long gs,
		      unsigned long gstart, unsigned long gcount, struct lg_err **err)
{
	char pid[32], a[4][32];
	snprintf(pid, sizeof(pid), "%d", (int)child);

	snprintf(a[0], sizeof(a[0]), "%lu", us);
	snprintf(a[1], sizeof(a[1]), "%lu", ustart);
	snprintf(a[2], sizeof(a[2]), "%lu", ucount);
	char *uargv[] = {(char *)newuidmap, pid, "0", a[0], "1", "1", a[1], a[2], NULL};
	int ret = run_tool(uargv, "newuidmap", NULL, err);
	if (ret < 0)
		return ret;
	snprintf(a[0], sizeof(a[0]), "%lu", gs);
	snprintf(a[1], sizeof(a[1]), "%lu", gstart);
	snprintf(a[2], sizeof(a[2]), "%lu", gcount);
	char *gargv[] = {(char *)newgidmap, pid, "0", a[0], "1", "1", a[1], a[2], NULL};
	return run_tool(gargv, "newgidmap", NULL, err);
}

struct child_report {
	int ret, errnum;
	struct lg_rootfs_stats st;
	char msg[1024];
};

/*
 * As a non-root user: the worker runs in a child in a new user namespace, where it is root
 * over the ids mapped into it.  With subordinate ids the map is 0 -> our uid, 1..N -> the
 * range, and files keep their owners; without, only 0 -> our uid, the tar's owners cannot be
 * applied, and every file is root's.  The tree is removed in that namespace too: files owned
 * by subordinate ids, or directories without write permission, cannot be removed from outside.
 */
static int work_in_userns(struct worker *w, bool subids, struct lg_err **err)
{
	struct passwd *pw = getpwuid(getuid());
	unsigned long ustart = 0, ucount = 0, gstart = 0, gcount = 0;
	cleanup_free char *newuidmap = NULL, *newgidmap = NULL;
	int go[2] = {-1, -1}, rep[2] = {-1, -1};
	struct child_report cr = {0};
	pid_t pid;
	int ret = 0;

	if (subids &&
	    !(subid_range("/etc/subuid", pw ? pw->pw_name : NULL, getuid(), &ustart, &ucount) &&
	      subid_range("/etc/subgid", pw ? pw->pw_name : NULL, getuid(), &gstart, &gcount) &&
	      (newuidmap = find_program("newuidmap")) && (newgidmap = find_program("newgidmap"))))
		subids = false;
	w->keep_owners = subids;
	if (pipe2(go, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0) {
		ret = lg_err_sys(err, "pipe");
		goto out;
	}
	pid_t parent = getpid();
	pid = fork();
	if (pid < 0) {
		ret = lg_err_sys(err, "fork");
		goto out;
	}
	if (pid == 0) {
		struct lg_err *cerr = NULL;
		uid_t uid = getuid();
		gid_t gid = getgid();
		char c, map[64];
		bool ready = false;

		close(go[1]);
		close(rep[0]);
		/* Dies with the caller: no worker outlives an interrupted import (set again after
		 * each id change, which may clear it; the getppid check closes the race). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(1);
		/*
		 * ^C reaches the whole process group.  The worker outlives it so that it can
		 * still remove its tree, which nobody outside the namespace could: the
		 * decompressor and mkfs.erofs die of it, the worker sees their failure, cleans
		 * up and reports.
		 */
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		signal(SIGQUIT, SIG_IGN);
		if (unshare(CLONE_NEWUSER) < 0) {
			cr.ret = lg_err_sys(&cerr, "unshare(CLONE_NEWUSER) (are user namespaces "
						   "disabled? kernel.unprivileged_userns_clone)");
			goto report;
		}
		if (!subids) {
			/* Only ourselves: an unprivileged process may map its own ids. */
			snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
			if (write_file("/proc/self/setgroups", "deny") < 0 ||
			    write_file("/proc/self/uid_map", map) < 0) {
				cr.ret = lg_err_sys(&cerr, "writing the user namespace's uid map");
				goto report;
			}
			snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
			if (write_file("/proc/self/gid_map", map) < 0) {
				cr.ret = lg_err_sys(&cerr, "writing the user namespace's gid map");
				goto report;
			}
		}
		/* Tell the parent the namespace exists, then wait for its maps ('g'). */
		if (write(rep[1], "u", 1) != 1 || read(go[0], &c, 1) != 1 || c != 'g')
			_exit(1);
		ready = true;
		if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
			cr.ret = lg_err_sys(&cerr, "becoming root in the user namespace");
			goto report;
		}
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(1);
		cr.ret = work(w, &cerr);
	report:
		/* Before 'u', an 'x' tells the parent a report comes instead. */
		if (!ready && write(rep[1], "x", 1) != 1)
			_exit(1);
		cr.st = w->st;
		if (cerr) {
			cr.errnum = cerr->errnum;
			snprintf(cr.msg, sizeof(cr.msg), "%s", cerr->msg);
		}
		if (lg_write_all(rep[1], &cr, sizeof(cr)) < 0)
			_exit(1);
		_exit(0);
	}
	close(go[0]);
	go[0] = -1;
	close(rep[1]);
	rep[1] = -1;
	/* Our copy of the tar stream goes: the decompressor must see only the child's. */
	close(w->in_fd);
	w->in_fd = -1;

	/* 'u': the namespace is ready for its maps; 'x': the child failed and its report follows.
	 */
	char c = 0;
	if (read(rep[0], &c, 1) == 1 && c == 'u') {
		if (subids)
			ret = map_subids(pid, newuidmap, newgidmap, getuid(), ustart, ucount,
					 getgid(), gstart, gcount, err);
		/* Without 'g' (a failed map) the child exits at once, having made nothing. */
		if (ret == 0 && write(go[1], "g", 1) != 1)
			ret = lg_err_sys(err, "starting the user namespace worker");
	}
	close(go[1]);
	go[1] = -1;
	ssize_t n = lg_read_all(rep[0], &cr, sizeof(cr));
	int status = wait_status(pid);
	if (ret < 0)
		goto out;
	if (n != (ssize_t)sizeof(cr)) {
		char how[64];
		describe_status(status, how, sizeof(how));
		ret = lg_err_msg(err, EIO, "the user namespace worker ended without a report (%s)",
				 how);
		goto out;
	}
	cr.msg[sizeof(cr.msg) - 1] = '\0';
	w->st = cr.st;
	if (cr.ret < 0)
		ret = lg_err_msg(err, cr.errnum ? cr.errnum : EIO, "%s", cr.msg);
out:
	for (int i = 0; i < 2; i++) {
		if (go[i] >= 0)
			close(go[i]);
		if (rep[i] >= 0)
			close(rep[i]);
	}
	return ret;
}

int lg_rootfs_from_tar(const char *tar_path, const char *work_dir, const char *out_path,
		       const struct lg_rootfs_opts *o, struct lg_rootfs_stats *st,
		       struct lg_err **err)
{
	static const struct lg_rootfs_opts defaults = {0};
	cleanup_free char *mkfs = NULL, *dec = NULL, *tree = NULL, *tmp_out = NULL;
	cleanup_close int tar_fd = -1, errfd = -1;
	unsigned char magic[6];
	enum compression c;
	struct worker w = {.in_fd = -1};
	struct stat sb;
	pid_t dpid = -1;
	bool made_work = false, made_out = false;
	int ret;

	if (o == NULL)
		o = &defaults;
	w.compress = o->compress ? o->compress : "lz4hc";
	if (strcmp(w.compress, "lz4hc") && strcmp(w.compress, "none"))
		return lg_err_msg(err, EINVAL, "unknown compression \"%s\" (known: lz4hc, none)",
				  w.compress);
	mkfs = find_program("mkfs.erofs");
	if (mkfs == NULL)
		return lg_err_msg(err, ENOENT,
				  "mkfs.erofs not found: install erofs-utils (apt-get install "
				  "erofs-utils) or run scripts/setup.sh");
	if (lstat(out_path, &sb) == 0)
		return lg_err_msg(err, EEXIST, "%s already exists", out_path);
	if (lstat(work_dir, &sb) == 0)
		return lg_err_msg(err, EEXIST, "work directory %s already exists", work_dir);

	tar_fd = open(tar_path, O_RDONLY | O_CLOEXEC);
	if (tar_fd < 0)
		return lg_err_sys(err, "open %s", tar_path);
	if (fstat(tar_fd, &sb) < 0 || !S_ISREG(sb.st_mode))
		return lg_err_msg(err, EINVAL, "%s is not a regular file", tar_path);
	ssize_t n = pread(tar_fd, magic, sizeof(magic), 0);
	if (n < 0)
		return lg_err_sys(err, "read %s", tar_path);
	c = sniff(magic, (size_t)n);
	if (c != C_NONE) {
		dec = find_program(decompressors[c].prog);
		if (dec == NULL)
			return lg_err_msg(err, ENOENT,
					  "%s is %s-compressed and %s is not installed", tar_path,
					  decompressors[c].name, decompressors[c].prog);
	}

	progress(o->progress, o->progress_data, "extracting %s%s%s", tar_path,
		 c != C_NONE ? " through " : "", c != C_NONE ? decompressors[c].prog : "");
	/* 0700: while it exists the tree may hold setuid files owned by anyone; no other host
	 * user may reach them.  The tree itself is a subdirectory, so the archive's "./" entry
	 * cannot change this mode. */
	if (mkdir(work_dir, 0700) < 0)
		return lg_err_sys(err, "mkdir %s", work_dir);
	made_work = true;
	tree = xasprintf("%s/root", work_dir);
	{
		/* The erofs file is written under a temporary name beside out_path and renamed
		 * only when whole, so out_path never holds a partial image. */
		tmp_out = xasprintf("%s.tmp-XXXXXX", out_path);
		int fd = mkostemp(tmp_out, O_CLOEXEC);
		if (fd < 0) {
			ret = lg_err_sys(err, "creating a file beside %s", out_path);
			goto out;
		}
		made_out = true;
		ret = fchmod(fd, 0644) < 0 ? lg_err_sys(err, "chmod %s", tmp_out) : 0;
		close(fd);
		if (ret < 0)
			goto out;
	}

	if (c == C_NONE) {
		w.in_fd = steal_fd(&tar_fd);
	} else {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0) {
			ret = lg_err_sys(err, "pipe");
			goto out;
		}
		errfd = memfd_create("lg-stderr", MFD_CLOEXEC);
		if (errfd < 0) {
			close(p[0]);
			close(p[1]);
			ret = lg_err_sys(err, "memfd_create");
			goto out;
		}
		char *argv[] = {dec, "-dc", NULL};
		dpid = spawn(argv, tar_fd, p[1], errfd);
		close(p[1]);
		if (dpid < 0) {
			close(p[0]);
			ret = lg_err_set(err, (int)-dpid, "cannot start %s", dec);
			goto out;
		}
		w.in_fd = p[0];
	}
	w.tree = tree;
	w.work_dir = work_dir;
	w.tmp_out = tmp_out;
	w.mkfs = mkfs;
	if (geteuid() == 0) {
		w.keep_owners = true;
		ret = work(&w, err);
	} else {
		ret = work_in_userns(&w, true, err);
		if (ret == 0 && !w.st.owners_kept)
			progress(
			    o->progress, o->progress_data,
			    "no subordinate ids for this user (/etc/subuid, /etc/subgid): every "
			    "file in the image belongs to root");
	}
	if (w.in_fd >= 0) {
		close(w.in_fd);
		w.in_fd = -1;
	}
	if (dpid > 0) {
		int status = wait_status(dpid);
		dpid = -1;
		/*
		 * A truncated or corrupt stream can still end the tar cleanly (the cut falls in
		 * the padding): only the decompressor's own status tells.  When the extraction
		 * failed too, the decompressor's failure is the cause ("unexpected end of file"
		 * rather than "tar archive truncated"), unless it merely died of the pipe the
		 * extraction closed.
		 */
		bool own = status != 0 && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE);
		if (own && (ret == 0 || err != NULL)) {
			char how[64], line[ERR_LINE_MAX + 1];
			describe_status(status, how, sizeof(how));
			last_line(errfd, NULL, line, sizeof(line));
			if (err)
				lg_err_free(err);
			ret = lg_err_msg(err, EIO, "decompressing %s failed (%s)%s%s", tar_path,
					 how, line[0] ? ": " : "", line);
		}
	}
	if (ret < 0)
		goto out;
	progress(o->progress, o->progress_data, "%llu entries, %llu MiB of files, %u packages",
		 (unsigned long long)w.st.entries, (unsigned long long)(w.st.bytes >> 20),
		 w.st.packages);
	if (stat(tmp_out, &sb) < 0) {
		ret = lg_err_sys(err, "stat %s", tmp_out);
		goto out;
	}
	w.st.image_size = (uint64_t)sb.st_size;
	/* NOREPLACE: created new, as promised; a file that appeared meanwhile is not replaced. */
	if (renameat2(AT_FDCWD, tmp_out, AT_FDCWD, out_path, RENAME_NOREPLACE) < 0) {
		ret = lg_err_sys(err, "rename to %s", out_path);
		goto out;
	}
	made_out = false;
	if (st)
		*st = w.st;
out:
	if (w.in_fd >= 0)
		close(w.in_fd);
	if (dpid > 0) {
		kill(dpid, SIGKILL);
		wait_status(dpid);
	}
	if (made_out)
		unlink(tmp_out);
	/* The worker removed the tree; this catches a worker that died before it could. */
	if (made_work && lstat(work_dir, &sb) == 0) {
		int r = lg_rm_rf(work_dir);
		if (r < 0 && ret == 0)
			ret = lg_err_set(err, -r, "removing %s", work_dir);
	}
	return ret;
}

/* ---------------------------------------------------------------------------------------------
 * Debian root with mmdebstrap
 */

char *lg_host_suite(void)
{
	cleanup_file FILE *f = fopen("/etc/os-release", "re");
	char line[256];

	if (f == NULL)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		char *v, *e;
		if (strncmp(line, "VERSION_CODENAME=", 17))
			continue;
		v = line + 17;
		v[strcspn(v, "\r\n")] = '\0';
		if (*v == '"' || *v == '\'') {
			e = strrchr(v + 1, *v);
			if (e == NULL)
				return NULL;
			*e = '\0';
			v++;
		}
		/* It becomes an argument of mmdebstrap and a word of an apt line. */
		if (*v == '\0' || strlen(v) > 64)
			return NULL;
		for (e = v; *e; e++)
			if (!(islower((unsigned char)*e) || isdigit((unsigned char)*e) ||
			      *e == '.' || *e == '-'))
				return NULL;
		return xstrdup(v);
	}
	return NULL;
}

/*
 * s in single quotes for sh and for perl's shellwords (mmdebstrap's special hooks): inside
 * single quotes nothing is special but the quote itself, written '\''.  Spec values (paths,
 * commands, environment) are user input: quoted, "$(...)" or "'; rm -rf /" stay literal text.
 */
static void sh_quote(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", f);
		else
			fputc(*s, f);
	}
	fputc('\'', f);
}

static char *sh_quoted(const char *prefix, const char *s, const char *suffix)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL)
		abort();
	fputs(prefix, f);
	sh_quote(f, s);
	fputs(suffix, f);
	fclose(f);
	return buf;
}

/* Appends to a growing NULL-terminated argv (strings owned by the vector). */
struct argv {
	char **v;
	size_t n;
};

static void argv_add(struct argv *a, char *s)
{
	a->v = xrealloc(a->v, (a->n + 2) * sizeof(*a->v));
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

static void argv_free(struct argv *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
}

static bool file_has_deb_line(const char *path)
{
	cleanup_file FILE *f = fopen(path, "re");
	char line[1024];

	while (f && fgets(line, sizeof(line), f)) {
		const char *p = line + strspn(line, " \t");
		if (strncmp(p, "deb ", 4) == 0 || strncmp(p, "deb\t", 4) == 0)
			return true;
	}
	return false;
}

/* The host's apt source files, in apt's order: sources.list, then sources.list.d sorted. */
static void host_source_files(struct argv *out)
{
	glob_t g;

	if (file_has_deb_line("/etc/apt/sources.list"))
		argv_add(out, xstrdup("/etc/apt/sources.list"));
	if (glob("/etc/apt/sources.list.d/*", 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			const char *p = g.gl_pathv[i];
			size_t l = strlen(p);
			if ((l > 5 && strcmp(p + l - 5, ".list") == 0) ||
			    (l > 8 && strcmp(p + l - 8, ".sources") == 0))
				argv_add(out, xstrdup(p));
		}
		globfree(&g);
	}
}

/* The first non-security archive URI in the host's sources, or Debian's. */
static char *host_mirror(void)
{
	struct argv files = {0};
	char *found = NULL;

	host_source_files(&files);
	for (size_t i = 0; i < files.n && !found; i++) {
		cleanup_file FILE *f = fopen(files.v[i], "re");
		char line[1024];
		while (f && !found && fgets(line, sizeof(line), f)) {
			char *save = NULL, *tok, *p = line + strspn(line, " \t");
			bool deb822 = strncasecmp(p, "URIs:", 5) == 0;

			if (deb822)
				p += 5;
			else if (strncmp(p, "deb ", 4) == 0)
				p += 4;
			else
				continue;
			for (tok = strtok_r(p, " \t\r\n", &save); tok;
			     tok = strtok_r(NULL, " \t\r\n", &save)) {
				if (tok[0] == '[') { /* deb [options] URI: skip the options */
					while (tok && !strchr(tok, ']'))
						tok = strtok_r(NULL, " \t\r\n", &save);
					continue;
				}
				if (strstr(tok, "://") && !strstr(tok, "security"))
					found = xstrdup(tok);
				break;
			}
		}
	}
	argv_free(&files);
	return found ? found : xstrdup("http://deb.debian.org/debian");
}

/* Package names become one comma-separated argument: nothing but Debian's name characters. */
static bool package_ok(const char *s)
{
	if (!(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])) || strlen(s) > 128)
		return false;
	for (; *s; s++)
		if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) ||
		      strchr("+.-", *s)))
			return false;
	return true;
}

static bool has_subids(const char *name, uid_t uid)
{
	unsigned long s, c;
	return subid_range("/etc/subuid", name, uid, &s, &c) &&
	       subid_range("/etc/subgid", name, uid, &s, &c);
}

/*
 * The build script run chrooted in the new root: places the spec's files (uploaded to
 * HOOK_DIR/lg-file-N), then the run commands with the spec's environment and working
 * directory.  Everything runs inside the chroot, so no path of the spec is resolved on the
 * host.  Returns 0 or -errno with *err set.
 */
static int write_script(const struct lg_image_spec *spec, const char *path, struct lg_err **err)
{
	cleanup_file FILE *f = fopen(path, "wxe");

	if (f == NULL)
		return lg_err_sys(err, "create %s", path);
	fputs("# written by luminaguard image build; removes itself\nset -e\nrm -f " HOOK_SCRIPT
	      "\n"
	      /* The failing run command is named in the one line the user sees. */
	      "lg_cmd=\n"
	      "trap 'rc=$?; [ $rc -eq 0 ] || [ -z \"$lg_cmd\" ] || echo \"" BUILD_TAG
	      "run command failed (exit $rc): $lg_cmd\" >&2' EXIT\n",
	      f);
	for (size_t i = 0; i < spec->nfiles; i++) {
		const struct lg_image_file *fi = &spec->files[i];
		struct stat sb;
		char tmp[64];
		unsigned mode = fi->mode;

		if (stat(fi->src, &sb) < 0)
			return lg_err_sys(err, "file %s", fi->src);
		if (!S_ISREG(sb.st_mode))
			return lg_err_msg(err, EINVAL, "file %s: not a regular file", fi->src);
		if (mode == 0)
			mode = sb.st_mode & 07777;
		snprintf(tmp, sizeof(tmp), HOOK_DIR "/lg-file-%zu", i);
		/* dirname inside the chroot: the shell computes it, from a quoted value. */
		fputs("dst=", f);
		sh_quote(f, fi->dst);
		fprintf(f,
			"\nmkdir -p \"$(dirname \"$dst\")\"\n"
			"if [ -d \"$dst\" ] && [ ! -L \"$dst\" ]; then\n"
			"  echo \"" BUILD_TAG
			"file $dst: a directory in the image\" >&2; exit 1\nfi\n"
			"rm -f \"$dst\"\nmv %s \"$dst\"\n"
			"chown 0:0 \"$dst\"\nchmod %04o \"$dst\"\n",
			tmp, mode);
	}
	for (char **e = spec->env; e && *e; e++) {
		fputs("export ", f);
		sh_quote(f, *e);
		fputc('\n', f);
	}
	if (spec->workdir) {
		fputs("mkdir -p ", f);
		sh_quote(f, spec->workdir);
		fputs("\ncd ", f);
		sh_quote(f, spec->workdir);
		fputc('\n', f);
	}
	/* The commands are shell by design: written as given, one per line, under set -e. */
	for (char **r = spec->run; r && *r; r++) {
		fputs("lg_cmd=", f);
		sh_quote(f, *r);
		fprintf(f, "\n%s\n", *r);
	}
	if (fflush(f) != 0 || ferror(f))
		return lg_err_sys(err, "write %s", path);
	return 0;
}

int lg_rootfs_debian(const struct lg_debian_opts *o, const char *tar_path, struct lg_err **err)
{
	cleanup_free char *mm = NULL, *host = lg_host_suite(), *hook_dir = NULL, *script = NULL;
	const struct lg_image_spec *spec = o->spec;
	const char *suite = o->suite;
	struct argv a = {0};
	struct stat sb;
	bool made_tar = false;
	int ret = 0;

	mm = find_program("mmdebstrap");
	if (mm == NULL)
		return lg_err_msg(
		    err, ENOENT,
		    "mmdebstrap not found: install mmdebstrap (apt-get install mmdebstrap) "
		    "or run scripts/setup.sh");
	if (suite == NULL && (suite = host) == NULL)
		return lg_err_msg(err, EINVAL,
				  "cannot tell the host's release (no VERSION_CODENAME in "
				  "/etc/os-release): name a suite");
	if (suite[0] == '-' || strpbrk(suite, " \t\n/"))
		return lg_err_msg(err, EINVAL, "invalid suite \"%s\"", suite);
	for (const char *const *p = o->packages; p && *p; p++)
		if (!package_ok(*p))
			return lg_err_msg(err, EINVAL, "invalid package name \"%s\"", *p);
	if (geteuid() != 0) {
		/* mmdebstrap's unshare mode maps the root's owners onto subordinate ids. */
		struct passwd *pw = getpwuid(getuid());
		if (!has_subids(pw ? pw->pw_name : NULL, getuid()))
			return lg_err_msg(
			    err, EPERM,
			    "no subordinate ids for %s in /etc/subuid and /etc/subgid, which "
			    "mmdebstrap needs without root: usermod --add-subuids "
			    "100000-165535 --add-subgids 100000-165535 %s",
			    pw ? pw->pw_name : "this user", pw ? pw->pw_name : "USER");
	}
	if (lstat(tar_path, &sb) == 0)
		return lg_err_msg(err, EEXIST, "%s already exists", tar_path);

	argv_add(&a, xstrdup(mm));
	argv_add(&a, xstrdup("--quiet"));
	/* unshare: the tree exists only in mmdebstrap's namespaces and then in the tarball; the
	 * host's root file system and package database are never touched. */
	argv_add(&a, xstrdup("--mode=unshare"));
	argv_add(&a, xstrdup("--variant=apt"));
	argv_add(&a, xstrdup("--format=tar"));
	{
		char *inc = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&inc, &len);
		if (f == NULL)
			abort();
		fputs("--include=ca-certificates", f);
		for (const char *const *p = o->packages; p && *p; p++)
			fprintf(f, ",%s", *p);
		for (char **p = spec ? spec->packages : NULL; p && *p; p++) {
			if (!package_ok(*p)) {
				fclose(f);
				free(inc);
				ret = lg_err_msg(err, EINVAL, "invalid package name \"%s\"", *p);
				goto out;
			}
			fprintf(f, ",%s", *p);
		}
		fclose(f);
		argv_add(&a, inc);
	}
	if (spec && (spec->nfiles || (spec->run && spec->run[0]) || spec->workdir ||
		     (spec->env && spec->env[0]))) {
		cleanup_free char *dir = xstrdup(tar_path);
		char *slash = strrchr(dir, '/');
		hook_dir = slash ? xasprintf("%.*s/.lg-hooks-XXXXXX", (int)(slash - dir), dir)
				 : xstrdup(".lg-hooks-XXXXXX");
		if (slash == dir) {
			free(hook_dir);
			hook_dir = xstrdup("/.lg-hooks-XXXXXX");
		}
		if (mkdtemp(hook_dir) == NULL) {
			ret = lg_err_sys(err, "creating a directory beside %s", tar_path);
			free(hook_dir);
			hook_dir = NULL;
			goto out;
		}
		script = xasprintf("%s/build.sh", hook_dir);
		ret = write_script(spec, script, err);
		if (ret < 0)
			goto out;
		/* Special hooks are split by perl's shellwords: quoted (see sh_quote). */
		for (size_t i = 0; i < spec->nfiles; i++) {
			char tail[64];
			snprintf(tail, sizeof(tail), " " HOOK_DIR "/lg-file-%zu", i);
			argv_add(&a,
				 sh_quoted("--customize-hook=upload ", spec->files[i].src, tail));
		}
		argv_add(&a, sh_quoted("--customize-hook=upload ", script, " " HOOK_SCRIPT));
		argv_add(&a, xstrdup("--customize-hook=chroot \"$1\" /bin/sh -e " HOOK_SCRIPT));
	}
	argv_add(&a, xstrdup(suite));
	argv_add(&a, xstrdup(tar_path));
	if (host && strcmp(suite, host) == 0) {
		host_source_files(&a);
		if (strcmp(a.v[a.n - 1], tar_path) == 0) /* no source files after all */
			argv_add(&a, host_mirror());
	} else {
		char *m = host_mirror();
		argv_add(&a, xasprintf("deb %s %s main", m, suite));
		free(m);
	}

	progress(o->progress, o->progress_data, "building a Debian %s root with mmdebstrap (%s)",
		 suite, a.v[5] + strlen("--include="));
	made_tar = true;
	ret = run_tool(a.v, "mmdebstrap", "E: ", err);
	if (ret == 0 && (lstat(tar_path, &sb) < 0 || !S_ISREG(sb.st_mode)))
		ret = lg_err_msg(err, EIO, "mmdebstrap succeeded but wrote no %s", tar_path);
out:
	if (ret < 0 && made_tar)
		unlink(tar_path);
	if (hook_dir)
		lg_rm_rf(hook_dir);
	argv_free(&a);
	return ret;
}
