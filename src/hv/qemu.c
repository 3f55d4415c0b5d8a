/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The qemu backend: one qemu-system-x86_64 process per VM, machine type
 * microvm (virtio-mmio, no PCI, no firmware, direct PVH kernel boot),
 * controlled over QMP.
 *
 * Every channel to QEMU is one end of a socketpair handed over as an
 * inherited fd (-chardev socket,fd=N), so there is no socket path on the
 * host file system to leak, race for or clean up.
 *
 * QEMU always starts through the jailer (jail/jail.h): its own namespaces,
 * a root holding only its binary, libraries, firmware and this VM's kernel
 * and initramfs, a cgroup, its own uid, no capabilities and a seccomp
 * allowlist, with QEMU's own -sandbox on top.  --no-jail is for debugging.
 */
#include "hv/hv.h"
#include "hv/qmp.h"

#include "common/env.h"
#include "common/log.h"
#include "common/util.h"
#include "jail/jail.h"
#include "proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

/* The fd numbers the channels have inside QEMU. */
enum {
	QEMU_FD_QMP = 3,
	QEMU_FD_CONSOLE = 4,
	QEMU_FD_AGENT = 5,
	QEMU_FD_NET = 6, /* only with cfg->net_fd >= 0 */
};

#define CONSOLE_TAIL   8192
#define QMP_TIMEOUT_MS 10000
/* Saving the device state (about 60 KiB) takes milliseconds; this bounds a stuck one. */
#define MIGRATE_TIMEOUT_MS 30000
#define MIGRATE_POLL_US	   2000
/* What a restore's RAM memfd must be sealed with (vm_config.ram_fd). */
#define RAM_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
/* The getfd name of a snapshot's device state. */
#define STATE_FD_NAME "lgstate"

/* TCG's translation buffer: QEMU's default is 1 GiB (or RAM/8). */
#define TCG_TB_SIZE_MIB 64
/* The VMM's threads: main, RCU, one per vCPU, I/O workers. */
#define VMM_PIDS_BASE 64
/* What QEMU's own -sandbox denies, on top of the jail's allowlist. */
#define QEMU_SANDBOX "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

struct ring {
	char data[CONSOLE_TAIL];
	size_t len;   /* valid bytes, <= CONSOLE_TAIL */
	size_t start; /* index of the oldest byte */
};

struct qemu_vm {
	struct vm vm; /* must be first */
	struct qmp qmp;
	int agent_fd;
	int console_fd; /* our end of the guest serial console */
	int stderr_fd;	/* QEMU's own stderr */
	int copy_fd;	/* where to mirror the console, or -1 */
	int pidfd;
	struct jail *jail;
	bool reaped;
	int wait_status;
	char *exit_why;	     /* why the VMM died, from the jail (seccomp, OOM), or NULL */
	bool exit_why_shown; /* already part of an error message */
	long peak_rss_kib;   /* of the VMM, from wait4() once reaped */
	pthread_t pump;
	bool pump_started;
	pthread_mutex_t lock; /* protects the rings */
	struct ring console;
	struct ring qemu_err;
};

static void ring_put(struct ring *r, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t pos = (r->start + r->len) % CONSOLE_TAIL;
		r->data[pos] = p[i];
		if (r->len < CONSOLE_TAIL)
			r->len++;
		else
			r->start = (r->start + 1) % CONSOLE_TAIL;
	}
}

static char *ring_str(const struct ring *r)
{
	char *s = xmalloc(r->len + 1);
	for (size_t i = 0; i < r->len; i++)
		s[i] = r->data[(r->start + i) % CONSOLE_TAIL];
	s[r->len] = '\0';
	return s;
}

/*
 * Drains the console and QEMU's stderr for the VM's whole life.  Somebody
 * must: a serial port whose host side is not read eventually stalls the
 * guest, and QEMU's error messages are what a user needs when a boot fails.
 */
static void *pump_main(void *arg)
{
	struct qemu_vm *q = arg;
	struct pollfd pfd[2] = {
	    {.fd = q->console_fd, .events = POLLIN},
	    {.fd = q->stderr_fd, .events = POLLIN},
	};
	char buf[4096];

	while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || pfd[i].revents == 0)
				continue;
			ssize_t r = read(pfd[i].fd, buf, sizeof(buf));
			if (r < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (r <= 0) {
				pfd[i].fd = -1; /* EOF: QEMU is gone */
				continue;
			}
			pthread_mutex_lock(&q->lock);
			ring_put(i == 0 ? &q->console : &q->qemu_err, buf, (size_t)r);
			pthread_mutex_unlock(&q->lock);
			if (q->copy_fd >= 0 && lg_write_all(q->copy_fd, buf, (size_t)r) < 0)
				q->copy_fd = -1;
		}
	}
	return NULL;
}

