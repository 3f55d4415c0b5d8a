/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which accelerator can run a stock Linux guest here.  The trap this file
 * exists for: a host whose /dev/kvm is kvm_pvm (pagetable-based
 * virtualization, no VT-x/AMD-V) accepts KVM_CREATE_VM and runs tiny
 * guests, but a distribution kernel takes minutes to reach init, or dies
 * with an emulation error.  So "/dev/kvm opens" is not "KVM is usable".
 */
#include "hv/hv.h"

#include "common/util.h"

#include <errno.h>
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

static void say(char *why, size_t n, const char *msg)
{
	if (why != NULL && n > 0)
		snprintf(why, n, "%s", msg);
}

enum hv_kvm_kind hv_kvm_detect(char *why, size_t why_len)
{
	int fd;

	if (!path_exists("/dev/kvm")) {
		say(why, why_len,
		    "/dev/kvm does not exist (no KVM module loaded, or not a KVM host)");
		return HV_KVM_NONE;
	}
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		say(why, why_len,
		    errno == EACCES ? "/dev/kvm exists but this user may not open it (add the "
				      "user to group 'kvm')"
				    : "/dev/kvm exists but cannot be opened");
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
	    cpu_has_virt_flags()) {
		say(why, why_len, "/dev/kvm uses hardware virtualization (VT-x/AMD-V)");
		return HV_KVM_HARDWARE;
	}
	say(why, why_len, "/dev/kvm opens but no hardware virtualization was found");
	return HV_KVM_PVM;
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
		return lg_err_set(err, 0, "accelerator '%s' is not available on Linux",
				  hv_accel_name(requested));
	case HV_ACCEL_KVM:
		kind = hv_kvm_detect(why, sizeof(why));
		if (kind == HV_KVM_NONE || kind == HV_KVM_NOACCESS)
			return lg_err_set(err, 0, "--accel kvm: %s", why);
		if (kind == HV_KVM_PVM)
			*note = "using KVM as asked, but /dev/kvm is PVM: a stock kernel may take "
				"minutes to boot";
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
	case HV_KVM_NOACCESS:
		*note = "/dev/kvm is not accessible to this user; using TCG software emulation";
		break;
	case HV_KVM_NONE:
		*note = "no /dev/kvm; using TCG software emulation";
		break;
	}
	*out = HV_ACCEL_TCG;
	return 0;
}
