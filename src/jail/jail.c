/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The jailer (see jail.h for the walls).  The parent prepares everything:
 * paths, mount list, strings, the seccomp program, the uid, the cgroup
 * fds.  The child, between clone and exec, only walks that plan with
 * async-signal-safe system calls: no malloc, no stdio, no libseccomp (the
 * parent is multithreaded, and a lock held by another thread at clone time
 * would be held forever in the child).  The first failure is sent to the
 * parent as {step, index, errno} over a CLOEXEC pipe and the child
 * _exits: nothing ever runs half-jailed.  EOF on that pipe means the exec
 * happened.
 */
#include "jail/jail.h"

#include "common/keeper.h"
#include "common/log.h"
#include "common/util.h"
#include "jail/cgroup.h"
#include "jail/elfdeps.h"
#include "jail/seccomp.h"
#include "jail/uidpool.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/keyctl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * The new root is a tmpfs mounted over /tmp of the jail's private mount
 * namespace (bubblewrap's trick): nothing is created on the host's disk,
 * and when the namespace dies with the VMM, so does the root.
 */
#define ROOT_TMPFS_OPT "mode=0755,size=1m,nr_inodes=4096"
#define DEV_TMPFS_OPT  "mode=0755,size=64k,nr_inodes=64"
#define RUN_TMPFS_SIZE "size=16m,nr_inodes=1024"
#define JAIL_HOSTNAME  "luminaguard-vmm"

/* ---- steps, for the one-line error ---- */

enum step {
	STEP_PDEATHSIG,
	STEP_SETGROUPS_DENY,
	STEP_UID_MAP,
	STEP_GID_MAP,
	STEP_CGROUP,
	STEP_SETSID,
	STEP_MAKE_PRIVATE,
	STEP_OPEN_SOURCE, /* index: mount */
	STEP_MOUNT_ROOT,
	STEP_MKDIR, /* index: dir */
	STEP_MOUNT_DEV,
	STEP_MOUNTPOINT, /* index: mount */
	STEP_BIND,	 /* index: mount */
	STEP_REMOUNT_RO, /* index: mount */
	STEP_DEV_FD,
	STEP_REMOUNT_DEV,
	STEP_MOUNT_RUN,
	STEP_CHDIR,
	STEP_PIVOT_ROOT,
	STEP_UMOUNT_OLD,
	STEP_REMOUNT_ROOT,
	STEP_HOSTNAME,
	STEP_FDS,
	STEP_RLIMIT,
	STEP_CAPBSET,
	STEP_AMBIENT,
	STEP_SETGROUPS,
	STEP_SETRESGID,
	STEP_SETRESUID,
	STEP_CAPSET,
	STEP_NO_NEW_PRIVS,
	STEP_KEYRING,
	STEP_SECCOMP_FLOOR,
	STEP_SECCOMP,
	STEP_EXEC,
};

static const char *const step_names[] = {
    [STEP_PDEATHSIG] = "prctl(PR_SET_PDEATHSIG)",
    [STEP_SETGROUPS_DENY] = "write /proc/self/setgroups",
    [STEP_UID_MAP] = "write /proc/self/uid_map",
    [STEP_GID_MAP] = "write /proc/self/gid_map",
    [STEP_CGROUP] = "join the cgroup",
    [STEP_SETSID] = "setsid",
    [STEP_MAKE_PRIVATE] = "make mounts private",
    [STEP_OPEN_SOURCE] = "open",
    [STEP_MOUNT_ROOT] = "mount the root tmpfs",
    [STEP_MKDIR] = "mkdir",
    [STEP_MOUNT_DEV] = "mount /dev tmpfs",
    [STEP_MOUNTPOINT] = "create mount point for",
    [STEP_BIND] = "bind",
    [STEP_REMOUNT_RO] = "remount read-only",
    [STEP_DEV_FD] = "bind /proc/self/fd at /dev/fd",
    [STEP_REMOUNT_DEV] = "remount /dev read-only",
    [STEP_MOUNT_RUN] = ("mount " JAIL_RUN_DIR),
    [STEP_CHDIR] = "chdir to the new root",
    [STEP_PIVOT_ROOT] = "pivot_root",
    [STEP_UMOUNT_OLD] = "unmount the old root",
    [STEP_REMOUNT_ROOT] = "remount / read-only",
    [STEP_HOSTNAME] = "sethostname",
    [STEP_FDS] = "set up fds",
    [STEP_RLIMIT] = "setrlimit",
    [STEP_CAPBSET] = "drop the capability bounding set",
    [STEP_AMBIENT] = "clear ambient capabilities",
    [STEP_SETGROUPS] = "setgroups",
    [STEP_SETRESGID] = "setresgid",
    [STEP_SETRESUID] = "setresuid",
    [STEP_CAPSET] = "capset",
    [STEP_NO_NEW_PRIVS] = "prctl(PR_SET_NO_NEW_PRIVS)",
    [STEP_KEYRING] = "join a new session keyring",
    [STEP_SECCOMP_FLOOR] = "install the jail's seccomp floor",
    [STEP_SECCOMP] = "install the seccomp filter",
    [STEP_EXEC] = "execve",
};

struct child_status {
	int step;
	int index;
	int err;
};

/* ---- the plan ---- */

struct mnt {
	char *src;  /* host path, opened O_PATH before the root changes */
	char *dst;  /* new root + jail path */
	bool data;  /* not code: also noexec */
	bool dev;   /* a device node: no nodev */
	bool rw;    /* jail_spec.rw_files: not remounted read-only */
	int src_fd; /* the child's */
};

struct plan {
	bool jailed, userns;
	/* mounts */
	char **dirs; /* new root + dir, parents first */
	size_t n_dirs;
	struct mnt *m;
	size_t n_m;
	char *dev_dir, *run_dir, *run_opts;
	char *dev_fd_dir; /* jail_spec.dev_fd: new root + /dev/fd, or NULL */
	/* identity */
	uid_t uid;
	gid_t gid;
	uid_t outer_uid;
	gid_t outer_gid;
	gid_t kvm_gid;
	bool with_kvm_gid;
	char uid_map[64], gid_map[64];
	int cg_fds[LG_CGROUP_MAX_PROCS_FDS];
	size_t n_cg;
	/* process */
	const char *exec_path;
	char *const *argv;
	char *envp[2];
	const int *pass_fds;
	size_t n_pass;
	int stderr_fd;
	unsigned nofile;
	uint64_t fsize;
	unsigned nproc;
	struct sock_fprog floor; /* always, when jailed (seccomp.h) */
	struct sock_fprog prog;	 /* the VMM kind's allowlist; empty at level off */
	int status_fd;		 /* write end, CLOEXEC */
	int sync_fd;		 /* read end: POLLHUP = the parent is gone */
	int sync_wfd;		 /* the parent's write end: the child closes its copy */
};

struct jail {
	pid_t pid;
	char *name;
	struct lg_cgroup *cg;
	struct lg_uid_lease lease;
	bool have_lease;
	uint64_t memory_bytes;
	struct lg_seccomp_watch *watch;
	bool seccomp_log; /* level log: report what was logged at release */
};

/*
 * Where the child builds the new root, and how it enters it.  Normally a
 * tmpfs on /tmp of the child's private mount namespace, entered with
 * pivot_root.  When luminaguard itself runs chroot'ed (a build chroot, a
 * "fresh machine" test), "/" is not a mount point: neither the propagation
 * of "/" can be changed nor pivot_root used (both EINVAL; bubblewrap stops
 * there).  Then the new root is a tmpfs over /proc/sys after /proc (a
 * mount point we can name) was made private, so nothing propagates to the
 * host, and it is entered with chroot.  That leaves the host's mounts in
 * the namespace but out of reach: the VMM has no capabilities (no
 * CAP_SYS_CHROOT), seccomp has no chroot, and no fd leads outside.
 * Decided once per process: chroot-ness does not change.
 */
static const char *newroot = "/tmp";
static bool chrooted;
static pthread_once_t root_once = PTHREAD_ONCE_INIT;

static void detect_root(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool root_mounted = false;

	if (f == NULL)
		return; /* no /proc: the binds fail later with a clear step */
	while (!root_mounted && getline(&line, &cap, f) > 0) {
		char mnt[8];
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT ... */
		if (sscanf(line, "%*s %*s %*s %*s %7s", mnt) == 1 && strcmp(mnt, "/") == 0)
			root_mounted = true;
	}
	free(line);
	fclose(f);
	if (!root_mounted) {
		chrooted = true;
		newroot = "/proc/sys";
		lg_debug("jail: running chroot'ed: the new root goes over /proc/sys, entered "
			 "with chroot");
	}
}

/* ---- child: async-signal-safe only ---- */

static void __attribute__((noreturn)) child_fail(const struct plan *p, int step, int index, int e)
{
	struct child_status st = {.step = step, .index = index, .err = e};

	if (write(p->status_fd, &st, sizeof(st)) < 0) {
		/* the parent is gone; nothing to report to */
	}
	_exit(127);
}

#define CHECK(p, cond, step, index)                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			child_fail((p), (step), (index), errno);                                   \
	} while (0)

