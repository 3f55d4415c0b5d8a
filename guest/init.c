/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lg-agent's entry point.  As PID 1 in the guest (the initramfs's /init) it
 * mounts the basics, loads the modules listed in /etc/lg-modules, finds the
 * agent's virtio-serial port, switches into the image's root file system
 * when the kernel command line asks for one (lg.root=, see setup_root), and
 * serves the protocol on the port; when the session ends it powers the
 * machine off.  PID 1 must never exit (that panics the kernel), so every
 * fatal path ends in power_off().
 *
 * Not as PID 1 it serves an already-open fd (`--fd N`), which is how the
 * host-side tests run it over a socketpair.
 */
#include "guest/agent.h"

#include "common/util.h"
#include "proto/proto.h"
#include "lg-config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <signal.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4 /* linux/module.h, since 6.4 */
#endif

#define MODULES_LIST	 "/etc/lg-modules"
#define VIRTIO_PORTS_DIR "/sys/class/virtio-ports"
#define DEFAULT_PATH	 "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define HOSTNAME	 "luminaguard"
#define PORT_WAIT_MS	 10000 /* for the virtio modules to probe and the port to appear */
#define HOST_WAIT_MS	 60000 /* for the host to open its end of the port */
#define POLL_INTERVAL_MS 10
#define NET_PORT_WAIT_MS 2000 /* for a second port seen in sysfs to get its name */

/* The root file system (issue 9, docs/images.md): kernel command-line words. */
#define CMDLINE_ROOT	  "lg.root="  /* the base image's format: "erofs" */
#define CMDLINE_LAYER	  "lg.layer=" /* MiB of the writable layer */
#define LAYER_DEFAULT_MIB 256
#define LAYER_MAX_MIB	  (1u << 20) /* 1 TiB: above any guest's RAM, so only a typo */
#define ROOT_SERIAL	  "lg-root"  /* the virtio serial of the base image's disk */
#define DISK_WAIT_MS	  10000	     /* like PORT_WAIT_MS: the virtio-blk probe is asynchronous */
#define STAGE_DIR	  "/lg"
#define STAGE_LOWER	  STAGE_DIR "/lower"
#define STAGE_LAYER	  STAGE_DIR "/layer"
#define STAGE_UPPER	  STAGE_LAYER "/upper"
#define STAGE_WORK	  STAGE_LAYER "/work"
#define STAGE_ROOT	  STAGE_DIR "/root"

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void __attribute__((noreturn)) power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	/* Only reached if power-off is refused; with -no-reboot a reboot ends QEMU too. */
	agent_log("power off: %s", strerror(errno));
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

struct mount_spec {
	const char *source, *target, *fstype;
	unsigned long flags;
	const char *data;
	/*
	 * Not with a root file system: there /tmp is the image's, on the
	 * overlay, so what commands write there counts against the layer's
	 * size like any other write (a full layer is ENOSPC, not guest OOM).
	 */
	bool initramfs_only;
};

