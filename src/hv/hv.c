/* SPDX-License-Identifier: Apache-2.0 */
#include "hv/hv.h"

#include "common/util.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

const struct hv_backend *const hv_backends[] = {
    &hv_backend_qemu,
    NULL,
};

int hv_backend_find(const char *name, const struct hv_backend **out, struct lg_err **err)
{
	if (name == NULL) {
		*out = hv_backends[0];
		return 0;
	}
	for (size_t i = 0; hv_backends[i] != NULL; i++) {
		if (strcmp(hv_backends[i]->name, name) == 0) {
			*out = hv_backends[i];
			return 0;
		}
	}
	return lg_err_msg(err, ENOENT, "unknown backend '%s' (available: qemu)", name);
}

const char *vm_status_name(enum vm_status s)
{
	switch (s) {
	case VM_STATUS_STARTING:
		return "starting";
	case VM_STATUS_RUNNING:
		return "running";
	case VM_STATUS_STOPPED:
		return "stopped";
	case VM_STATUS_FAILED:
		return "failed";
	}
	return "unknown";
}

int hv_config_check(const struct vm_config *cfg, struct lg_err **err)
{
	if (cfg->cpus < 1 || cfg->cpus > HV_MAX_CPUS)
		return lg_err_msg(err, EINVAL, "invalid vCPU count %u (must be 1..%u)", cfg->cpus,
				  HV_MAX_CPUS);
	if (cfg->memory_mib < HV_MIN_MEMORY_MIB || cfg->memory_mib > HV_MAX_MEMORY_MIB)
		return lg_err_msg(err, EINVAL, "invalid memory size %llu MiB (must be %u..%u MiB)",
				  (unsigned long long)cfg->memory_mib, HV_MIN_MEMORY_MIB,
				  HV_MAX_MEMORY_MIB);
	{
		long pages = sysconf(_SC_PHYS_PAGES);
		long psize = sysconf(_SC_PAGESIZE);
		uint64_t host_mib = pages > 0 && psize > 0
					? (uint64_t)pages * (uint64_t)psize / (1024u * 1024u)
					: 0;
		if (host_mib > 0 && hv_guest_ram_mib(cfg) > host_mib)
			return lg_err_set(err, 0,
					  "memory size %llu MiB exceeds this host's %llu MiB",
					  (unsigned long long)hv_guest_ram_mib(cfg),
					  (unsigned long long)host_mib);
	}
	if (cfg->rootfs != NULL &&
	    (cfg->layer_mib < HV_MIN_LAYER_MIB || cfg->layer_mib > HV_MAX_LAYER_MIB))
		return lg_err_msg(err, EINVAL, "invalid disk size %llu MiB (must be %u..%u MiB)",
				  (unsigned long long)cfg->layer_mib, HV_MIN_LAYER_MIB,
				  HV_MAX_LAYER_MIB);
	/* A path with a comma would split QEMU's -drive option list. */
	if (cfg->rootfs != NULL && (cfg->rootfs[0] != '/' || strchr(cfg->rootfs, ',') != NULL))
		return lg_err_msg(err, EINVAL,
				  "root disk path %s must be absolute and without commas",
				  cfg->rootfs);
	if (cfg->kernel == NULL || cfg->initrd == NULL)
		return lg_err_msg(err, EINVAL, "no kernel or initramfs given");
	if (cfg->accel == HV_ACCEL_AUTO)
		return lg_err_msg(err, EINVAL, "accelerator not resolved");
	return 0;
}