static char *find_qemu(void)
{
	const char *env = lg_env()->qemu;
	cleanup_free char *copy = NULL;
	char *save = NULL;

	if (env != NULL)
		return access(env, X_OK) == 0 ? xstrdup(env) : NULL;
	copy = xstrdup(lg_env()->path);
	for (char *dir = strtok_r(copy, ":", &save); dir != NULL;
	     dir = strtok_r(NULL, ":", &save)) {
		char *cand = xasprintf("%s/qemu-system-x86_64", dir);
		if (access(cand, X_OK) == 0)
			return cand;
		free(cand);
	}
	return NULL;
}

static int qemu_probe(struct lg_err **err)
{
	cleanup_free char *bin = find_qemu();

	/* The variable names a file that is not there: say so, not "not in PATH". */
	if (bin == NULL && lg_env()->qemu != NULL)
		return lg_err_msg(
		    err, ENOENT,
		    "LUMINAGUARD_QEMU names no executable file (%.*s); unset it to use "
		    "qemu-system-x86_64 from PATH",
		    (int)strcspn(lg_env()->qemu, "\n\r\033"), lg_env()->qemu);
	if (bin == NULL)
		return lg_err_msg(err, ENOENT,
				  "qemu-system-x86_64 not found in PATH; install it with: sudo "
				  "apt-get install qemu-system-x86");
	return 0;
}

struct argv_builder {
	char **v;
	size_t n;
};