static size_t c_strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n, len = (ssize_t)c_strlen(s);
	int e;

	if (fd < 0)
		return -1;
	n = write(fd, s, (size_t)len);
	e = errno;
	close(fd);
	errno = n == len ? 0 : (n < 0 ? e : EIO);
	return n == len ? 0 : -1;
}

/*
 * PDEATHSIG closes the window after it is set; the sync pipe closes the
 * one before.  getppid() cannot tell (it is 0 in a new PID namespace), but
 * the write end of the sync pipe is held by the parent alone, so POLLHUP
 * on the read end means the parent is gone.
 */
static void child_check_parent(const struct plan *p)
{
	struct pollfd pfd = {.fd = p->sync_fd, .events = POLLIN};

	CHECK(p, prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, STEP_PDEATHSIG, -1);
	if (poll(&pfd, 1, 0) != 0)
		_exit(127); /* POLLHUP (or an error): no one to report to */
}

/* Mount flags locked on the source mount: a bind remount inside a user
 * namespace must keep them or it fails with EPERM. */
static unsigned long locked_flags(int fd)
{
	struct statfs sf;
	unsigned long f = 0;

	if (fstatfs(fd, &sf) < 0)
		return 0;
	if (sf.f_flags & ST_NOSUID)
		f |= MS_NOSUID;
	if (sf.f_flags & ST_NODEV)
		f |= MS_NODEV;
	if (sf.f_flags & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (sf.f_flags & ST_NOATIME)
		f |= MS_NOATIME;
	if (sf.f_flags & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (sf.f_flags & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

/* "/proc/self/fd/N" without snprintf (not async-signal-safe). */
static void fd_path(char buf[32], int fd)
{
	static const char pre[] = "/proc/self/fd/";
	char num[12];
	size_t n = 0, k;

	do
		num[n++] = (char)('0' + fd % 10);
	while ((fd /= 10) > 0);
	for (k = 0; k < sizeof(pre) - 1; k++)
		buf[k] = pre[k];
	while (n > 0)
		buf[k++] = num[--n];
	buf[k] = '\0';
}

static void child_mounts(struct plan *p)
{
	char fdpath[32];
	int dev_fd_src = -1;

	/* Nothing we mount may propagate back to the host's namespace. */
	CHECK(p, mount("", chrooted ? "/proc" : "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0,
	      STEP_MAKE_PRIVATE, -1);
	/* Before the tmpfs hides it: a source may live under /tmp. */
	for (size_t i = 0; i < p->n_m; i++) {
		p->m[i].src_fd = open(p->m[i].src, O_PATH | O_CLOEXEC);
		CHECK(p, p->m[i].src_fd >= 0, STEP_OPEN_SOURCE, (int)i);
	}
	/*
	 * jail_spec.dev_fd: this process's own fd directory (the host's
	 * /proc resolves self to us, and we are the process that execs),
	 * bound alone; no other part of /proc comes with it.
	 */
	if (p->dev_fd_dir != NULL) {
		dev_fd_src = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
		CHECK(p, dev_fd_src >= 0, STEP_DEV_FD, -1);
	}
	CHECK(p,
	      mount("tmpfs", newroot, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, ROOT_TMPFS_OPT) ==
		  0,
	      STEP_MOUNT_ROOT, -1);
	for (size_t i = 0; i < p->n_dirs; i++)
		CHECK(p, mkdir(p->dirs[i], 0755) == 0 || errno == EEXIST, STEP_MKDIR, (int)i);
	/* nodev too: the device nodes bound onto it are mounts of their own. */
	CHECK(p,
	      mount("tmpfs", p->dev_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		    DEV_TMPFS_OPT) == 0,
	      STEP_MOUNT_DEV, -1);
	for (size_t i = 0; i < p->n_m; i++) {
		struct mnt *m = &p->m[i];
		unsigned long fl = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID;
		int fd = open(m->dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);

		CHECK(p, fd >= 0, STEP_MOUNTPOINT, (int)i);
		close(fd);
		/* The O_PATH fd, not the path: what we opened is what we bind. */
		fd_path(fdpath, m->src_fd);
		CHECK(p, mount(fdpath, m->dst, NULL, MS_BIND, NULL) == 0, STEP_BIND, (int)i);
		if (!m->dev)
			fl |= MS_NODEV;
		if (m->data)
			fl |= MS_NOEXEC;
		fl |= locked_flags(m->src_fd);
		if (m->dev)
			fl &= ~(unsigned long)MS_NODEV;
		if (m->rw && !(locked_flags(m->src_fd) & MS_RDONLY))
			fl &= ~(unsigned long)MS_RDONLY;
		CHECK(p, mount(NULL, m->dst, NULL, fl, NULL) == 0, STEP_REMOUNT_RO, (int)i);
		close(m->src_fd);
		m->src_fd = -1;
	}
	if (p->dev_fd_dir != NULL) {
		CHECK(p, mkdir(p->dev_fd_dir, 0755) == 0, STEP_DEV_FD, -1);
		fd_path(fdpath, dev_fd_src);
		CHECK(p, mount(fdpath, p->dev_fd_dir, NULL, MS_BIND, NULL) == 0, STEP_DEV_FD, -1);
		CHECK(p,
		      mount(NULL, p->dev_fd_dir, NULL,
			    MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC |
				locked_flags(dev_fd_src),
			    NULL) == 0,
		      STEP_DEV_FD, -1);
		close(dev_fd_src);
	}
	CHECK(p,
	      mount(NULL, p->dev_dir, NULL,
		    MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0,
	      STEP_REMOUNT_DEV, -1);
	CHECK(p,
	      mount("tmpfs", p->run_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, p->run_opts) ==
		  0,
	      STEP_MOUNT_RUN, -1);
	CHECK(p, chdir(newroot) == 0, STEP_CHDIR, -1);
	/*
	 * pivot_root(".", ".") stacks the old root under the new one; the
	 * detach then drops every host mount from this namespace, so no path
	 * leads back to the host's file system.
	 */
	if (chrooted) {
		CHECK(p, chroot(".") == 0, STEP_PIVOT_ROOT, -1);
	} else {
		CHECK(p, syscall(SYS_pivot_root, ".", ".") == 0, STEP_PIVOT_ROOT, -1);
		CHECK(p, umount2(".", MNT_DETACH) == 0, STEP_UMOUNT_OLD, -1);
	}
	CHECK(p, chdir("/") == 0, STEP_CHDIR, -1);
	CHECK(p,
	      mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
		    NULL) == 0,
	      STEP_REMOUNT_ROOT, -1);
}

/*
 * Moves pass_fds to 3.., stderr to 2, /dev/null to 0 and 1, the status
 * and sync pipes (CLOEXEC) right after the passed fds, and closes
 * everything else.  Sources are first copied above every target so no
 * dup2 clobbers one.
 */
static void child_fds(struct plan *p)
{
	int top = 3 + (int)p->n_pass + 2;
	int hi[JAIL_MAX_FDS], hi_err = -1, hi_status, hi_sync, devnull;

	for (size_t i = 0; i < p->n_pass; i++) {
		hi[i] = fcntl(p->pass_fds[i], F_DUPFD_CLOEXEC, top);
		CHECK(p, hi[i] >= 0, STEP_FDS, -1);
	}
	if (p->stderr_fd >= 0) {
		hi_err = fcntl(p->stderr_fd, F_DUPFD_CLOEXEC, top);
		CHECK(p, hi_err >= 0, STEP_FDS, -1);
	}
	hi_status = fcntl(p->status_fd, F_DUPFD_CLOEXEC, top);
	CHECK(p, hi_status >= 0, STEP_FDS, -1);
	p->status_fd = hi_status;
	hi_sync = fcntl(p->sync_fd, F_DUPFD_CLOEXEC, top);
	CHECK(p, hi_sync >= 0, STEP_FDS, -1);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	CHECK(p, devnull >= 0, STEP_FDS, -1);
	devnull = fcntl(devnull, F_DUPFD_CLOEXEC, top);
	CHECK(p, devnull >= 0, STEP_FDS, -1);
	CHECK(p, dup2(devnull, 0) == 0 && dup2(devnull, 1) == 1, STEP_FDS, -1);
	CHECK(p, dup2(hi_err >= 0 ? hi_err : devnull, 2) == 2, STEP_FDS, -1);
	for (size_t i = 0; i < p->n_pass; i++)
		CHECK(p, dup2(hi[i], 3 + (int)i) == 3 + (int)i, STEP_FDS, -1);
	CHECK(p, dup3(hi_status, top - 2, O_CLOEXEC) == top - 2, STEP_FDS, -1);
	p->status_fd = top - 2;
	CHECK(p, dup3(hi_sync, top - 1, O_CLOEXEC) == top - 1, STEP_FDS, -1);
	p->sync_fd = top - 1;
	/* Every other fd of luminaguard's (sockets, other VMs' pipes) ends here. */
	CHECK(p, close_range((unsigned)top, ~0U, 0) == 0, STEP_FDS, -1);
}

static void child_rlimits(const struct plan *p)
{
	struct rlimit nofile = {p->nofile, p->nofile};
	struct rlimit core = {0, 0};

	CHECK(p, setrlimit(RLIMIT_NOFILE, &nofile) == 0, STEP_RLIMIT, RLIMIT_NOFILE);
	CHECK(p, setrlimit(RLIMIT_CORE, &core) == 0, STEP_RLIMIT, RLIMIT_CORE);
	if (p->fsize != 0) {
		struct rlimit fs = {p->fsize, p->fsize};
		CHECK(p, setrlimit(RLIMIT_FSIZE, &fs) == 0, STEP_RLIMIT, RLIMIT_FSIZE);
	}
	/* Counted per uid: only meaningful when the uid is this VM's alone. */
	if (p->nproc != 0) {
		struct rlimit np = {p->nproc, p->nproc};
		CHECK(p, setrlimit(RLIMIT_NPROC, &np) == 0, STEP_RLIMIT, RLIMIT_NPROC);
	}
}

static void child_drop_privileges(const struct plan *p)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {{0}};

	/* Needs CAP_SETPCAP, so before the uid switch takes it away. */
	for (int cap = 0; cap <= 63; cap++)
		CHECK(p, prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0 || errno == EINVAL, STEP_CAPBSET,
		      cap);
	CHECK(p, prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == 0 || errno == EINVAL,
	      STEP_AMBIENT, -1);
	/*
	 * Raw syscalls, not glibc's wrappers: those broadcast the change to
	 * every thread glibc knows of (POSIX wants credentials per process),
	 * and this child, cloned from one thread of a threaded parent, still
	 * has the parent's thread list in its copy of memory.  A thread that
	 * was being created at the moment of the clone made the wrapper wait
	 * forever for it (seen: a VM spawn hung in setgroups).  The child has
	 * one thread, so the kernel's per-thread change is the whole change.
	 */
	if (!p->userns) {
		/* Root's supplementary groups go; kvm's comes in only for /dev/kvm. */
		CHECK(p, syscall(SYS_setgroups, p->with_kvm_gid ? 1 : 0, &p->kvm_gid) == 0,
		      STEP_SETGROUPS, -1);
	}
	CHECK(p, syscall(SYS_setresgid, p->gid, p->gid, p->gid) == 0, STEP_SETRESGID, -1);
	CHECK(p, syscall(SYS_setresuid, p->uid, p->uid, p->uid) == 0, STEP_SETRESUID, -1);
	/*
	 * Explicitly, although setresuid() from 0 already clears them: in a
	 * user namespace we are not uid 0 to begin with (the map makes us our
	 * own uid), yet we hold every capability of that namespace, and
	 * setresuid() between two non-zero uids leaves them all in place.
	 */
	CHECK(p, syscall(SYS_capset, &hdr, data) == 0, STEP_CAPSET, -1);
	CHECK(p, prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, STEP_NO_NEW_PRIVS, -1);
}

static void __attribute__((noreturn)) child_main(void *arg)
{
	struct plan *p = arg;
	sigset_t none;

	close(p->sync_wfd);
	child_check_parent(p);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);

	if (p->userns) {
		/* Map our own uid/gid to the same numbers inside: one uid, no root. */
		CHECK(p, write_file("/proc/self/setgroups", "deny") == 0, STEP_SETGROUPS_DENY, -1);
		CHECK(p, write_file("/proc/self/uid_map", p->uid_map) == 0, STEP_UID_MAP, -1);
		CHECK(p, write_file("/proc/self/gid_map", p->gid_map) == 0, STEP_GID_MAP, -1);
		/*
		 * No user namespaces below this one: a nested one would give
		 * the VMM every capability inside it again (mount, and the
		 * kernel code only those reach).  This limit belongs to the
		 * jail's own user namespace, so it costs the host nothing.  The
		 * seccomp floor refuses CLONE_NEWUSER as well, so a /proc/sys
		 * we may not write (a read-only one in a container) is not a
		 * reason to fail: this is the second lock on that door.
		 */
		if (write_file("/proc/sys/user/max_user_namespaces", "0") < 0) {
			/* the floor still holds */
		}
	}
	for (size_t i = 0; i < p->n_cg; i++)
		CHECK(p, write(p->cg_fds[i], "0", 1) == 1, STEP_CGROUP, (int)i);
	/* Own session: no controlling tty to steal, and the user's ^C
	 * reaches luminaguard, which tears the VM down in order. */
	CHECK(p, setsid() >= 0, STEP_SETSID, -1);
	if (p->jailed) {
		child_mounts(p);
		CHECK(p, sethostname(JAIL_HOSTNAME, sizeof(JAIL_HOSTNAME) - 1) == 0, STEP_HOSTNAME,
		      -1);
	}
	child_fds(p);
	child_rlimits(p);
	if (p->jailed) {
		child_drop_privileges(p);
		/* A uid or gid change clears PDEATHSIG: arm it again, check again. */
		child_check_parent(p);
		/*
		 * A fresh, empty session keyring, as runc gives a container:
		 * otherwise the VMM inherits luminaguard's, and possessing a
		 * keyring is what grants access to the keys in it (an agent's
		 * tokens, a user's credentials), whatever the VMM's uid.  A
		 * raw syscall: libkeyutils is one more library for one call.
		 * After the uid switch, so that the new keyring is the VM's
		 * user's and counts against its quota.  ENOSYS: a kernel
		 * without keyrings has nothing to share.  EPERM: an outer
		 * seccomp filter or LSM refuses keyctl (Docker's default
		 * profile does); it refuses the VMM, our child, too, so the
		 * keyring is out of its reach already.
		 */
		CHECK(p,
		      syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) >= 0 ||
			  errno == ENOSYS || errno == EPERM,
		      STEP_KEYRING, -1);
		/*
		 * Before the allowlist, at every level: --seccomp off turns
		 * off QEMU's allowlist, not the jail (see seccomp.h).
		 */
		{
			int r = lg_seccomp_install(&p->floor);
			if (r < 0)
				child_fail(p, STEP_SECCOMP_FLOOR, -1, -r);
		}
	} else {
		/* --no-jail: seccomp without CAP_SYS_ADMIN needs it. */
		CHECK(p, prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, STEP_NO_NEW_PRIVS, -1);
	}
	{
		int r = lg_seccomp_install(&p->prog);
		if (r < 0)
			child_fail(p, STEP_SECCOMP, -1, -r);
	}
	execve(p->exec_path, p->argv, p->envp);
	child_fail(p, STEP_EXEC, -1, errno);
}

/* ---- parent ---- */

/* Lexically normalized absolute path (no ., .., //), or NULL. */
static char *normalize(const char *path)
{
	size_t n = strlen(path);
	char *out, *o;

	if (path[0] != '/')
		return NULL;
	out = xmalloc(n + 2);
	o = out;
	for (const char *p = path; *p;) {
		const char *e;
		size_t len;

		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		e = strchr(p, '/');
		len = e ? (size_t)(e - p) : strlen(p);
		if (len == 1 && p[0] == '.') {
			/* nothing */
		} else if (len == 2 && p[0] == '.' && p[1] == '.') {
			while (o > out && *--o != '/')
				;
		} else {
			*o++ = '/';
			memcpy(o, p, len);
			o += len;
		}
		p += len;
	}
	if (o == out)
		*o++ = '/';
	*o = '\0';
	return out;
}

static void plan_add_dir(struct plan *p, const char *jail_dir)
{
	char *d = xasprintf("%s%s", newroot, jail_dir);

	for (size_t i = 0; i < p->n_dirs; i++) {
		if (strcmp(p->dirs[i], d) == 0) {
			free(d);
			return;
		}
	}
	p->dirs = xrealloc(p->dirs, (p->n_dirs + 1) * sizeof(char *));
	p->dirs[p->n_dirs++] = d;
}

/* Adds every ancestor of jail_path, parents first. */
static void plan_add_parents(struct plan *p, const char *jail_path)
{
	cleanup_free char *copy = xstrdup(jail_path);

	for (char *s = strchr(copy + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		plan_add_dir(p, copy);
		*s = '/';
	}
}

static int plan_add_mount(struct plan *p, const char *src, const char *jail_path, bool data,
			  bool dev, struct lg_err **err)
{
	cleanup_free char *norm = normalize(jail_path);
	char *dst;

	if (norm == NULL || strcmp(norm, "/") == 0)
		return lg_err_msg(err, EINVAL, "jail: %s: not an absolute file path", jail_path);
	if (strcmp(norm, "/dev") == 0 || strcmp(norm, "/run") == 0 ||
	    strncmp(norm, JAIL_RUN_DIR, strlen(JAIL_RUN_DIR)) == 0 ||
	    (!dev && strncmp(norm, "/dev/", 5) == 0))
		return lg_err_msg(err, EINVAL, "jail: %s: a path the jail reserves", jail_path);
	dst = xasprintf("%s%s", newroot, norm);
	for (size_t i = 0; i < p->n_m; i++) {
		if (strcmp(p->m[i].dst, dst) == 0) {
			free(dst);
			return 0; /* the same path twice (a library also named as a file) */
		}
	}
	if (!dev)
		plan_add_parents(p, norm);
	p->m = xrealloc(p->m, (p->n_m + 1) * sizeof(*p->m));
	p->m[p->n_m++] =
	    (struct mnt){.src = xstrdup(src), .dst = dst, .data = data, .dev = dev, .src_fd = -1};
	return 0;
}

/*
 * Mounts an ELF program or shared object and everything it loads, each at
 * the path ld.so looks for it.  For the program, *env gets the
 * LD_LIBRARY_PATH= entry those paths need (env NULL: not wanted).
 */
static int plan_add_elf(struct plan *p, const char *path, char **env, struct lg_err **err)
{
	struct lg_elf_deps deps = {0};
	int r = lg_elf_deps_resolve(path, NULL, &deps, err);

	if (r < 0)
		return lg_err_wrap(err, "jail: dependencies of %s", path);
	r = plan_add_mount(p, path, path, false, false, err);
	for (size_t i = 0; r == 0 && i < deps.n; i++)
		r = plan_add_mount(p, deps.files[i].host_path, deps.files[i].jail_path, false,
				   false, err);
	if (r == 0 && env != NULL && deps.library_path != NULL && deps.library_path[0] != '\0')
		*env = xasprintf("LD_LIBRARY_PATH=%s", deps.library_path);
	lg_elf_deps_free(&deps);
	return r;
}

static void plan_free(struct plan *p)
{
	for (size_t i = 0; i < p->n_dirs; i++)
		free(p->dirs[i]);
	free(p->dirs);
	for (size_t i = 0; i < p->n_m; i++) {
		free(p->m[i].src);
		free(p->m[i].dst);
	}
	free(p->m);
	free(p->dev_dir);
	free(p->dev_fd_dir);
	free(p->run_dir);
	free(p->run_opts);
	free(p->envp[0]);
	lg_seccomp_prog_free(&p->floor);
	lg_seccomp_prog_free(&p->prog);
	for (size_t i = 0; i < p->n_cg; i++)
		close(p->cg_fds[i]);
}

/*
 * How the VM's user gets at /dev/kvm: through the device's group (usually
 * "kvm", mode 0660), as its one supplementary group.  Never root's group:
 * a /dev/kvm of group 0 is refused rather than handing out gid 0.
 */
static int kvm_access(struct plan *p, struct lg_err **err)
{
	struct stat st;

	if (stat("/dev/kvm", &st) < 0)
		return lg_err_sys(err, "jail: /dev/kvm");
	if (p->userns) {
		/* Our own uid and groups go in unchanged. */
		if (access("/dev/kvm", R_OK | W_OK) < 0)
			return lg_err_sys(err, "jail: /dev/kvm");
		return 0;
	}
	if ((st.st_mode & (S_IROTH | S_IWOTH)) == (S_IROTH | S_IWOTH))
		return 0;
	if (st.st_gid == 0 || (st.st_mode & (S_IRGRP | S_IWGRP)) != (S_IRGRP | S_IWGRP))
		return lg_err_msg(
		    err, EACCES,
		    "jail: /dev/kvm (mode %04o, group %u) cannot be opened by the VM's "
		    "own user; give it a group of its own with read-write access "
		    "(chgrp kvm /dev/kvm; chmod 0660 /dev/kvm, as udev does on most "
		    "distributions)",
		    st.st_mode & 07777, (unsigned)st.st_gid);
	p->kvm_gid = st.st_gid;
	p->with_kvm_gid = true;
	return 0;
}

/* Files the VMM reads must be readable by its uid, which owns none of them. */
static int check_readable(const char *path, bool root, struct lg_err **err)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return lg_err_sys(err, "jail: %s", path);
	if (!S_ISREG(st.st_mode))
		return lg_err_msg(err, EINVAL, "jail: %s: not a regular file", path);
	if (root && !(st.st_mode & S_IROTH))
		return lg_err_msg(err, EACCES,
				  "jail: %s is not readable by the VM's own user (mode %04o); "
				  "make it world-readable (chmod o+r)",
				  path, st.st_mode & 07777);
	return 0;
}

static int plan_build(const struct jail_spec *spec, const struct jail_opts *o, struct jail *j,
		      struct plan *p, struct lg_err **err)
{
	bool root = geteuid() == 0;
	int r;

	p->jailed = !o->disabled;
	p->userns = p->jailed && !root;
	p->exec_path = spec->binary;
	p->argv = spec->argv;
	p->pass_fds = spec->pass_fds;
	p->n_pass = spec->n_pass_fds;
	p->stderr_fd = spec->stderr_fd;
	p->nofile = spec->nofile ? spec->nofile : 1024;
	p->fsize = spec->fsize_bytes;
	p->outer_uid = getuid();
	p->outer_gid = getgid();
	p->uid = j->have_lease ? j->lease.uid : p->outer_uid;
	p->gid = j->have_lease ? (gid_t)j->lease.uid : p->outer_gid;
	if (j->have_lease)
		p->nproc = spec->pids_max ? spec->pids_max : 256;
	snprintf(p->uid_map, sizeof(p->uid_map), "%u %u 1\n", (unsigned)p->outer_uid,
		 (unsigned)p->outer_uid);
	snprintf(p->gid_map, sizeof(p->gid_map), "%u %u 1\n", (unsigned)p->outer_gid,
		 (unsigned)p->outer_gid);
	if (j->cg != NULL)
		p->n_cg = lg_cgroup_procs_fds(j->cg, p->cg_fds, LG_CGROUP_MAX_PROCS_FDS);

	{
		const struct lg_sc_profile *prof = lg_sc_profile_find(spec->vmm_kind);
		enum lg_seccomp_level lvl = o->seccomp;
		if (prof == NULL && strcmp(spec->vmm_kind, "none") != 0)
			return lg_err_msg(err, EINVAL, "jail: no seccomp profile for VMM kind '%s'",
					  spec->vmm_kind);
		if (prof == NULL)
			lvl = LG_SECCOMP_OFF;
		r = lg_seccomp_compile(prof, lvl, &p->prog, err);
		if (r < 0)
			return lg_err_wrap(err, "jail: seccomp");
	}
	if (!p->jailed)
		return 0;
	r = lg_seccomp_compile_floor(&p->floor, err);
	if (r < 0)
		return lg_err_wrap(err, "jail: seccomp floor");

	if (spec->binary[0] != '/')
		return lg_err_msg(err, EINVAL, "jail: %s: the program path must be absolute",
				  spec->binary);
	r = plan_add_elf(p, spec->binary, &p->envp[0], err);
	/*
	 * Modules' libraries are found through the program's LD_LIBRARY_PATH
	 * or the default directories; the resolver puts them at the same
	 * places.
	 */
	for (size_t i = 0; r == 0 && spec->modules != NULL && spec->modules[i] != NULL; i++)
		r = plan_add_elf(p, spec->modules[i], NULL, err);
	for (size_t i = 0; r == 0 && spec->files != NULL && spec->files[i] != NULL; i++) {
		r = check_readable(spec->files[i], j->have_lease, err);
		if (r == 0)
			r = plan_add_mount(p, spec->files[i], spec->files[i], true, false, err);
	}
	for (size_t i = 0; r == 0 && spec->rw_files != NULL && spec->rw_files[i] != NULL; i++) {
		r = check_readable(spec->rw_files[i], j->have_lease, err);
		if (r == 0 && j->have_lease && access(spec->rw_files[i], F_OK) == 0) {
			struct stat st;
			if (stat(spec->rw_files[i], &st) == 0 && !(st.st_mode & S_IWOTH))
				r = lg_err_msg(err, EACCES,
					       "jail: %s is not writable by the VM's own user",
					       spec->rw_files[i]);
		}
		if (r == 0)
			r = plan_add_mount(p, spec->rw_files[i], spec->rw_files[i], true, false,
					   err);
		if (r == 0)
			p->m[p->n_m - 1].rw = true;
	}
	if (r < 0)
		return r;

	plan_add_dir(p, "/dev");
	plan_add_dir(p, "/run");
	plan_add_dir(p, JAIL_RUN_DIR);
	p->dev_dir = xasprintf("%s/dev", newroot);
	if (spec->dev_fd)
		p->dev_fd_dir = xasprintf("%s/dev/fd", newroot);
	p->run_dir = xasprintf("%s" JAIL_RUN_DIR, newroot);
	p->run_opts = xasprintf("mode=0700,uid=%u,gid=%u," RUN_TMPFS_SIZE, (unsigned)p->uid,
				(unsigned)p->gid);
	r = plan_add_mount(p, "/dev/null", "/dev/null", false, true, err);
	if (r == 0)
		r = plan_add_mount(p, "/dev/urandom", "/dev/urandom", false, true, err);
	if (r == 0 && spec->dev_kvm) {
		r = kvm_access(p, err);
		if (r == 0)
			r = plan_add_mount(p, "/dev/kvm", "/dev/kvm", false, true, err);
	}
	return r;
}

static char *describe_failure(const struct plan *p, const struct child_status *st)
{
	const char *step =
	    st->step >= 0 && (size_t)st->step < ARRAY_SIZE(step_names) ? step_names[st->step] : "?";
	const char *what = NULL;

	switch (st->step) {
	case STEP_OPEN_SOURCE:
	case STEP_MOUNTPOINT:
	case STEP_BIND:
	case STEP_REMOUNT_RO:
		if (st->index >= 0 && (size_t)st->index < p->n_m)
			what = p->m[st->index].dst + strlen(newroot);
		break;
	case STEP_MKDIR:
		if (st->index >= 0 && (size_t)st->index < p->n_dirs)
			what = p->dirs[st->index] + strlen(newroot);
		break;
	case STEP_EXEC:
		what = p->exec_path;
		break;
	}
	return what ? xasprintf("%s %s", step, what) : xstrdup(step);
}

static atomic_uint name_counter;

int jail_spawn(const struct jail_spec *spec, struct jail **out, struct lg_err **err)
{
	pthread_once(&root_once, detect_root);
	static const struct jail_opts defaults = {0};
	const struct jail_opts *o = spec->opts ? spec->opts : &defaults;
	struct plan p = {.status_fd = -1, .sync_fd = -1, .sync_wfd = -1};
	int status[2] = {-1, -1}, sync[2] = {-1, -1};
	unsigned long flags = 0;
	struct child_status st;
	struct jail *j;
	ssize_t n;
	pid_t pid;
	int r;

	if (spec->n_pass_fds > JAIL_MAX_FDS)
		return lg_err_msg(err, EINVAL, "jail: more than %d fds to pass", JAIL_MAX_FDS);
	j = xzalloc(sizeof(*j));
	j->pid = -1;
	j->name = spec->name
		      ? xstrdup(spec->name)
		      : xasprintf("vm-%d-%u", (int)getpid(), atomic_fetch_add(&name_counter, 1));
	j->memory_bytes = spec->memory_bytes;

	if (!o->disabled && geteuid() == 0) {
		/* Two VMs, two users: no signals, ptrace or /proc between them. */
		uid_t first = o->uid_first ? o->uid_first : JAIL_DEFAULT_UID_FIRST;
		uid_t last = o->uid_last ? o->uid_last : JAIL_DEFAULT_UID_LAST;
		struct lg_cgroup_limits lim = {
		    .memory_bytes = spec->memory_bytes,
		    .pids_max = spec->pids_max,
		    .cpus = spec->cpus,
		};

		r = lg_uid_acquire(NULL, first, last, &j->lease, err);
		if (r < 0) {
			lg_err_wrap(err, "jail: uid");
			goto fail;
		}
		j->have_lease = true;
		if (lg_cgroup_detect(NULL) != LG_CGROUP_NONE) {
			r = lg_cgroup_create(NULL, j->name, &lim, &j->cg, err);
			/*
			 * A luminaguard that was SIGKILLed cannot remove its
			 * cgroups; one of them may carry our generated name if our
			 * pid is its pid reused.  Take the next name.
			 */
			for (int tries = 0; r == -EEXIST && spec->name == NULL && tries < 16;
			     tries++) {
				lg_err_free(err);
				free(j->name);
				j->name = xasprintf("vm-%d-%u", (int)getpid(),
						    atomic_fetch_add(&name_counter, 1));
				r = lg_cgroup_create(NULL, j->name, &lim, &j->cg, err);
			}
			if (r < 0) {
				lg_err_wrap(err, "jail: cgroup");
				goto fail;
			}
		}
	}
	r = plan_build(spec, o, j, &p, err);
	if (r < 0)
		goto fail;
	if (pipe2(status, O_CLOEXEC) < 0 || pipe2(sync, O_CLOEXEC) < 0) {
		r = lg_err_sys(err, "jail: pipe");
		goto fail;
	}
	p.status_fd = status[1];
	p.sync_fd = sync[0];
	p.sync_wfd = sync[1];
	if (o->seccomp != LG_SECCOMP_OFF)
		j->watch = lg_seccomp_watch_open();
	j->seccomp_log = o->seccomp == LG_SECCOMP_LOG;

	if (p.jailed)
		flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET |
			(p.userns ? CLONE_NEWUSER : 0);
	pid = lg_keeper_clone(flags, child_main, &p);
	if (pid < 0) {
		r = lg_err_set(err, -pid, "jail: clone");
		if (-pid == EPERM || -pid == ENOSPC)
			lg_err_wrap(err, "%s",
				    p.userns ? "user namespaces are not allowed here (see "
					       "`luminaguard doctor`)"
					     : "namespaces are not allowed here");
		goto fail;
	}
	j->pid = pid;
	close(status[1]);
	status[1] = -1;
	close(sync[0]);
	sync[0] = -1;

	n = lg_read_all(status[0], &st, sizeof(st));
	if (n == (ssize_t)sizeof(st)) {
		cleanup_free char *what = describe_failure(&p, &st);
		r = lg_err_set(err, st.err, "jail: %s", what);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		j->pid = -1;
		goto fail;
	}
	/* EOF: exec'd.  The sync pipe's write end goes with us: its job is done. */
	close(status[0]);
	close(sync[1]);
	plan_free(&p);
	*out = j;
	return 0;

fail:
	for (int i = 0; i < 2; i++) {
		if (status[i] >= 0)
			close(status[i]);
		if (sync[i] >= 0)
			close(sync[i]);
	}
	plan_free(&p);
	jail_release(j);
	return r;
}

pid_t jail_pid(const struct jail *j)
{
	return j->pid;
}

char *jail_explain_exit(struct jail *j, int wait_status)
{
	if (j == NULL || !WIFSIGNALED(wait_status))
		return NULL;
	if (WTERMSIG(wait_status) == SIGSYS) {
		cleanup_free char *name =
		    j->watch ? lg_seccomp_watch_killer(j->watch, j->pid) : NULL;
		return xasprintf("VMM killed by seccomp: syscall %s",
				 name ? name : "unknown (no audit record readable)");
	}
	if (WTERMSIG(wait_status) == SIGKILL && j->cg != NULL && lg_cgroup_oom_killed(j->cg))
		return xasprintf("VMM killed: out of memory (cgroup limit %llu MiB)",
				 (unsigned long long)(j->memory_bytes >> 20));
	return NULL;
}

void jail_release(struct jail *j)
{
	if (j == NULL)
		return;
	/* Kills what might be left (nothing, normally: the VMM was PID 1 of
	 * its namespace, so its end took every process in it along). */
	lg_cgroup_destroy(j->cg);
	if (j->seccomp_log && j->watch != NULL && j->pid > 0) {
		/* Level log exists to build the list: say what it would have killed. */
		cleanup_free char *names = lg_seccomp_watch_logged(j->watch, j->pid);
		if (names != NULL)
			lg_warn("seccomp log: the VMM made syscalls outside its allowlist: %s",
				names);
		else
			lg_info("seccomp log: the VMM stayed inside its allowlist");
	}
	if (j->have_lease)
		lg_uid_release(&j->lease);
	lg_seccomp_watch_close(j->watch);
	free(j->name);
	free(j);
}

/* ---- doctor ---- */

/* Can this process create a user namespace?  errno-style 0 or -errno. */
static int try_userns(void)
{
	pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(0);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return 0;
}

static char *read_line_of(const char *path)
{
	char buf[64];
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = lg_read_all(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return xstrdup(buf);
}

/* A real spawn of /bin/true: does the whole jail work here? */
static char *test_spawn(bool *usable)
{
	const char *prog = access("/bin/true", X_OK) == 0 ? "/bin/true" : "/usr/bin/true";
	char *const argv[] = {(char *)prog, NULL};
	struct jail_opts o = {.seccomp = LG_SECCOMP_OFF};
	struct jail_spec s = {
	    .name = NULL,
	    .vmm_kind = "none",
	    .binary = prog,
	    .argv = argv,
	    .stderr_fd = -1,
	    .memory_bytes = 64u << 20,
	    .pids_max = 16,
	    .cpus = 1,
	    .opts = &o,
	};
	struct lg_err *err = NULL;
	struct jail *j = NULL;
	char *res;
	int st = 0;

	*usable = false;
	if (jail_spawn(&s, &j, &err) < 0) {
		res = xasprintf("FAILS: %s", err->msg);
		lg_err_free(&err);
		return res;
	}
	while (waitpid(jail_pid(j), &st, 0) < 0 && errno == EINTR)
		;
	jail_release(j);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		*usable = true;
		return xasprintf("ok (%s ran jailed)", prog);
	}
	return xasprintf("FAILS: %s jailed ended with status 0x%x", prog, st);
}

char *jail_describe_host(bool *usable)
{
	cleanup_free char *test = NULL;
	char *s;

	if (geteuid() == 0) {
		enum lg_cgroup_version v = lg_cgroup_detect(NULL);
		test = test_spawn(usable);
		s = xasprintf("jail: root: per-VM uids (%u..%u), %s\n"
			      "jail: test spawn %s\n",
			      JAIL_DEFAULT_UID_FIRST, JAIL_DEFAULT_UID_LAST,
			      v == LG_CGROUP_V2	  ? "cgroup v2 (memory, pids, cpu)"
			      : v == LG_CGROUP_V1 ? "cgroup v1 (memory, pids, cpu)"
						  : "NO cgroups mounted: no memory, pids or CPU "
						    "limits",
			      test);
		return s;
	}
	{
		int r = try_userns();
		cleanup_free char *knob =
		    read_line_of("/proc/sys/kernel/unprivileged_userns_clone");
		cleanup_free char *aa =
		    read_line_of("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");

		*usable = false;
		if (r < 0)
			return xasprintf(
			    "jail: non-root and user namespaces are NOT allowed here (%s%s%s%s%s): "
			    "VMs cannot start jailed; run as root, or allow them (sysctl "
			    "kernel.unprivileged_userns_clone=1, or "
			    "kernel.apparmor_restrict_unprivileged_userns=0)\n",
			    strerror(-r), knob ? ", unprivileged_userns_clone=" : "",
			    knob ? knob : "", aa ? ", apparmor_restrict_unprivileged_userns=" : "",
			    aa ? aa : "");
		test = test_spawn(usable);
		return xasprintf("jail: non-root: user namespace; every VM runs as your own uid "
				 "(VMs are not separate users), NO cgroup limits (memory, pids, "
				 "cpu), rlimits only\n"
				 "jail: test spawn %s\n",
				 test);
	}
}
