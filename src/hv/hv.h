/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The hypervisor interface.  A backend is a const table of operations, as
 * crun's cgroup managers and QEMU's accelerator ops are; the rest of
 * LuminaGuard only ever talks to a VM through this table and the agent
 * channel it hands out.
 */
#ifndef LG_HV_HV_H
#define LG_HV_HV_H

#include "common/err.h"
#include "jail/jail.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum hv_accel {
	HV_ACCEL_AUTO = 0, /* the fastest one that boots a stock kernel here */
	HV_ACCEL_KVM,
	HV_ACCEL_TCG,
	HV_ACCEL_HVF,
	HV_ACCEL_WHPX,
};

const char *hv_accel_name(enum hv_accel a);
/* Returns 0 and sets *out, or -EINVAL for an unknown name. */
int hv_accel_parse(const char *name, enum hv_accel *out);

/* What /dev/kvm offers on this host. */
enum hv_kvm_kind {
	HV_KVM_NONE,	     /* no /dev/kvm */
	HV_KVM_NOACCESS,     /* present but not openable read-write by us */
	HV_KVM_PVM,	     /* kvm_pvm: pagetable virtualization, stock kernels crawl */
	HV_KVM_HARDWARE,     /* VT-x / AMD-V */
	HV_KVM_UNRECOGNIZED, /* opens, but no sign of VT-x/AMD-V: treated as PVM */
};

/* Detects the KVM kind; writes a one-line explanation into why (may be NULL). */
enum hv_kvm_kind hv_kvm_detect(char *why, size_t why_len);
const char *hv_kvm_kind_name(enum hv_kvm_kind k);

/*
 * Picks the accelerator for `requested` on this host.  AUTO picks KVM only
 * when it is hardware virtualization; anything else falls back to TCG
 * and *note explains why (a static string, or NULL when nothing to say).
 * An explicit request is honoured as long as it can work at all.
 */
int hv_accel_resolve(enum hv_accel requested, enum hv_accel *out, const char **note,
		     struct lg_err **err);

enum vm_status {
	VM_STATUS_STARTING,
	VM_STATUS_RUNNING,
	VM_STATUS_STOPPED,
	VM_STATUS_FAILED,
};

const char *vm_status_name(enum vm_status s);

struct vm_config {
	unsigned cpus;	     /* 1..HV_MAX_CPUS */
	uint64_t memory_mib; /* HV_MIN_MEMORY_MIB..HV_MAX_MEMORY_MIB */
	const char *kernel;  /* uncompressed ELF vmlinux (PVH entry) */
	const char *initrd;  /* newc cpio */
	const char *cmdline; /* extra kernel command-line words, may be NULL */
	/*
	 * A root file system image (erofs), or NULL when the initramfs is the
	 * whole guest.  It becomes a read-only virtio-blk disk with the virtio
	 * serial HV_ROOT_DISK_SERIAL: shared by every VM of the image, never
	 * written (docs/images.md).
	 */
	const char *rootfs;
	/*
	 * With rootfs: the guest's writable layer in MiB, a tmpfs upper of an
	 * overlay in guest RAM, so the VM's RAM is memory_mib + layer_mib.
	 */
	uint64_t layer_mib;
	enum hv_accel accel; /* resolved, never AUTO */
	int console_fd;	     /* if >= 0, the guest console is copied here too */
	/*
	 * If >= 0, one end of a stream socket that becomes the guest's second
	 * virtio-serial port (LG_NET_PORT_NAME), carrying its proxied
	 * connections (net/netmux.h).  The backend closes its copy after spawn.
	 * -1: the guest has no network at all.
	 */
	int net_fd;
	/* How to jail the VMM; NULL = the defaults (jailed, seccomp strict). */
	const struct jail_opts *jail;
	/*
	 * Snapshots (docs/snapshots.md).  ram_file: guest RAM in this file
	 * instead of anonymous memory (NULL: anonymous), exactly
	 * hv_guest_ram_mib() MiB long.  ram_shared: the VM writes its RAM
	 * into the file (a VM to snapshot; the file must be new, never one a
	 * snapshot holds); else a private copy-on-write mapping of it (a
	 * restore: the file's pages are shared with every other restore
	 * through the page cache).  incoming: the VM starts paused, waiting
	 * for the backend's load_state; its RAM is then ram_fd, never a file.
	 *
	 * ram_fd (read only with incoming; ram_file must be NULL then): a
	 * memfd holding the snapshot's RAM, sealed against any write, growth
	 * or shrinking (F_SEAL_WRITE, _GROW, _SHRINK and _SEAL; host/snapshot.c
	 * makes it).  The VMM maps it privately, copy-on-write, so every VM
	 * restored from it shares its pages, and no VMM can change them: a
	 * sealed memfd refuses write() and shared writable mappings to
	 * everyone.  The backend refuses an fd without those seals.
	 */
	const char *ram_file;
	bool ram_shared;
	bool incoming;
	int ram_fd;
};