static void argv_add(struct argv_builder *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void argv_add(struct argv_builder *a, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	a->v = xrealloc(a->v, (a->n + 2) * sizeof(char *));
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

static void argv_free(struct argv_builder *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
}

/*
 * The kernel command line.  Every word saves boot time under TCG, where the
 * guest runs 10-50x slower than native: quiet and loglevel keep the
 * emulated UART (one VM exit per byte) almost idle; tsc=reliable and
 * no_timer_check skip clocksource watchdog work; panic=-1 plus -no-reboot
 * turns a guest panic into a QEMU exit the host notices at once.
 */
static const char base_cmdline[] = "console=ttyS0 quiet loglevel=3 panic=-1 reboot=t "
				   "tsc=reliable no_timer_check i8042.noaux i8042.nokbd "
				   "8250.nr_uarts=1 cryptomgr.notests random.trust_cpu=on";

/*
 * The host's TSC rate in kHz, measured once per process against
 * CLOCK_MONOTONIC_RAW over 10 ms.  Under TCG the guest's RDTSC reads the
 * host's TSC, and the guest kernel's own calibration against the emulated
 * PIT fails when the host is busy (the vCPU thread gets preempted in the
 * middle of the timed loop), after which the kernel hangs without a
 * clocksource.  Handing it the rate with tsc_early_khz= skips calibration.
 * Returns 0 where there is no TSC to measure.
 */
static unsigned long host_tsc_khz(void)
{
#if defined(__x86_64__) || defined(__i386__)
	static unsigned long khz;
	struct timespec a, b, pause = {0, 10 * 1000 * 1000};
	uint64_t t0, t1;
	double ns;

	if (khz != 0)
		return khz;
	clock_gettime(CLOCK_MONOTONIC_RAW, &a);
	t0 = __rdtsc();
	nanosleep(&pause, NULL);
	t1 = __rdtsc();
	clock_gettime(CLOCK_MONOTONIC_RAW, &b);
	ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
	if (ns > 0 && t1 > t0)
		khz = (unsigned long)((double)(t1 - t0) / ns * 1e6);
	return khz;
#else
	return 0;
#endif
}

char *hv_qemu_kernel_cmdline(enum hv_accel accel, const char *extra)
{
	unsigned long tsc_khz = accel == HV_ACCEL_TCG ? host_tsc_khz() : 0;
	char tsc_arg[48] = "";

	if (tsc_khz != 0)
		snprintf(tsc_arg, sizeof(tsc_arg), " tsc_early_khz=%lu", tsc_khz);
	return xasprintf("%s%s%s%s", base_cmdline, tsc_arg, extra ? " " : "", extra ? extra : "");
}

/* A QEMU option value with every ',' doubled (QemuOpts' escape).  New string. */
static char *qemu_opt_escape(const char *v)
{
	char *out = xmalloc(2 * strlen(v) + 1), *o = out;

	for (; *v; v++) {
		*o++ = *v;
		if (*v == ',')
			*o++ = ',';
	}
	*o = '\0';
	return out;
}

static void build_argv(struct argv_builder *a, const char *bin, const struct vm_config *cfg,
		       const struct jail_opts *jo, int ram_fd_no)
{
	cleanup_free char *extra = NULL;
	cleanup_free char *cmdline = NULL;

	/* lg-agent reads these to mount the root disk and size the layer (guest/init.c). */
	if (cfg->rootfs != NULL)
		extra =
		    xasprintf("lg.root=erofs lg.layer=%llu%s%s", (unsigned long long)cfg->layer_mib,
			      cfg->cmdline ? " " : "", cfg->cmdline ? cfg->cmdline : "");
	cmdline = hv_qemu_kernel_cmdline(cfg->accel, extra != NULL ? extra : cfg->cmdline);
	argv_add(a, "%s", bin);
	argv_add(a, "-M");
	/*
	 * pit and pic: the Debian kernel calibrates the TSC against the PIT and
	 * hangs without it under TCG.  No PCI, no firmware: microvm.
	 */
	argv_add(a, "microvm,pit=on,pic=on,rtc=on,isa-serial=on%s",
		 cfg->ram_file != NULL || cfg->incoming ? ",memory-backend=lgmem" : "");
	argv_add(a, "-accel");
	if (cfg->accel == HV_ACCEL_TCG)
		argv_add(a, "tcg,tb-size=%u", TCG_TB_SIZE_MIB);
	else
		argv_add(a, "%s", hv_accel_name(cfg->accel));
	argv_add(a, "-cpu");
	argv_add(a, "%s", cfg->accel == HV_ACCEL_KVM ? "host" : "max");
	argv_add(a, "-smp");
	argv_add(a, "%u", cfg->cpus);
	argv_add(a, "-m");
	argv_add(a, "%llu", (unsigned long long)hv_guest_ram_mib(cfg));
	if (cfg->ram_file != NULL) {
		/*
		 * Snapshots (docs/snapshots.md): guest RAM in a file.  share=on
		 * writes it (the VM a snapshot is taken of; with x-ignore-shared
		 * the migration stream then holds only the device state);
		 * share=off maps it privately, copy-on-write, for a restore.
		 * Option values double their commas.
		 */
		cleanup_free char *esc = qemu_opt_escape(cfg->ram_file);
		argv_add(a, "-object");
		argv_add(a, "memory-backend-file,id=lgmem,size=%lluM,mem-path=%s,share=%s",
			 (unsigned long long)hv_guest_ram_mib(cfg), esc,
			 cfg->ram_shared ? "on" : "off");
	} else if (cfg->incoming) {
		/*
		 * A restore: the snapshot's RAM is a sealed memfd, passed as
		 * fd ram_fd_no and opened by QEMU 7.2 (O_RDWR, whatever share
		 * says) through the jail's /dev/fd (jail_spec.dev_fd).  The
		 * seals make every write through it fail; share=off maps it
		 * privately, copy-on-write, which the seals allow.
		 */
		argv_add(a, "-object");
		argv_add(a, "memory-backend-file,id=lgmem,size=%lluM,mem-path=/dev/fd/%d,share=off",
			 (unsigned long long)hv_guest_ram_mib(cfg), ram_fd_no);
	}
	if (cfg->incoming) {
		argv_add(a, "-incoming");
		argv_add(a, "defer");
	}
	argv_add(a, "-nodefaults");
	argv_add(a, "-no-user-config");
	argv_add(a, "-nographic");
	argv_add(a, "-no-reboot");
	if (jo->seccomp != LG_SECCOMP_OFF) {
		/* QEMU's own filter, stacked on the jail's: no exec, no setuid, no
		 * scheduler or affinity games, no obsolete syscalls. */
		argv_add(a, "-sandbox");
		argv_add(a, QEMU_SANDBOX);
	}
	argv_add(a, "-kernel");
	argv_add(a, "%s", cfg->kernel);
	argv_add(a, "-initrd");
	argv_add(a, "%s", cfg->initrd);
	argv_add(a, "-append");
	argv_add(a, "%s", cmdline);
	argv_add(a, "-chardev");
	argv_add(a, "socket,id=qmp,fd=%d", QEMU_FD_QMP);
	argv_add(a, "-mon");
	argv_add(a, "chardev=qmp,mode=control");
	argv_add(a, "-chardev");
	argv_add(a, "socket,id=con,fd=%d", QEMU_FD_CONSOLE);
	argv_add(a, "-serial");
	argv_add(a, "chardev:con");
	argv_add(a, "-device");
	argv_add(a, "virtio-serial-device,max_ports=3");
	argv_add(a, "-chardev");
	argv_add(a, "socket,id=agent,fd=%d", QEMU_FD_AGENT);
	argv_add(a, "-device");
	argv_add(a, "virtserialport,chardev=agent,name=%s", LG_AGENT_PORT_NAME);
	if (cfg->net_fd >= 0) {
		/* The guest's only way out: its proxy streams (net/netmux.h). */
		argv_add(a, "-chardev");
		argv_add(a, "socket,id=net,fd=%d", QEMU_FD_NET);
		argv_add(a, "-device");
		argv_add(a, "virtserialport,chardev=net,name=%s", LG_NET_PORT_NAME);
	}
	if (cfg->rootfs != NULL) {
		/*
		 * The base image, shared by every VM of the image: readonly=on
		 * opens the file O_RDONLY and makes virtio-blk report a read-only
		 * disk, so neither this QEMU nor its guest can change what the
		 * next sandbox boots.  It is the only disk: the writable layer
		 * is guest RAM, so a snapshot holds it and nothing needs hotplug
		 * (docs/images.md).
		 */
		argv_add(a, "-drive");
		argv_add(a, "file=%s,if=none,id=lgroot,format=raw,readonly=on", cfg->rootfs);
		argv_add(a, "-device");
		argv_add(a, "virtio-blk-device,drive=lgroot,serial=%s", HV_ROOT_DISK_SERIAL);
	}
}

/*
 * Firmware QEMU loads even for a direct kernel boot (the PVH option ROM,
 * microvm's qboot).  QEMU looks them up next to its binary
 * (<bindir>/../share/qemu, from realpath(argv[0]) when /proc is absent, as
 * in the jail), so they are mounted at that path.
 */
static const char *const qemu_firmware[] = {"pvh.bin", "bios-microvm.bin"};

/* <bindir>/../rel, if it is there and readable; else NULL.  New string. */
static char *beside_bin(const char *bin, const char *rel)
{
	cleanup_free char *dir = xstrdup(bin);
	char *p;

	*strrchr(dir, '/') = '\0';
	p = xasprintf("%s/../%s", dir, rel);
	if (access(p, R_OK) == 0)
		return p;
	free(p);
	return NULL;
}

static char **firmware_files(const char *bin)
{
	char **v = xzalloc((ARRAY_SIZE(qemu_firmware) + 1) * sizeof(char *));
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(qemu_firmware); i++) {
		cleanup_free char *rel = xasprintf("share/qemu/%s", qemu_firmware[i]);
		char *p = beside_bin(bin, rel);
		if (p != NULL)
			v[n++] = p;
	}
	return v;
}

/*
 * Debian builds TCG as a module QEMU dlopen()s from <bindir>/../lib/<...>/qemu
 * (CONFIG_QEMU_MODDIR, relocated like the firmware).  Where it is not a
 * module there is nothing to mount.
 */
static const char *const qemu_moddirs[] = {"lib/x86_64-linux-gnu/qemu", "lib64/qemu", "lib/qemu"};

static char *tcg_module(const char *bin)
{
	for (size_t i = 0; i < ARRAY_SIZE(qemu_moddirs); i++) {
		cleanup_free char *rel = xasprintf("%s/accel-tcg-x86_64.so", qemu_moddirs[i]);
		char *p = beside_bin(bin, rel);
		if (p != NULL)
			return p;
	}
	return NULL;
}

static void warn_no_jail(void)
{
	static atomic_bool warned;

	if (!atomic_exchange(&warned, true))
		lg_warn("--no-jail: QEMU runs without the jailer (no namespaces, cgroup, uid "
			"switch or private root); for debugging only");
}

static void qemu_teardown(struct qemu_vm *q);

static int qemu_spawn(const struct vm_config *cfg, struct vm **out, struct lg_err **err)
{
	static const struct jail_opts default_jail = {0};
	const struct jail_opts *jo = cfg->jail != NULL ? cfg->jail : &default_jail;
	cleanup_free char *found = find_qemu();
	cleanup_free char *bin = NULL;
	char **firmware = NULL;
	cleanup_free char *tcg_mod = NULL;
	struct argv_builder args = {0};
	int pairs[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
	int errpipe[2] = {-1, -1};
	struct qemu_vm *q;
	int ram_fd_no, ret;

	if (found == NULL)
		return qemu_probe(err);
	ret = hv_config_check(cfg, err);
	if (ret < 0)
		return ret;
	/*
	 * A restore's RAM is a sealed memfd, never a file: a file would have
	 * to be bound writable (QEMU 7.2 opens it O_RDWR), and the VMM could
	 * then change what every other restore maps.
	 */
	if (cfg->incoming) {
		int seals = cfg->ram_fd >= 0 ? fcntl(cfg->ram_fd, F_GET_SEALS) : -1;

		if (cfg->ram_file != NULL || cfg->ram_shared || seals < 0 ||
		    (seals & RAM_SEALS) != RAM_SEALS)
			return lg_err_msg(err, EINVAL,
					  "a restored VM's RAM must be a memfd sealed against "
					  "writes (host/snapshot.c makes one), not a file");
	}
	/*
	 * The real path: the jail mounts the binary there and QEMU finds its
	 * firmware relative to it, so no symlink may stand in between.
	 */
	bin = realpath(found, NULL);
	if (bin == NULL)
		return lg_err_sys(err, "%s", found);
	if (jo->disabled)
		warn_no_jail();

	q = xzalloc(sizeof(*q));
	q->vm.backend = &hv_backend_qemu;
	q->vm.pid = -1;
	q->agent_fd = q->console_fd = q->stderr_fd = q->pidfd = -1;
	q->qmp.fd = -1;
	q->copy_fd = cfg->console_fd;
	pthread_mutex_init(&q->lock, NULL);

	for (int i = 0; i < 3; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[i]) < 0) {
			ret = lg_err_sys(err, "socketpair");
			goto fail;
		}
	}
	if (pipe2(errpipe, O_CLOEXEC) < 0) {
		ret = lg_err_sys(err, "pipe");
		goto fail;
	}

	/* The RAM's memfd goes after the three socketpairs and the net port. */
	ram_fd_no = 3 + 3 + (cfg->net_fd >= 0 ? 1 : 0);
	build_argv(&args, bin, cfg, jo, ram_fd_no);
	if (lg_log_get_level() >= LG_LOG_DEBUG) {
		for (size_t i = 0; i < args.n; i++)
			lg_debug("qemu argv[%zu] = %s", i, args.v[i]);
	}

	firmware = firmware_files(bin);
	tcg_mod = cfg->accel == HV_ACCEL_TCG ? tcg_module(bin) : NULL;
	{
		const char *modules[] = {tcg_mod, NULL};
		/*
		 * Only the VM a snapshot is made of has a RAM file, bound
		 * writable (share=on writes it): our own freshly booted VM,
		 * before anything but its agent ran.  A restore's RAM comes as
		 * a sealed memfd instead (see build_argv).
		 */
		const char *rw_files[] = {cfg->ram_file, NULL};
		/* The root disk, when there is one, is mounted read-only like the kernel. */
		const char *files[3 + ARRAY_SIZE(qemu_firmware) + 1] = {cfg->kernel, cfg->initrd};
		int pass[5] = {pairs[0][1], pairs[1][1], pairs[2][1]};
		size_t nf = 2, np = 3;

		if (cfg->net_fd >= 0)
			pass[np++] = cfg->net_fd;
		if (cfg->incoming)
			pass[np++] = cfg->ram_fd;

		if (cfg->rootfs != NULL)
			files[nf++] = cfg->rootfs;
		for (size_t i = 0; firmware[i] != NULL; i++)
			files[nf++] = firmware[i];
		files[nf] = NULL;
		struct jail_spec spec = {
		    .vmm_kind = "qemu",
		    .binary = bin,
		    .argv = args.v,
		    .files = files,
		    .rw_files = cfg->ram_file != NULL ? rw_files : NULL,
		    .modules = modules,
		    .dev_kvm = cfg->accel == HV_ACCEL_KVM,
		    .dev_fd = cfg->incoming,
		    .pass_fds = pass,
		    .n_pass_fds = np,
		    .stderr_fd = errpipe[1],
		    .memory_bytes = (hv_guest_ram_mib(cfg) + HV_VMM_OVERHEAD_MIB) << 20,
		    .pids_max = VMM_PIDS_BASE + cfg->cpus,
		    .cpus = cfg->cpus + 1,
		    .fsize_bytes = 16u << 20,
		    .opts = jo,
		};
		ret = jail_spawn(&spec, &q->jail, err);
	}
	for (size_t i = 0; firmware[i] != NULL; i++)
		free(firmware[i]);
	free(firmware);
	if (ret < 0) {
		lg_err_wrap(err, "cannot start %s", bin);
		goto fail;
	}
	q->vm.pid = jail_pid(q->jail);
	argv_free(&args);
	args = (struct argv_builder){0};
	for (int i = 0; i < 3; i++) {
		close(pairs[i][1]);
		pairs[i][1] = -1;
	}
	close(errpipe[1]);
	errpipe[1] = -1;

	q->pidfd = (int)syscall(SYS_pidfd_open, q->vm.pid, 0);
	q->console_fd = pairs[1][0];
	q->agent_fd = pairs[2][0];
	q->stderr_fd = errpipe[0];
	pairs[1][0] = pairs[2][0] = errpipe[0] = -1;
	if (pthread_create(&q->pump, NULL, pump_main, q) != 0) {
		ret = lg_err_set(err, EAGAIN, "cannot start the console thread");
		goto fail_started;
	}
	q->pump_started = true;

	ret = qmp_open(&q->qmp, pairs[0][0], QMP_TIMEOUT_MS, err);
	pairs[0][0] = -1; /* qmp_open owns it now, even on failure */
	if (ret < 0)
		goto fail_started;

	*out = &q->vm;
	return 0;

fail_started:
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 2; j++)
			if (pairs[i][j] >= 0)
				close(pairs[i][j]);
	if (errpipe[0] >= 0)
		close(errpipe[0]);
	/* Tear down first: then the pump has read all QEMU said before dying. */
	q->exit_why_shown = true; /* in the error below, not as a warning */
	qemu_teardown(q);
	if (q->exit_why != NULL) {
		/* The jail knows better than QEMU's last words (it had none). */
		lg_err_wrap(err, "QEMU failed to start (%s)", q->exit_why);
	} else {
		cleanup_free char *why = ring_str(&q->qemu_err);
		char *nl;

		while ((nl = strrchr(why, '\n')) != NULL && nl[1] == '\0')
			*nl = '\0';
		nl = strrchr(why, '\n');
		if (*why != '\0')
			lg_err_wrap(err, "QEMU failed to start (%s)", nl ? nl + 1 : why);
		else
			lg_err_wrap(err, "QEMU failed to start");
	}
	free(q->exit_why);
	pthread_mutex_destroy(&q->lock);
	free(q);
	return ret;