/* First, alone: /proc/cmdline says which of the others to mount. */
static const struct mount_spec proc_mount = {
    "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false};

static const struct mount_spec mounts[] = {
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", false},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666", false},
    {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", false},
    {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", true},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", false},
};

/* Mounted in the initramfs, moved into the new root by setup_root(). */
static const char *const moved_mounts[] = {"/dev", "/proc", "/sys", "/run"};

static void mount_one(const struct mount_spec *m)
{
	if (mkdir(m->target, 0755) < 0 && errno != EEXIST)
		agent_log("mkdir %s: %s", m->target, strerror(errno));
	/* EBUSY: the kernel mounted it already (CONFIG_DEVTMPFS_MOUNT). */
	if (mount(m->source, m->target, m->fstype, m->flags, m->data) < 0 && errno != EBUSY)
		agent_log("mount %s on %s: %s", m->fstype, m->target, strerror(errno));
}

static void mount_basics(bool rootfs)
{
	static const char *const links[][2] = {
	    {"/proc/self/fd", "/dev/fd"}, /* bash process substitution, /dev/stdin users */
	    {"/proc/self/fd/0", "/dev/stdin"},
	    {"/proc/self/fd/1", "/dev/stdout"},
	    {"/proc/self/fd/2", "/dev/stderr"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(mounts); i++)
		if (!(rootfs && mounts[i].initramfs_only))
			mount_one(&mounts[i]);
	for (size_t i = 0; i < ARRAY_SIZE(links); i++)
		if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
			agent_log("symlink %s: %s", links[i][1], strerror(errno));
}

/*
 * The kernel opens /dev/console as 0-2 for init only if the initramfs has
 * that node; otherwise they are closed, and the first files we open would
 * land on 0-2.  devtmpfs has the node, so fill the gaps from there.
 */
static void console_fds(void)
{
	for (;;) {
		int fd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (fd < 0)
			fd = open("/dev/null", O_RDWR);
		if (fd < 0)
			return;
		if (fd > STDERR_FILENO) {
			close(fd);
			return;
		}
	}
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void load_module(const char *path)
{
	int flags = 0;
	int fd;

	/* Compressed modules are unpacked by the kernel if it can (6.4+, MODULE_DECOMPRESS). */
	if (has_suffix(path, ".xz") || has_suffix(path, ".zst") || has_suffix(path, ".gz"))
		flags |= MODULE_INIT_COMPRESSED_FILE;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		agent_log("module %s: %s", path, strerror(errno));
		return;
	}
	/* EEXIST: built in, or loaded already as a dependency. */
	if (syscall(SYS_finit_module, fd, "", flags) < 0 && errno != EEXIST)
		agent_log("module %s: %s", path, strerror(errno));
	close(fd);
}

/* A missing list is not an error: a kernel with everything built in needs none. */
static void load_modules(void)
{
	cleanup_file FILE *f = fopen(MODULES_LIST, "re");
	cleanup_free char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (f == NULL) {
		if (errno != ENOENT)
			agent_log("%s: %s", MODULES_LIST, strerror(errno));
		return;
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
				 line[n - 1] == '\t'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		load_module(line);
	}
}

static bool port_has_name(const char *dev, const char *want)
{
	char path[PATH_MAX], name[128];
	cleanup_close int fd = -1;
	ssize_t n;

	snprintf(path, sizeof(path), VIRTIO_PORTS_DIR "/%s/name", dev);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, name, sizeof(name) - 1);
	if (n <= 0)
		return false;
	while (n > 0 && (name[n - 1] == '\n' || name[n - 1] == '\0'))
		n--;
	name[n] = '\0';
	return strcmp(name, want) == 0;
}

/*
 * The virtio modules probe asynchronously after finit_module returns, and
 * devtmpfs creates /dev/vportNpM a moment after sysfs shows the port: poll
 * both until they are there.
 */
static int open_port(const char *want, int timeout_ms, bool only_if_more)
{
	uint64_t deadline = lg_now_ms() + (uint64_t)timeout_ms;
	int last_err = ENOENT;

	for (;;) {
		DIR *d = opendir(VIRTIO_PORTS_DIR);
		struct dirent *de;
		int ports = 0;

		while (d != NULL && (de = readdir(d)) != NULL) {
			char dev[PATH_MAX];
			int fd;

			if (de->d_name[0] == '.')
				continue;
			ports++;
			if (!port_has_name(de->d_name, want))
				continue;
			snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
			fd = open(dev, O_RDWR | O_CLOEXEC | O_NOCTTY);
			if (fd >= 0) {
				closedir(d);
				return fd;
			}
			last_err = errno;
		}
		if (d != NULL)
			closedir(d);
		/*
		 * The optional net port: QEMU announces every port before it
		 * names the first, so once the agent port is there, a lone port
		 * means there is no other to wait for.
		 */
		if (only_if_more && ports < 2)
			return -ENOENT;
		if (lg_now_ms() >= deadline)
			return -last_err;
		sleep_ms(POLL_INTERVAL_MS);
	}
}

/*
 * Until the host opens its end, a virtio-serial port reads EOF and polls
 * POLLHUP, which the serve loop would take for "host gone".  Wait for the
 * host first.  poll() cannot wait for this (POLLHUP is always reported),
 * so look every few milliseconds.
 */
static int wait_for_host(int fd, int timeout_ms)
{
	uint64_t deadline = lg_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};

		if (poll(&pfd, 1, 0) < 0 && errno != EINTR)
			return -errno;
		if (!(pfd.revents & POLLHUP))
			return 0;
		if (lg_now_ms() >= deadline)
			return -ETIMEDOUT;
		sleep_ms(POLL_INTERVAL_MS);
	}
}