#define HV_MAX_CPUS 64u
/* The virtio serial lg-agent finds the root disk by (virtio-mmio probe order is not ours). */
#define HV_ROOT_DISK_SERIAL "lg-root"
#define HV_MIN_LAYER_MIB    16u
#define HV_MAX_LAYER_MIB    (256u * 1024u)
#define HV_MIN_MEMORY_MIB   64u
/*
 * The VMM's memory beyond guest RAM, for the cgroup limit and for
 * admission: TCG's translation buffer (bounded by the backend's tb-size),
 * QEMU's heap, libraries and thread stacks.  Measured peak (docs/jail.md):
 * guest 256 MiB fully touched plus about 110 MiB under TCG with tb-size=64;
 * KVM needs less.  A guest can only make QEMU allocate so much; past this
 * the VM dies, not the host.
 */
#define HV_VMM_OVERHEAD_MIB 192u
#define HV_MAX_MEMORY_MIB   (1024u * 1024u)

/* Backend-private state follows this header in the backend's own struct. */
struct vm {
	const struct hv_backend *backend;
	pid_t pid; /* the VMM process */
};

struct hv_backend {
	const char *name;
	const char *description;
	/* Usable here?  If not, *err says why in one line. */
	int (*probe)(struct lg_err **err);
	/* Starts a VM.  On failure nothing is left behind. */
	int (*spawn)(const struct vm_config *cfg, struct vm **out, struct lg_err **err);
	/* The byte stream to lg-agent; owned by the VM. */
	int (*agent_fd)(struct vm *vm);
	enum vm_status (*status)(struct vm *vm);
	/*
	 * Waits up to timeout_ms for the VMM to end by itself (after the guest
	 * powered off).  Returns 1 if it ended, 0 if still running.
	 */
	int (*wait)(struct vm *vm, int timeout_ms);
	/*
	 * Ends the VM: asks the VMM to quit, then kills it, and frees every
	 * host resource.  Always succeeds in the sense that matters: after it
	 * returns no process, fd or file of this VM remains.  Frees vm.
	 */
	void (*destroy)(struct vm *vm);
	/*
	 * Kills the VMM now (SIGKILL) through the pidfd the backend holds, so
	 * the signal reaches this VM's process and never one that reused its
	 * pid after a reap.  Callable from any thread until destroy.  0, or
	 * -ESRCH when the VMM is already gone.  destroy still has to run.
	 */
	int (*kill)(struct vm *vm);
	/*
	 * An fd that polls readable once the VMM has exited (its pidfd), for
	 * noticing a crash, a seccomp kill or an OOM kill at once; -1 if the
	 * kernel has no pidfds.  Owned by the VM, valid until destroy.
	 */
	int (*exit_fd)(struct vm *vm);
	/* Last bytes of the guest console, for error messages.  New string. */
	char *(*console_tail)(struct vm *vm);
	/*
	 * Snapshots; NULL where the backend has none.  save_state: on a VM
	 * spawned with ram_file and ram_shared, pauses it and writes its
	 * device state (not its RAM, which is in ram_file) to state_fd, a new
	 * file open for writing.  The VM stays paused; destroy it after.
	 */
	int (*save_state)(struct vm *vm, int state_fd, struct lg_err **err);
	/*
	 * On a VM spawned with ram_file (not shared) and incoming: loads the
	 * device state from state_fd (borrowed, read from offset 0) and
	 * resumes the guest.  The guest's agent must then be checked with a
	 * PING: a mismatched state may load and hang.
	 */
	int (*load_state)(struct vm *vm, int state_fd, int timeout_ms, struct lg_err **err);
	/*
	 * What a snapshot depends on beyond cfg and the image: the VMM's
	 * binary and modules (path, size, mtime), so an upgraded VMM never
	 * loads an older one's state.  New string, or NULL with *err.
	 */
	char *(*identity)(const struct vm_config *cfg, struct lg_err **err);
};

extern const struct hv_backend hv_backend_qemu;

/*
 * The kernel command line the qemu backend boots guests with under accel,
 * followed by extra (may be NULL).  New string.  Exported for the boot
 * benchmark, whose plain-QEMU peer must boot exactly the same way.
 */
char *hv_qemu_kernel_cmdline(enum hv_accel accel, const char *extra);

/* The registered backends, NULL-terminated. */
extern const struct hv_backend *const hv_backends[];

/* Finds a backend by name; NULL name means the default.  -ENOENT if none. */
int hv_backend_find(const char *name, const struct hv_backend **out, struct lg_err **err);

/* Guest RAM of a VM: its memory plus its writable layer (both live in guest RAM). */
static inline uint64_t hv_guest_ram_mib(const struct vm_config *cfg)
{
	return cfg->memory_mib + (cfg->rootfs != NULL ? cfg->layer_mib : 0);
}

/* Checks a configuration before any process starts. */
int hv_config_check(const struct vm_config *cfg, struct lg_err **err);

#endif