fail:
	argv_free(&args);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 2; j++)
			if (pairs[i][j] >= 0)
				close(pairs[i][j]);
	for (int j = 0; j < 2; j++)
		if (errpipe[j] >= 0)
			close(errpipe[j]);
	pthread_mutex_destroy(&q->lock);
	free(q);
	return ret;
}

static int qemu_agent_fd(struct vm *vm)
{
	return ((struct qemu_vm *)vm)->agent_fd;
}

static bool reap(struct qemu_vm *q, bool block)
{
	struct rusage ru = {0};
	int st;
	pid_t r;

	if (q->reaped)
		return true;
	do
		r = wait4(q->vm.pid, &st, block ? 0 : WNOHANG, &ru);
	while (r < 0 && errno == EINTR);
	if (r == q->vm.pid || (r < 0 && errno == ECHILD)) {
		q->reaped = true;
		q->wait_status = r == q->vm.pid ? st : 0;
		q->peak_rss_kib = ru.ru_maxrss;
		lg_debug("vmm pid %d ended (status 0x%x), peak rss %ld KiB", (int)q->vm.pid,
			 q->wait_status, q->peak_rss_kib);
		if (r == q->vm.pid && q->jail != NULL) {
			char *why = jail_explain_exit(q->jail, st);
			pthread_mutex_lock(&q->lock);
			q->exit_why = why;
			pthread_mutex_unlock(&q->lock);
		}
	}
	return q->reaped;
}

