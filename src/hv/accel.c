/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which accelerator can run a stock Linux guest here.  Hosts differ, and
 * the same build must say plainly which one it is on:
 *  - no /dev/kvm at all (most CI machines, VMs without nested
 *    virtualization): TCG;
 *  - a /dev/kvm this user cannot open: TCG, and the fix;
 *  - kvm_pvm (pagetable-based virtualization, no VT-x/AMD-V): it accepts
 *    KVM_CREATE_VM and runs tiny guests, but a distribution kernel takes
 *    minutes to reach init, or dies with an emulation error, so "/dev/kvm
 *    opens" is not "KVM is usable": TCG unless asked;
 *  - a /dev/kvm that opens but is neither of the hardware modules nor
 *    backed by vmx/svm: unrecognized, treated as PVM is;
 *  - hardware virtualization: KVM.
 */
#include "hv/hv.h"

#include "common/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *hv_accel_name(enum hv_accel a)
{
	switch (a) {
	case HV_ACCEL_AUTO:
		return "auto";
	case HV_ACCEL_KVM:
		return "kvm";
	case HV_ACCEL_TCG:
		return "tcg";
	case HV_ACCEL_HVF:
		return "hvf";
	case HV_ACCEL_WHPX:
		return "whpx";
	}
	return "unknown";
}

int hv_accel_parse(const char *name, enum hv_accel *out)
{
	static const enum hv_accel all[] = {HV_ACCEL_AUTO, HV_ACCEL_KVM, HV_ACCEL_TCG, HV_ACCEL_HVF,
					    HV_ACCEL_WHPX};

	for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
		if (strcmp(name, hv_accel_name(all[i])) == 0) {
			*out = all[i];
			return 0;
		}
	}
	return -EINVAL;
}

const char *hv_kvm_kind_name(enum hv_kvm_kind k)
{
	switch (k) {
	case HV_KVM_NONE:
		return "none";
	case HV_KVM_NOACCESS:
		return "no access";
	case HV_KVM_PVM:
		return "pvm";
	case HV_KVM_UNRECOGNIZED:
		return "unrecognized";
	case HV_KVM_HARDWARE:
		return "hardware";
	}
	return "unknown";
}

static bool path_exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

/* True if /proc/cpuinfo's flags carry vmx or svm (also true inside a nested-capable VM). */
static bool cpu_has_virt_flags(void)
{
	cleanup_file FILE *f = fopen("/proc/cpuinfo", "re");
	char line[8192];

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		return strstr(line, " vmx") != NULL || strstr(line, " svm") != NULL;
	}
	return false;
}

static void say(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t n, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || n == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, n, fmt, ap);
	va_end(ap);
}

enum hv_kvm_kind hv_kvm_detect(char *why, size_t why_len)
{
	bool cpu_virt = cpu_has_virt_flags();
	int fd;

	if (!path_exists("/dev/kvm")) {
		if (cpu_virt)
			say(why, why_len,
			    "/dev/kvm does not exist, although the CPU has VT-x/AMD-V (load "
			    "kvm_intel or kvm_amd, or give this container the device)");
		else
			say(why, why_len,
			    "/dev/kvm does not exist and the CPU shows no VT-x/AMD-V (not a KVM "
			    "host, e.g. a VM without nested virtualization)");
		return HV_KVM_NONE;
	}
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		struct stat st;

		if (errno == EACCES && stat("/dev/kvm", &st) == 0 && st.st_gid != 0 &&
		    (st.st_mode & (S_IRGRP | S_IWGRP)) == (S_IRGRP | S_IWGRP))
			say(why, why_len,
			    "/dev/kvm exists but this user may not open it (add the user to "
			    "its group, gid %u, usually 'kvm')",
			    (unsigned)st.st_gid);
		else if (errno == EACCES)
			say(why, why_len,
			    "/dev/kvm exists but only root may open it (chgrp kvm /dev/kvm; "
			    "chmod 0660 /dev/kvm, then add the user to group 'kvm')");
		else
			say(why, why_len, "/dev/kvm exists but cannot be opened: %s",
			    strerror(errno));
		return HV_KVM_NOACCESS;
	}
	close(fd);
	/*
	 * kvm_pvm registers itself as a module; its presence means the KVM
	 * device is pagetable-virtualized even if kvm_intel is also loaded.
	 */
	if (path_exists("/sys/module/kvm_pvm")) {
		say(why, why_len,
		    "/dev/kvm is kvm_pvm (pagetable virtualization, no VT-x/AMD-V): stock "
		    "Linux guests do not boot in useful time under it");
		return HV_KVM_PVM;
	}
	if (path_exists("/sys/module/kvm_intel") || path_exists("/sys/module/kvm_amd") ||
	    cpu_virt) {
		say(why, why_len, "/dev/kvm uses hardware virtualization (VT-x/AMD-V)");
		return HV_KVM_HARDWARE;
	}
	say(why, why_len,
	    "/dev/kvm opens, but neither kvm_intel nor kvm_amd is loaded and the CPU shows "
	    "no VT-x/AMD-V: not hardware virtualization");
	return HV_KVM_UNRECOGNIZED;
}

int hv_accel_resolve(enum hv_accel requested, enum hv_accel *out, const char **note,
		     struct lg_err **err)
{
	char why[256];
	enum hv_kvm_kind kind;

	*note = NULL;
	switch (requested) {
	case HV_ACCEL_TCG:
		*out = HV_ACCEL_TCG;
		return 0;
	case HV_ACCEL_HVF:
	case HV_ACCEL_WHPX:
		return lg_err_msg(err, ENOTSUP, "accelerator '%s' is not available on Linux",
				  hv_accel_name(requested));
	case HV_ACCEL_KVM:
		kind = hv_kvm_detect(why, sizeof(why));
		if (kind == HV_KVM_NONE || kind == HV_KVM_NOACCESS)
			return lg_err_msg(err, ENODEV, "--accel kvm: %s", why);
		if (kind == HV_KVM_PVM)
			*note = "using KVM as asked, but /dev/kvm is PVM: a stock kernel may take "
				"minutes to boot";
		else if (kind == HV_KVM_UNRECOGNIZED)
			*note = "using KVM as asked, but /dev/kvm is not hardware virtualization: "
				"a stock kernel may take minutes to boot";
		*out = HV_ACCEL_KVM;
		return 0;
	case HV_ACCEL_AUTO:
		break;
	}
	kind = hv_kvm_detect(why, sizeof(why));
	switch (kind) {
	case HV_KVM_HARDWARE:
		*out = HV_ACCEL_KVM;
		return 0;
	case HV_KVM_PVM:
		*note = "/dev/kvm is PVM (no hardware virtualization); using TCG software "
			"emulation, which is slower";
		break;
	case HV_KVM_UNRECOGNIZED:
		*note = "/dev/kvm is not hardware virtualization; using TCG software emulation "
			"(--accel kvm tries it anyway)";
		break;
	case HV_KVM_NOACCESS:
		*note = "/dev/kvm is not accessible to this user; using TCG software emulation";
		break;
	case HV_KVM_NONE:
		*note = "no /dev/kvm on this host; using TCG software emulation";
		break;
	}
	*out = HV_ACCEL_TCG;
	return 0;
}