/* Programs in the guest may use loopback among themselves; the forwarder listens there. */
static void loopback_up(void)
{
	struct ifreq ifr = {0};
	cleanup_close int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		agent_log("loopback: socket: %s", strerror(errno));
		return;
	}
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		agent_log("loopback: get flags: %s", strerror(errno));
		return;
	}
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		agent_log("loopback: up: %s", strerror(errno));
}

/*
 * When the VM has the net port, start the forwarder as a child (a crash
 * there costs the network, not PID 1, which reaps it like any orphan).
 * The proxy variables are not set here: a pooled or snapshot VM boots
 * with the port before anyone knows whether its claimer will have
 * network, so the host adds them to each command of a sandbox with egress
 * (lg_sandbox_exec), and closes the port of one without (the forwarder
 * then exits and 127.0.0.1:LG_NET_PROXY_PORT refuses).  Without the port
 * the guest has no way out at all.
 */
static void start_netfwd(int agent_fd)
{
	int fd = open_port(LG_NET_PORT_NAME, NET_PORT_WAIT_MS, true);
	pid_t pid;

	if (fd == -ENOENT)
		return;
	if (fd < 0) {
		agent_log("net port %s: %s; no network", LG_NET_PORT_NAME, strerror(-fd));
		return;
	}
	pid = fork();
	if (pid < 0) {
		agent_log("net port: fork: %s; no network", strerror(errno));
		close(fd);
		return;
	}
	if (pid == 0) {
		int r;

		close(agent_fd);
		r = wait_for_host(fd, HOST_WAIT_MS);
		if (r < 0) {
			agent_log("the host did not open the net port (%s)", strerror(-r));
			_exit(1);
		}
		_exit(netfwd_serve(fd, LG_NET_PROXY_PORT) < 0 ? 1 : 0);
	}
	close(fd);
}

/* ---- the root file system (lg.root=) ---- */

struct boot {
	bool rootfs;	    /* lg.root= was on the command line */
	char root_kind[32]; /* its value, printable, for messages */
	uint64_t layer_mib; /* lg.layer=, or LAYER_DEFAULT_MIB */
	int err;	    /* setup_root failed: errno, and why in one line */
	char why[256];
};

static void __attribute__((format(printf, 3, 4)))
boot_fail(struct boot *b, int errnum, const char *fmt, ...)
{
	va_list ap;

	b->err = errnum > 0 ? errnum : EIO;
	va_start(ap, fmt);
	vsnprintf(b->why, sizeof(b->why), fmt, ap);
	va_end(ap);
	agent_log("%s", b->why);
}

/* A value from the command line, for a message: bounded and printable. */
static void copy_word(char *dst, size_t n, const char *src, size_t len)
{
	size_t j = 0;

	for (size_t i = 0; i < len && j + 1 < n; i++)
		dst[j++] = (src[i] > 0x20 && src[i] < 0x7f) ? src[i] : '?';
	dst[j] = '\0';
}

/*
 * The words lg.root= and lg.layer= of /proc/cmdline; the last of each wins,
 * as for the kernel's own.  (The kernel keeps dotted words from init's argv
 * and environment, so /proc/cmdline is the only place to read them.)
 */