static enum vm_status qemu_status(struct vm *vm)
{
	struct qemu_vm *q = (struct qemu_vm *)vm;
	json_t *ret = NULL;
	enum vm_status s = VM_STATUS_FAILED;

	if (reap(q, false))
		return WIFEXITED(q->wait_status) && WEXITSTATUS(q->wait_status) == 0
			   ? VM_STATUS_STOPPED
			   : VM_STATUS_FAILED;
	if (qmp_execute(&q->qmp, "query-status", NULL, &ret, QMP_TIMEOUT_MS, NULL) < 0)
		return VM_STATUS_FAILED;
	const char *st = json_string_value(json_object_get(ret, "status"));
	if (st != NULL && strcmp(st, "running") == 0)
		s = VM_STATUS_RUNNING;
	else if (st != NULL && (strcmp(st, "prelaunch") == 0 || strcmp(st, "inmigrate") == 0))
		s = VM_STATUS_STARTING;
	else if (st != NULL && strcmp(st, "shutdown") == 0)
		s = VM_STATUS_STOPPED;
	json_decref(ret);
	return s;
}

static int qemu_wait(struct vm *vm, int timeout_ms)
{
	struct qemu_vm *q = (struct qemu_vm *)vm;
	uint64_t deadline = lg_now_ms() + (uint64_t)timeout_ms;

	while (!reap(q, false)) {
		uint64_t now = lg_now_ms();
		if (now >= deadline)
			return 0;
		if (q->pidfd >= 0) {
			struct pollfd pfd = {.fd = q->pidfd, .events = POLLIN};
			poll(&pfd, 1, (int)(deadline - now));
		} else {
			usleep(5000);
		}
	}
	return 1;
}

