/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The syscall allowlist of QEMU (qemu-system-x86_64), reviewed.
 *
 * Where it comes from (docs/seccomp.md has the details and the commands):
 *  - TRACED: strace -f of QEMU 7.2 (Debian 12, glibc 2.36, TCG) under
 *    `luminaguard run` for: a plain command, stdin piped in, --cpus 2,
 *    --timeout firing, 30 MB of guest output, Ctrl-C teardown, guest
 *    poweroff, QMP quit (every normal exit), --net allow= (the net port),
 *    and all of these again with QEMU's own `-sandbox on,...`.  The union
 *    of those traces is the core of this list.
 *  - REASONED: paths the traces cannot reach here: KVM (this host's
 *    /dev/kvm cannot run Linux guests), signals that did not arrive during
 *    the traces, vDSO fallbacks, abort().  Each says which QEMU or libc
 *    code makes the call.
 *
 * Everything not listed kills QEMU (strict).  The filter is installed
 * before execve, so it covers the dynamic loader and libc start-up too.
 * execve itself is added by lg_seccomp_compile() for the jail's own exec;
 * QEMU's `-sandbox ...,spawn=deny` (which the jail puts on QEMU's command
 * line) forbids it again from QEMU's own filter on, before any guest code
 * runs.
 *
 * Deliberately absent (a compromised QEMU would want them): socket,
 * connect, bind and all other socket creation (QEMU only uses the sockets
 * it inherits), ptrace, process_vm_*, fork/vfork and clone without
 * CLONE_THREAD, execveat, mount and the other namespace/filesystem
 * administration calls, bpf, perf_event_open, userfaultfd, keyctl and
 * add_key, kexec_*, init_module/finit_module, reboot, setuid and friends,
 * chroot, pivot_root, unshare, setns, open_by_handle_at, name_to_handle_at,
 * kill (only tgkill on itself is needed), the 32-bit and x32 ABIs.
 */
#include "jail/seccomp.h"

#include "common/util.h"

#include <errno.h>
#include <linux/kvm.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif

/* clang-format off */
#define ALLOW(n)             {.name = (n), .arg = -1}
#define ALLOW_IF(n, a, m, v) {.name = (n), .arg = (a), .mask = (m), .value = (v)}
#define ALLOW_IF_EQ(n, a, v) ALLOW_IF(n, a, ~0ULL, v)
#define FAIL(n, e)           {.name = (n), .err = (e), .arg = -1}
/* clang-format on */