static void parse_cmdline(struct boot *b)
{
	char buf[4096];
	cleanup_close int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? lg_read_all(fd, buf, sizeof(buf) - 1) : -1;
	char layer[32] = "";
	bool has_layer = false;
	char *p;

	b->layer_mib = LAYER_DEFAULT_MIB;
	if (n < 0) {
		agent_log("/proc/cmdline: %s", strerror(fd < 0 ? errno : (int)-n));
		return;
	}
	buf[n] = '\0';
	for (p = buf; *p != '\0';) {
		size_t len;

		p += strspn(p, " \t\n");
		len = strcspn(p, " \t\n");
		if (len == 0)
			break;
		if (len >= strlen(CMDLINE_ROOT) &&
		    strncmp(p, CMDLINE_ROOT, strlen(CMDLINE_ROOT)) == 0) {
			b->rootfs = true;
			copy_word(b->root_kind, sizeof(b->root_kind), p + strlen(CMDLINE_ROOT),
				  len - strlen(CMDLINE_ROOT));
		} else if (len >= strlen(CMDLINE_LAYER) &&
			   strncmp(p, CMDLINE_LAYER, strlen(CMDLINE_LAYER)) == 0) {
			has_layer = true;
			copy_word(layer, sizeof(layer), p + strlen(CMDLINE_LAYER),
				  len - strlen(CMDLINE_LAYER));
		}
		p += len;
	}
	if (has_layer && lg_parse_u64(layer, 1, LAYER_MAX_MIB, &b->layer_mib) < 0) {
		agent_log("%s%s is not a size in MiB (1..%u); the layer gets %u MiB", CMDLINE_LAYER,
			  layer, LAYER_MAX_MIB, LAYER_DEFAULT_MIB);
		b->layer_mib = LAYER_DEFAULT_MIB;
	}
}

/* A sysfs attribute without its trailing newline; false if unreadable. */
static bool read_attr(const char *path, char *buf, size_t n)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r;

	if (fd < 0)
		return false;
	r = read(fd, buf, n - 1);
	if (r <= 0)
		return false;
	while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == '\0' || buf[r - 1] == ' '))
		r--;
	buf[r] = '\0';
	return true;
}

/*
 * The disk whose virtio serial is ROOT_SERIAL: virtio-mmio devices probe
 * in their own order, not the command line's, so the name (vda, vdb...)
 * says nothing.  Polls, like open_port, for the probe and then for
 * devtmpfs's node.  Returns 0 with "/dev/vdX" in dev, or -errno.
 */
static int find_root_disk(struct boot *b, char *dev, size_t n)
{
	uint64_t deadline = lg_now_ms() + DISK_WAIT_MS;

	for (;;) {
		DIR *d = opendir("/sys/block");
		struct dirent *de;

		while (d != NULL && (de = readdir(d)) != NULL) {
			char path[PATH_MAX], val[64];
			struct stat st;

			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/sys/block/%s/serial", de->d_name);
			if (!read_attr(path, val, sizeof(val)) || strcmp(val, ROOT_SERIAL) != 0)
				continue;
			/*
			 * Every sandbox of the image shares the file: the host must
			 * attach it read-only (QEMU's readonly=on makes virtio-blk
			 * report it so).  A writable one is the host's mistake, and
			 * root in this guest could then write the others' base.
			 */
			snprintf(path, sizeof(path), "/sys/block/%s/ro", de->d_name);
			if (read_attr(path, val, sizeof(val)) && strcmp(val, "0") == 0) {
				boot_fail(b, EROFS,
					  "root disk: /dev/%s (serial %s) is writable; the host "
					  "must attach the base image read-only",
					  de->d_name, ROOT_SERIAL);
				closedir(d);
				return -EROFS;
			}
			snprintf(dev, n, "/dev/%s", de->d_name);
			if (stat(dev, &st) == 0 && S_ISBLK(st.st_mode)) {
				closedir(d);
				return 0;
			}
		}
		if (d != NULL)
			closedir(d);
		if (lg_now_ms() >= deadline) {
			boot_fail(b, ENODEV, "root disk: no virtio disk with serial %s after %d ms",
				  ROOT_SERIAL, DISK_WAIT_MS);
			return -ENODEV;
		}
		sleep_ms(POLL_INTERVAL_MS);
	}
}

/*
 * A directory of the new root that something is mounted on or that must
 * exist: made if missing.  lstat, not stat: mount(2) would follow a symlink
 * the image put there, and resolve it in the initramfs, not in the image.
 */