/*
 * Signals QEMU through its pidfd: a pid can be reaped (by qemu_wait on
 * another thread) and reused by an unrelated process, a pidfd cannot.
 * Without pidfds (Linux before 5.3) the pid is used while not reaped.
 */
static int signal_vmm(struct qemu_vm *q, int sig)
{
	if (q->pidfd >= 0)
		return syscall(SYS_pidfd_send_signal, q->pidfd, sig, NULL, 0) < 0 ? -errno : 0;
	if (q->reaped || q->vm.pid <= 0)
		return -ESRCH;
	return kill(q->vm.pid, sig) < 0 ? -errno : 0;
}

static int qemu_kill(struct vm *vm)
{
	return signal_vmm((struct qemu_vm *)vm, SIGKILL);
}

static int qemu_exit_fd(struct vm *vm)
{
	return ((struct qemu_vm *)vm)->pidfd;
}

/* Ends QEMU and releases every host resource of the VM except q itself. */
static void qemu_teardown(struct qemu_vm *q)
{
	if (q->vm.pid > 0 && !reap(q, false)) {
		/* Ask first: QEMU then exits at once without a guest reply. */
		if (q->qmp.fd >= 0)
			qmp_execute(&q->qmp, "quit", NULL, NULL, 1000, NULL);
		if (!qemu_wait(&q->vm, 2000)) {
			signal_vmm(q, SIGKILL);
			reap(q, true);
		}
	}
	qmp_close(&q->qmp);
	if (q->agent_fd >= 0)
		close(q->agent_fd);
	q->agent_fd = -1;
	/* QEMU is reaped, so its ends are closed and the pump sees EOF on both. */
	if (q->pump_started)
		pthread_join(q->pump, NULL);
	q->pump_started = false;
	if (q->console_fd >= 0)
		close(q->console_fd);
	if (q->stderr_fd >= 0)
		close(q->stderr_fd);
	if (q->pidfd >= 0)
		close(q->pidfd);
	q->console_fd = q->stderr_fd = q->pidfd = -1;
	/* Reaped: now the jail can go (cgroup, uid). */
	jail_release(q->jail);
	q->jail = NULL;
	if (q->exit_why != NULL && !q->exit_why_shown) {
		lg_warn("%s", q->exit_why);
		q->exit_why_shown = true;
	}
}