static const struct lg_sc_rule qemu_rules[] = {
    /*
     * Dynamic loader and libc start-up (TRACED: the first calls of every
     * run).  statfs: libselinux probing /sys/fs/selinux.  readlink:
     * /proc/self/exe, QEMU finding its data directory.  getrandom: glibc's
     * malloc and stack protector, glib's hash seeds.
     */
    ALLOW("brk"),
    ALLOW("arch_prctl"),
    ALLOW("set_tid_address"),
    ALLOW("set_robust_list"),
    ALLOW("rseq"),
    ALLOW("prlimit64"),
    ALLOW("getrandom"),
    ALLOW("access"),
    ALLOW("openat"),
    ALLOW("newfstatat"),
    ALLOW("statfs"),
    ALLOW("readlink"),
    ALLOW("read"),
    ALLOW("pread64"),
    ALLOW("lseek"),
    ALLOW("close"),
    /*
     * Start-up probing of the host (TRACED): libnuma (via libpmem/libndctl)
     * scans /sys/devices/system/node and /sys/bus/nd with getdents64 and
     * fchdir, reads the policy with get_mempolicy and sets it back with
     * set_mempolicy; glib counts CPUs (sched_getaffinity) and QEMU sizes
     * its TCG buffer from sysinfo.
     */
    ALLOW("getdents64"),
    ALLOW("fchdir"),
    ALLOW("get_mempolicy"),
    ALLOW("set_mempolicy"),
    ALLOW("sched_getaffinity"),
    ALLOW("sysinfo"),
    /*
     * Memory (TRACED): guest RAM, the TCG code buffer (which needs
     * PROT_EXEC, so mmap/mprotect cannot be restricted by protection),
     * malloc.  memfd_create: qemu_memfd_check() probing at start-up.
     * mremap (REASONED): glibc realloc() of mmap'd blocks, which QEMU's
     * growing buffers hit with large enough outputs.
     */
    ALLOW("mmap"),
    ALLOW("mprotect"),
    ALLOW("munmap"),
    ALLOW("madvise"),
    ALLOW("memfd_create"),
    ALLOW("mremap"),
    /*
     * Threads (TRACED): vCPU, I/O and RCU threads.
     * clone only with CLONE_THREAD: QEMU makes threads, never processes,
     * and a new process is the first step of running anything else (a
     * shell, a network tool) -- even under the same filter.
     * clone3 fails with ENOSYS: its flags are in memory, where BPF cannot
     * look, so it cannot be restricted; glibc then falls back to clone,
     * which we can inspect (TRACED with -sandbox, whose filter does the
     * same).
     */
    ALLOW_IF("clone", 0, CLONE_THREAD, CLONE_THREAD),
    FAIL("clone3", ENOSYS),
    ALLOW("futex"),
    ALLOW("gettid"),
    ALLOW("exit"),
    ALLOW("exit_group"),
    /*
     * prctl, only the options used.  PR_MCE_KILL: os_setup_early_signal_
     * handling() (TRACED).  PR_SET_TIMERSLACK: the main loop (TRACED).
     * PR_SET_NO_NEW_PRIVS: before QEMU installs its -sandbox filter
     * (TRACED).  PR_SET_NAME: qemu_thread_create() names threads with
     * -name debug-threads=on (REASONED).  PR_SET_VMA: newer glibc (2.39+)
     * names malloc's anonymous mappings (REASONED, for hosts newer than the
     * traced one).
     */
    ALLOW_IF_EQ("prctl", 0, PR_MCE_KILL),
    ALLOW_IF_EQ("prctl", 0, PR_SET_TIMERSLACK),
    ALLOW_IF_EQ("prctl", 0, PR_SET_NO_NEW_PRIVS),
    ALLOW_IF_EQ("prctl", 0, PR_SET_NAME),
    ALLOW_IF_EQ("prctl", 0, PR_SET_VMA),
    /*
     * QEMU's own -sandbox filter (TRACED with -sandbox on): libseccomp
     * probes the kernel's seccomp features and loads the filter.  Not
     * restricted by operation: every operation can only add restrictions
     * to QEMU itself.
     */
    ALLOW("seccomp"),
    /*
     * The main loop (TRACED): ppoll/poll over the chardev sockets,
     * eventfds for wake-ups, a signalfd for SIGBUS/SIGALRM/SIGIO, sleeps.
     * epoll (REASONED): aio-posix's fdmon switches from poll to epoll above
     * 64 handlers.
     */
    ALLOW("ppoll"),
    ALLOW("poll"),
    ALLOW("eventfd2"),
    ALLOW("signalfd4"),
    ALLOW("clock_nanosleep"),
    ALLOW("epoll_create1"),
    ALLOW("epoll_ctl"),
    ALLOW("epoll_wait"),
    ALLOW("epoll_pwait"),
    /*
     * io_uring fails with ENOSYS (TRACED: QEMU 7.2's fdmon tries it at
     * start-up and falls back to poll).  Operations submitted through an
     * io_uring never pass through seccomp (an IORING_OP_OPENAT or
     * IORING_OP_CONNECT would be an open or a connect we never see), so it
     * must not exist for QEMU.
     */
    FAIL("io_uring_setup", ENOSYS),
    /*
     * Clocks (REASONED): normally served by the vDSO without a syscall;
     * with a clocksource the vDSO cannot read (some VMs) glibc falls back
     * to the real syscalls.
     */
    ALLOW("clock_gettime"),
    ALLOW("clock_getres"),
    ALLOW("gettimeofday"),
    ALLOW("time"),
    /*
     * I/O on the inherited chardev sockets (QMP, console, agent, net port;
     * TRACED): QEMU's qio-channel-socket moves data with sendmsg/recvmsg
     * and probes the socket on adoption (SO_TYPE, SO_ZEROCOPY,
     * getsockname, getpeername); write: eventfds, stderr.
     * shutdown (REASONED): qio_channel_shutdown() when a chardev
     * disconnects.
     */
    ALLOW("write"),
    ALLOW("sendmsg"),
    ALLOW("recvmsg"),
    ALLOW("getsockopt"),
    ALLOW("setsockopt"),
    ALLOW("getsockname"),
    ALLOW("getpeername"),
    ALLOW("shutdown"),
    ALLOW("fcntl"),
    /*
     * The root disk of a rootfs image (TRACED, issue 9: boot, python3,
     * a full walk of the file system, writes to the layer and an attempted
     * write to /dev/vda): file-posix reads it with preadv from its thread
     * pool; the image is opened read-only (readonly=on), so no pwritev,
     * fdatasync or fallocate is ever needed, and a write the guest tries
     * is refused by virtio-blk before it reaches the host.  fcntl (above)
     * takes the image's shared OFD lock.
     */
    ALLOW("preadv"),
    /*
     * Snapshots (TRACED, docs/snapshots.md: a snapshot made, restored and
     * an exec run, strace -f of QEMU 7.2 with the same argv):
     * fstatfs: the memory-backend-file asks the RAM file's file system for
     * its page size (qemu_fd_getpagesize, hugetlbfs or not); writev /
     * readv: the migration stream on the state fd passed with getfd
     * (QIOChannelFile).  The RAM file itself is only mmap()ed.
     * fadvise64: a restored rootfs VM's root disk, activated after the
     * incoming migration, drops its cached pages (file-posix's
     * raw_co_invalidate_cache, POSIX_FADV_DONTNEED); advice only.
     */
    ALLOW("fstatfs"),
    ALLOW("fadvise64"),
    ALLOW("writev"),
    ALLOW("readv"),
    /*
     * Signals (TRACED: handler set-up and masks).  rt_sigreturn
     * (REASONED): returning from any handler; QEMU handles SIGTERM, SIGINT
     * and SIGHUP (termsig_handler), SIGBUS under KVM and SIG_IPI kicks.
     * getpid + tgkill (REASONED): abort() and raise(), and pthread_kill()
     * of a vCPU thread (cpus_kick_thread, KVM).  tgkill cannot reach other
     * processes: the jail's PID namespace holds only QEMU.
     * rt_sigtimedwait + rt_sigpending (REASONED): kvm_eat_signals() on
     * kernels without KVM_CAP_IMMEDIATE_EXIT.
     */
    ALLOW("rt_sigaction"),
    ALLOW("rt_sigprocmask"),
    ALLOW("rt_sigreturn"),
    ALLOW("getpid"),
    ALLOW("tgkill"),
    ALLOW("rt_sigtimedwait"),
    ALLOW("rt_sigpending"),
    /*
     * ioctl (REASONED; TCG makes none): KVM's ioctls on /dev/kvm, the VM
     * and the vCPU fds, all of type KVMIO (0xAE) -- the check is on the
     * type byte of the request.  TCGETS: isatty() in glib's log writer
     * (g_warning) and in QEMU's stdio checks; it only reads.  Everything
     * else (TIOCSTI, SIOC*, block and vhost ioctls) is out.
     */
    ALLOW_IF("ioctl", 1, 0xff00, KVMIO << 8),
    ALLOW_IF("ioctl", 1, 0xffffffffULL, TCGETS),
};

const struct lg_sc_profile lg_sc_profile_qemu = {
    .vmm_kind = "qemu",
    .rules = qemu_rules,
    .n_rules = ARRAY_SIZE(qemu_rules),
};
