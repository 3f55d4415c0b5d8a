/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lg-agent's entry point.  As PID 1 in the guest (the initramfs's /init) it
 * mounts the basics, loads the modules listed in /etc/lg-modules, finds the
 * agent's virtio-serial port and serves the protocol on it; when the
 * session ends it powers the machine off.  PID 1 must never exit (that
 * panics the kernel), so every fatal path ends in power_off().
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/socket.h>
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
#define STR_(x)		 #x
#define STR(x)		 STR_(x)
#define PROXY_URL	 "http://127.0.0.1:" STR(LG_NET_PROXY_PORT)

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
};

static const struct mount_spec mounts[] = {
    {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666"},
    {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
};

static void mount_basics(void)
{
	static const char *const links[][2] = {
	    {"/proc/self/fd", "/dev/fd"}, /* bash process substitution, /dev/stdin users */
	    {"/proc/self/fd/0", "/dev/stdin"},
	    {"/proc/self/fd/1", "/dev/stdout"},
	    {"/proc/self/fd/2", "/dev/stderr"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(mounts); i++) {
		const struct mount_spec *m = &mounts[i];

		if (mkdir(m->target, 0755) < 0 && errno != EEXIST)
			agent_log("mkdir %s: %s", m->target, strerror(errno));
		/* EBUSY: the kernel mounted it already (CONFIG_DEVTMPFS_MOUNT). */
		if (mount(m->source, m->target, m->fstype, m->flags, m->data) < 0 && errno != EBUSY)
			agent_log("mount %s on %s: %s", m->fstype, m->target, strerror(errno));
	}
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
 * When the sandbox has egress, the host adds the net port: start the
 * forwarder as a child (a crash there costs the network, not PID 1, which
 * reaps it like any orphan) and point every command at it.  Without the
 * port the guest has no way out at all, and the proxy variables are unset.
 */
static void start_netfwd(int agent_fd)
{
	static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTP_PROXY",
						 "HTTPS_PROXY"};
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
	/* EXEC's ENV entries still win: build_env() puts them on top of these. */
	for (size_t i = 0; i < ARRAY_SIZE(proxy_vars); i++)
		setenv(proxy_vars[i], PROXY_URL, 1);
	setenv("no_proxy", "localhost,127.0.0.1", 1);
	setenv("NO_PROXY", "localhost,127.0.0.1", 1);
}

static void __attribute__((noreturn)) init_main(void)
{
	int fd, r;

	umask(022);
	if (chdir("/") < 0)
		agent_log("chdir /: %s", strerror(errno));
	mount_basics();
	console_fds();
	if (sethostname(HOSTNAME, strlen(HOSTNAME)) < 0)
		agent_log("sethostname: %s", strerror(errno));
	/* Commands get these unless EXEC's ENV overrides them. */
	setenv("PATH", DEFAULT_PATH, 1);
	setenv("HOME", "/root", 1);
	if (mkdir("/root", 0700) < 0 && errno != EEXIST)
		agent_log("mkdir /root: %s", strerror(errno));
	load_modules();
	loopback_up();

	fd = open_port(LG_AGENT_PORT_NAME, PORT_WAIT_MS, false);
	if (fd < 0) {
		agent_log("no virtio-serial port named %s after %d ms (%s); powering off",
			  LG_AGENT_PORT_NAME, PORT_WAIT_MS, strerror(-fd));
		power_off();
	}
	r = wait_for_host(fd, HOST_WAIT_MS);
	if (r < 0) {
		agent_log("the host did not open the agent port (%s); powering off", strerror(-r));
		power_off();
	}
	start_netfwd(fd);
	r = agent_serve(fd);
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
	return agent_serve((int)fd) < 0 ? 1 : 0;
}