static int ensure_dir(struct boot *b, const char *rel, mode_t mode)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), STAGE_ROOT "%s", rel);
	if (lstat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		boot_fail(b, ENOTDIR, "root file system: the image's %s is not a directory", rel);
		return -ENOTDIR;
	}
	if (errno != ENOENT || mkdir(path, mode) < 0 || chmod(path, mode) < 0) {
		boot_fail(b, errno, "root file system: mkdir %s: %s", rel, strerror(errno));
		return -b->err;
	}
	return 0;
}

/* Moves the first n of moved_mounts back out of the new root after a failure. */
static void move_back(size_t n)
{
	char path[PATH_MAX];

	while (n-- > 0) {
		snprintf(path, sizeof(path), STAGE_ROOT "%s", moved_mounts[n]);
		if (mount(path, moved_mounts[n], NULL, MS_MOVE, NULL) < 0)
			agent_log("move %s back: %s", moved_mounts[n], strerror(errno));
	}
}

static int mount_stage(struct boot *b)
{
	char dev[PATH_MAX], data[256];
	struct stat st;

	if (strcmp(b->root_kind, "erofs") != 0) {
		boot_fail(b, EINVAL, "root disk: unknown %s%s (this agent knows erofs)",
			  CMDLINE_ROOT, b->root_kind);
		return -EINVAL;
	}
	if (find_root_disk(b, dev, sizeof(dev)) < 0)
		return -b->err;
	for (const char *const *d =
		 (const char *const[]){STAGE_DIR, STAGE_LOWER, STAGE_LAYER, STAGE_ROOT, NULL};
	     *d != NULL; d++) {
		if (mkdir(*d, 0755) < 0 && errno != EEXIST) {
			boot_fail(b, errno, "root file system: mkdir %s: %s", *d, strerror(errno));
			return -b->err;
		}
	}
	/* Read-only twice over: the mount, and the disk itself (find_root_disk). */
	if (mount(dev, STAGE_LOWER, "erofs", MS_RDONLY | MS_NODEV, NULL) < 0) {
		/* ENODEV from mount(2): the kernel has no such file system type. */
		boot_fail(b, errno, "root disk: mount erofs %s: %s%s", dev, strerror(errno),
			  errno == ENODEV ? " (no erofs module in " MODULES_LIST "?)" : "");
		return -b->err;
	}
	/*
	 * The writable layer is guest RAM with a ceiling: what commands write
	 * anywhere in the root (also /tmp) fills it, and a full layer is
	 * ENOSPC for them, not memory taken from their work.
	 */
	snprintf(data, sizeof(data), "size=%llum,mode=0755", (unsigned long long)b->layer_mib);
	if (mount("tmpfs", STAGE_LAYER, "tmpfs", 0, data) < 0) {
		boot_fail(b, errno, "writable layer: mount tmpfs %s: %s", data, strerror(errno));
		umount2(STAGE_LOWER, MNT_DETACH);
		return -b->err;
	}
	if ((mkdir(STAGE_UPPER, 0755) < 0 && errno != EEXIST) ||
	    (mkdir(STAGE_WORK, 0755) < 0 && errno != EEXIST)) {
		boot_fail(b, errno, "writable layer: mkdir: %s", strerror(errno));
		goto undo_layer;
	}
	snprintf(data, sizeof(data), "lowerdir=%s,upperdir=%s,workdir=%s", STAGE_LOWER, STAGE_UPPER,
		 STAGE_WORK);
	if (mount("overlay", STAGE_ROOT, "overlay", 0, data) < 0) {
		boot_fail(b, errno, "root file system: mount overlay: %s%s", strerror(errno),
			  errno == ENODEV ? " (no overlay module in " MODULES_LIST "?)" : "");
		goto undo_layer;
	}
	if (stat(STAGE_ROOT "/bin", &st) < 0 && stat(STAGE_ROOT "/usr/bin", &st) < 0)
		agent_log("root file system: the image has neither /bin nor /usr/bin");
	return 0;
undo_layer:
	umount2(STAGE_LAYER, MNT_DETACH);
	umount2(STAGE_LOWER, MNT_DETACH);
	return -b->err;
}

