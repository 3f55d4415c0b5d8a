/* SPDX-License-Identifier: Apache-2.0 */
#include "image/rootfs.h"

#include <errno.h>
#include <stddef.h>

#include "common/err.h"

int lg_rootfs_from_tar(const char *tar_path, const char *work_dir, const char *out_path,
		       const struct lg_rootfs_opts *o, struct lg_rootfs_stats *st,
		       struct lg_err **err)
{
	return lg_err_msg(err, ENOSYS, "rootfs from tar: not implemented yet");
}

int lg_rootfs_debian(const struct lg_debian_opts *o, const char *tar_path, struct lg_err **err)
{
	return lg_err_msg(err, ENOSYS, "debian rootfs: not implemented yet");
}

char *lg_host_suite(void)
{
	return NULL;
}