static void qemu_destroy(struct vm *vm)
{
	struct qemu_vm *q = (struct qemu_vm *)vm;

	if (vm == NULL)
		return;
	qemu_teardown(q);
	free(q->exit_why);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

static char *qemu_console_tail(struct vm *vm)
{
	struct qemu_vm *q = (struct qemu_vm *)vm;
	char *con, *qerr, *s;

	/*
	 * Asked for because something went wrong.  If the VMM is dying (its
	 * sockets close a moment before it can be reaped), wait for it: the
	 * jail's explanation (seccomp, OOM) is the most useful last line.
	 */
	if (!q->reaped && q->vm.pid > 0 && kill(q->vm.pid, 0) == 0)
		qemu_wait(vm, 300);
	pthread_mutex_lock(&q->lock);
	con = ring_str(&q->console);
	qerr = ring_str(&q->qemu_err);
	if (q->exit_why != NULL) {
		char *both =
		    xasprintf("%s%s[luminaguard] %s", qerr, *qerr ? "\n" : "", q->exit_why);
		free(qerr);
		qerr = both;
		q->exit_why_shown = true;
	}
	pthread_mutex_unlock(&q->lock);
	s = xasprintf("%s%s%s", con, *qerr ? "\n[qemu] " : "", qerr);
	free(con);
	free(qerr);
	return s;
}

/* Polls query-migrate until the outgoing migration completed. */
static int wait_migration(struct qemu_vm *q, struct lg_err **err)
{
	uint64_t deadline = lg_now_ms() + MIGRATE_TIMEOUT_MS;

	for (;;) {
		json_t *ret = NULL;
		int r = qmp_execute(&q->qmp, "query-migrate", NULL, &ret, QMP_TIMEOUT_MS, err);
		const char *st;

		if (r < 0)
			return r;
		st = json_string_value(json_object_get(ret, "status"));
		if (st != NULL && strcmp(st, "completed") == 0) {
			json_decref(ret);
			return 0;
		}
		if (st == NULL || strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0) {
			const char *why = json_string_value(json_object_get(ret, "error-desc"));
			r = lg_err_set(err, EIO, "saving the VM state failed (QEMU: %s)",
				       why != NULL ? why : (st != NULL ? st : "no status"));
			json_decref(ret);
			return r;
		}
		json_decref(ret);
		if (lg_now_ms() >= deadline)
			return lg_err_set(err, ETIMEDOUT,
					  "saving the VM state did not finish in %d s",
					  MIGRATE_TIMEOUT_MS / 1000);
		usleep(MIGRATE_POLL_US);
	}
}

static json_t *ignore_shared_caps(void)
{
	return json_pack("{s:[{s:s,s:b}]}", "capabilities", "capability", "x-ignore-shared",
			 "state", 1);
}

/* getfd: QEMU gets its own copy of fd under STATE_FD_NAME. */
static int pass_state_fd(struct qemu_vm *q, int fd, struct lg_err **err)
{
	json_t *args = json_pack("{s:s}", "fdname", STATE_FD_NAME);
	int r = qmp_execute_fd(&q->qmp, "getfd", args, fd, NULL, QMP_TIMEOUT_MS, err);

	json_decref(args);
	return r;
}

static int qemu_save_state(struct vm *vm, int state_fd, struct lg_err **err)
{
	struct qemu_vm *q = (struct qemu_vm *)vm;
	json_t *args = ignore_shared_caps();
	int r;

	/*
	 * x-ignore-shared: RAM in a shared file is not sent, only the device
	 * state (the RAM file is the rest of the snapshot).  fd: migration and
	 * not exec:, which QEMU's -sandbox spawn=deny forbids.
	 */
	r = qmp_execute(&q->qmp, "migrate-set-capabilities", args, NULL, QMP_TIMEOUT_MS, err);
	json_decref(args);
	if (r == 0)
		r = qmp_execute(&q->qmp, "stop", NULL, NULL, QMP_TIMEOUT_MS, err);
	if (r == 0)
		r = pass_state_fd(q, state_fd, err);
	if (r == 0) {
		args = json_pack("{s:s}", "uri", "fd:" STATE_FD_NAME);
		r = qmp_execute(&q->qmp, "migrate", args, NULL, QMP_TIMEOUT_MS, err);
		json_decref(args);
	}
	if (r == 0)
		r = wait_migration(q, err);
	return r < 0 ? lg_err_wrap(err, "snapshot") : 0;
}

static int qemu_load_state(struct vm *vm, int state_fd, int timeout_ms, struct lg_err **err)
{
	struct qemu_vm *q = (struct qemu_vm *)vm;
	uint64_t deadline = lg_now_ms() + (uint64_t)timeout_ms;
	json_t *args = ignore_shared_caps();
	int r;

	r = qmp_execute(&q->qmp, "migrate-set-capabilities", args, NULL, QMP_TIMEOUT_MS, err);
	json_decref(args);
	if (r == 0)
		r = pass_state_fd(q, state_fd, err);
	if (r == 0) {
		args = json_pack("{s:s}", "uri", "fd:" STATE_FD_NAME);
		r = qmp_execute(&q->qmp, "migrate-incoming", args, NULL, QMP_TIMEOUT_MS, err);
		json_decref(args);
	}
	/*
	 * The state loads in the background; a stream QEMU cannot load makes
	 * it exit (the QMP read then fails).  The saved VM was stopped, so a
	 * loaded one is "paused" and needs cont.
	 */
	while (r == 0) {
		json_t *ret = NULL;
		const char *st;

		r = qmp_execute(&q->qmp, "query-status", NULL, &ret, QMP_TIMEOUT_MS, err);
		if (r < 0)
			break;
		st = json_string_value(json_object_get(ret, "status"));
		if (st != NULL && strcmp(st, "inmigrate") != 0) {
			bool ok = strcmp(st, "paused") == 0 || strcmp(st, "running") == 0;
			if (!ok)
				r = lg_err_set(err, EIO, "the restored VM is '%s', not paused", st);
			else if (strcmp(st, "paused") == 0)
				r = qmp_execute(&q->qmp, "cont", NULL, NULL, QMP_TIMEOUT_MS, err);
			json_decref(ret);
			break;
		}
		json_decref(ret);
		if (lg_now_ms() >= deadline) {
			r = lg_err_set(err, ETIMEDOUT,
				       "loading the VM state did not finish in %d ms", timeout_ms);
			break;
		}
		usleep(MIGRATE_POLL_US);
	}
	if (r < 0) {
		cleanup_free char *tail = NULL;
		char *nl;

		/* QEMU's own last words say why a stream did not load. */
		if (!q->reaped)
			qemu_wait(vm, 300);
		pthread_mutex_lock(&q->lock);
		if (q->exit_why != NULL) {
			/* The jail knows best why it died (seccomp, OOM). */
			tail = xstrdup(q->exit_why);
			q->exit_why_shown = true;
		} else {
			tail = ring_str(&q->qemu_err);
		}
		pthread_mutex_unlock(&q->lock);
		while ((nl = strrchr(tail, '\n')) != NULL && nl[1] == '\0')
			*nl = '\0';
		nl = strrchr(tail, '\n');
		if (*tail != '\0')
			lg_err_wrap(err, "restore (QEMU: %s)", nl != NULL ? nl + 1 : tail);
		else
			lg_err_wrap(err, "restore");
	}
	return r;
}

static void identity_of(FILE *f, const char *what, const char *path)
{
	struct stat st;

	if (path != NULL && stat(path, &st) == 0)
		fprintf(f, "%s=%s:%llu:%lld.%09ld:%llu\n", what, path,
			(unsigned long long)st.st_size, (long long)st.st_mtim.tv_sec,
			st.st_mtim.tv_nsec, (unsigned long long)st.st_ino);
	else
		fprintf(f, "%s=-\n", what);
}

static char *qemu_identity(const struct vm_config *cfg, struct lg_err **err)
{
	cleanup_free char *found = find_qemu();
	cleanup_free char *bin = NULL;
	cleanup_free char *tcg = NULL;
	char *out = NULL;
	size_t n = 0;
	FILE *f;

	if (found == NULL) {
		qemu_probe(err);
		return NULL;
	}
	bin = realpath(found, NULL);
	if (bin == NULL) {
		lg_err_sys(err, "%s", found);
		return NULL;
	}
	tcg = cfg->accel == HV_ACCEL_TCG ? tcg_module(bin) : NULL;
	f = open_memstream(&out, &n);
	if (f == NULL)
		abort();
	identity_of(f, "qemu", bin);
	identity_of(f, "tcg", tcg);
	/* The machine and devices come from this file's argv: bump on any change there. */
	fprintf(f, "argv=2 tb=%u\n", TCG_TB_SIZE_MIB);
	fclose(f);
	return out;
}

const struct hv_backend hv_backend_qemu = {
    .name = "qemu",
    .description = "qemu-system-x86_64 -M microvm over QMP (KVM or TCG)",
    .probe = qemu_probe,
    .spawn = qemu_spawn,
    .agent_fd = qemu_agent_fd,
    .status = qemu_status,
    .wait = qemu_wait,
    .destroy = qemu_destroy,
    .console_tail = qemu_console_tail,
    .kill = qemu_kill,
    .exit_fd = qemu_exit_fd,
    .save_state = qemu_save_state,
    .load_state = qemu_load_state,
    .identity = qemu_identity,
};