/*
 * Empties the old root (the initramfs: the agent and the modules, a few MiB
 * of guest RAM that nothing uses after the switch), as switch_root(8) does.
 * It is reachable only through dirfd now.  Never crosses into another file
 * system: the staging mounts (the base and the layer) are mounted on
 * directories of it, and fstatat on such a name reports the mounted root,
 * with its own st_dev.  Errors are ignored: this only frees memory.
 */
static void delete_contents(int dirfd, dev_t rootdev, int depth)
{
	DIR *d;
	struct dirent *de;

	if (depth > 64)
		return;
	d = fdopendir(dirfd);
	if (d == NULL) {
		close(dirfd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		int sub;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    st.st_dev != rootdev)
			continue;
		if (S_ISDIR(st.st_mode)) {
			sub = openat(dirfd, de->d_name,
				     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				delete_contents(sub, rootdev, depth + 1);
			unlinkat(dirfd, de->d_name, AT_REMOVEDIR);
		} else {
			unlinkat(dirfd, de->d_name, 0);
		}
	}
	closedir(d);
}

static void free_initramfs(int oldroot)
{
	struct statfs sfs;
	struct stat st;

	/* Only ever a RAM file system: the kernel's rootfs is ramfs or tmpfs. */
	if (fstatfs(oldroot, &sfs) < 0 || fstat(oldroot, &st) < 0 ||
	    (sfs.f_type != RAMFS_MAGIC && sfs.f_type != TMPFS_MAGIC)) {
		close(oldroot);
		return;
	}
	delete_contents(oldroot, st.st_dev, 0);
}

/*
 * lg.root=erofs: the image's base on the disk with serial ROOT_SERIAL
 * (read-only) under an overlay whose upper layer is a tmpfs of lg.layer
 * MiB, then the mounts of the initramfs moved into it and the root
 * switched, as switch_root(8) does: chdir, MS_MOVE over "/", chroot.
 * (rootfs, the initramfs, cannot be pivot_root'ed.)  The staging mounts
 * stay under the old root, unreachable by path; the initramfs's files are
 * deleted (free_initramfs).
 *
 * On failure the agent stays on the initramfs root and b->err/b->why say
 * why; HELLO carries them and the host gives up on the sandbox.
 */
static int setup_root(struct boot *b)
{
	size_t moved = 0;
	int oldroot;
	struct stat st;

	if (mount_stage(b) < 0)
		return -b->err;
	for (size_t i = 0; i < ARRAY_SIZE(moved_mounts); i++)
		if (ensure_dir(b, moved_mounts[i], 0755) < 0)
			goto undo;
	/* The image's own /tmp, sticky and writable by all, as on any Debian. */
	if (ensure_dir(b, "/tmp", 01777) < 0)
		goto undo;
	if (lstat(STAGE_ROOT "/tmp", &st) == 0 && (st.st_mode & 07777) != 01777 &&
	    chmod(STAGE_ROOT "/tmp", 01777) < 0) {
		boot_fail(b, errno, "root file system: chmod /tmp: %s", strerror(errno));
		goto undo;
	}
	if (ensure_dir(b, "/root", 0700) < 0)
		goto undo;
	/* /dev takes /dev/pts and /dev/shm with it: a move carries the mounts below. */
	for (; moved < ARRAY_SIZE(moved_mounts); moved++) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), STAGE_ROOT "%s", moved_mounts[moved]);
		if (mount(moved_mounts[moved], path, NULL, MS_MOVE, NULL) < 0) {
			boot_fail(b, errno, "root file system: move %s into it: %s",
				  moved_mounts[moved], strerror(errno));
			goto undo;
		}
	}
	oldroot = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (chdir(STAGE_ROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0) {
		boot_fail(b, errno, "root file system: switch root: %s", strerror(errno));
		if (chdir("/") < 0) {
			/* Nothing more to undo with. */
		}
		if (oldroot >= 0)
			close(oldroot);
		goto undo;
	}
	/* From here there is no way back: "/" is the overlay's for everyone else. */
	if (chroot(".") < 0 || chdir("/") < 0) {
		boot_fail(b, errno, "root file system: chroot: %s", strerror(errno));
		if (oldroot >= 0)
			close(oldroot);
		return -b->err;
	}
	if (oldroot >= 0)
		free_initramfs(oldroot);
	return 0;
undo:
	move_back(moved);
	umount2(STAGE_ROOT, MNT_DETACH);
	umount2(STAGE_LAYER, MNT_DETACH);
	umount2(STAGE_LOWER, MNT_DETACH);
	return -b->err;
}

static void __attribute__((noreturn)) init_main(void)
{
	struct boot boot = {0};
	int fd, r;

	umask(022);
	if (chdir("/") < 0)
		agent_log("chdir /: %s", strerror(errno));
	mount_one(&proc_mount);
	parse_cmdline(&boot);
	mount_basics(boot.rootfs);
	console_fds();
	if (sethostname(HOSTNAME, strlen(HOSTNAME)) < 0)
		agent_log("sethostname: %s", strerror(errno));
	/* Commands get these unless EXEC's ENV overrides them (Debian's PATH). */
	setenv("PATH", DEFAULT_PATH, 1);
	setenv("HOME", "/root", 1);
	if (mkdir("/root", 0700) < 0 && errno != EEXIST)
		agent_log("mkdir /root: %s", strerror(errno));
	load_modules();
	loopback_up();

	/*
	 * The port first: it is opened on devtmpfs and stays open through
	 * the root switch, so even a failed switch can say why in HELLO.
	 */
	fd = open_port(LG_AGENT_PORT_NAME, PORT_WAIT_MS, false);
	if (fd < 0) {
		agent_log("no virtio-serial port named %s after %d ms (%s); powering off",
			  LG_AGENT_PORT_NAME, PORT_WAIT_MS, strerror(-fd));
		power_off();
	}
	if (boot.rootfs && setup_root(&boot) == 0) {
		/* What login(1) would give root; a USER of EXEC sets its own. */
		setenv("USER", "root", 1);
		setenv("LOGNAME", "root", 1);
	}
	r = wait_for_host(fd, HOST_WAIT_MS);
	if (r < 0) {
		agent_log("the host did not open the agent port (%s); powering off", strerror(-r));
		power_off();
	}
	start_netfwd(fd);
	r = agent_serve(fd, boot.err, boot.err != 0 ? boot.why : NULL);
	if (r < 0)
		agent_log("cannot serve the agent port: %s; powering off", strerror(-r));
	power_off();
}

static void usage(FILE *f)
{
	fprintf(f, "usage: lg-agent --fd N    serve the agent protocol on open fd N\n"
		   "       lg-agent --netfwd-fd N --listen-port P\n"
		   "                         run the net port forwarder on open fd N\n"
		   "       lg-agent --version\n"
		   "As PID 1 (the guest's /init) it ignores its arguments.\n");
}

int main(int argc, char **argv)
{
	uint64_t fd;

	/* Kernel command-line words the kernel does not know land in argv: ignore them. */
	if (getpid() == 1)
		init_main();

	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("lg-agent %s (protocol %u)\n", LG_VERSION, LG_PROTO_VERSION);
		return 0;
	}
	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc == 5 && strcmp(argv[1], "--netfwd-fd") == 0 &&
	    strcmp(argv[3], "--listen-port") == 0) {
		uint64_t port;

		if (lg_parse_u64(argv[2], 0, INT_MAX, &fd) < 0 ||
		    lg_parse_u64(argv[4], 1, 65535, &port) < 0) {
			usage(stderr);
			return 2;
		}
		return netfwd_serve((int)fd, (uint16_t)port) < 0 ? 1 : 0;
	}
	if (argc != 3 || strcmp(argv[1], "--fd") != 0 ||
	    lg_parse_u64(argv[2], 0, INT_MAX, &fd) < 0) {
		usage(stderr);
		return 2;
	}
	if (fcntl((int)fd, F_GETFD) < 0) {
		agent_log("--fd %d: %s", (int)fd, strerror(errno));
		return 1;
	}
	/* Every way a session can end (even a host breaking the protocol) is handled: 0. */
	return agent_serve((int)fd, 0, NULL) < 0 ? 1 : 0;
}
