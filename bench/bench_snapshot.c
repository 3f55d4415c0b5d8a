/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Snapshot benchmark (docs/snapshots.md): restore against a cold boot of
 * the same image and shape, in the same run, jailed as in production.
 *
 *   bench-snapshot [-n RUNS] [-k CLONES] [IMAGE]
 *
 * Prints
 *   make:     lg_snapshot_ensure building the snapshot from nothing
 *   size:     the snapshot on disk (RAM file allocated / apparent, state)
 *   boot:     lg_sandbox_create cold, to the agent's HELLO, and to the reply
 *             of the first exec (`true`)
 *   first:    the first restore of the snapshot in this process, to ready:
 *             it also copies the RAM file into the sealed memfd restores
 *             map (host/snapshot.h), whose size in memory follows
 *   restore:  lg_sandbox_create from the snapshot, to ready (PING + ADOPT),
 *             and to the reply of the first exec
 *   pss:      /proc/PID/smaps_rollup of the QEMU processes, idle 2 s: one
 *             booted VM, one restored, CLONES restored at once (sum)
 * as medians of RUNS (alternating boot and restore).
 */
#include "common/util.h"
#include "host/sandbox.h"
#include "host/snapshot.h"
#include "stats.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct lg_sandbox *create(const char *image, const char *snapshot, double *ready_ms,
				 double *reply_ms)
{
	struct lg_sandbox_opts o = {
	    .image = image, .cancel_fd = -1, .console_fd = -1, .snapshot = snapshot};
	char *argv[] = {(char *)"true", NULL};
	struct lg_exec_opts eo = {.argv = argv, .stdin_fd = -1, .cancel_fd = -1};
	struct lg_exec_result res;
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;
	double t0 = bench_now_ms();

	if (lg_sandbox_create(&o, &sb, &err) < 0) {
		fprintf(stderr, "bench-snapshot: %s\n", err->msg);
		exit(1);
	}
	if (ready_ms != NULL)
		*ready_ms = bench_now_ms() - t0;
	if (lg_sandbox_exec(sb, &eo, &res, &err) < 0) {
		fprintf(stderr, "bench-snapshot: exec: %s\n", err->msg);
		exit(1);
	}
	if (reply_ms != NULL)
		*reply_ms = bench_now_ms() - t0;
	return sb;
}

/* Pss and Rss of pid in KiB, from smaps_rollup. */
static void pss_of(pid_t pid, long *pss, long *rss)
{
	char path[64], line[256];
	FILE *f;

	*pss = *rss = -1;
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		sscanf(line, "Pss: %ld kB", pss);
		sscanf(line, "Rss: %ld kB", rss);
	}
	fclose(f);
}

/* KiB of memory the sealed RAM memfds this process holds take (-1: none). */
static long memfd_kib(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	long kib = -1;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		char link[300], target[256];
		struct stat st;
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, "/memfd:lg-snapshot-ram", 22) == 0 && stat(link, &st) == 0)
			kib = (kib < 0 ? 0 : kib) + (long)(st.st_blocks * 512 / 1024);
	}
	closedir(d);
	return kib;
}

static long file_kib(const char *path, bool allocated)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -1;
	return allocated ? (long)(st.st_blocks * 512 / 1024) : (long)(st.st_size / 1024);
}

int main(int argc, char **argv)
{
	const char *image = "tiny";
	int runs = 10, clones = 8, opt;
	struct lg_sandbox_opts o = {.cancel_fd = -1, .console_fd = -1};
	struct lg_err *err = NULL;
	char *dir = NULL;
	double t0, make_ms, first_ms, *boot_ready, *boot_reply, *rest_ready, *rest_reply;
	struct lg_sandbox **sbs;
	long pss, rss, sum_pss = 0, sum_rss = 0;

	while ((opt = getopt(argc, argv, "n:k:")) != -1) {
		if (opt == 'n')
			runs = atoi(optarg);
		else if (opt == 'k')
			clones = atoi(optarg);
		else
			return 2;
	}
	if (optind < argc)
		image = argv[optind];
	if (runs < 1 || clones < 1)
		return 2;
	o.image = image;
	if (lg_snapshot_dir(&o, &dir, &err) < 0) {
		fprintf(stderr, "bench-snapshot: %s\n", err->msg);
		return 1;
	}
	lg_rm_rf(dir);
	free(dir);
	t0 = bench_now_ms();
	if (lg_snapshot_ensure(&o, &dir, &err) < 0) {
		fprintf(stderr, "bench-snapshot: %s\n", err->msg);
		return 1;
	}
	make_ms = bench_now_ms() - t0;
	{
		cleanup_free char *ram = xasprintf("%s/ram", dir);
		cleanup_free char *state = xasprintf("%s/state", dir);
		printf("image %s, snapshot %s\n", image, dir);
		printf("make:    %.0f ms\n", make_ms);
		printf("size:    RAM file %ld KiB allocated of %ld KiB, state %ld KiB\n",
		       file_kib(ram, true), file_kib(ram, false), file_kib(state, false));
	}

	{
		struct lg_sandbox *sb = create(image, dir, &first_ms, NULL);
		lg_sandbox_destroy(sb);
		printf("first:   restore ready %.1f ms, RAM memfd %ld KiB in memory\n", first_ms,
		       memfd_kib());
	}

	boot_ready = xmalloc(sizeof(double) * (size_t)runs);
	boot_reply = xmalloc(sizeof(double) * (size_t)runs);
	rest_ready = xmalloc(sizeof(double) * (size_t)runs);
	rest_reply = xmalloc(sizeof(double) * (size_t)runs);
	for (int i = 0; i < runs; i++) {
		struct lg_sandbox *sb = create(image, NULL, &boot_ready[i], &boot_reply[i]);
		lg_sandbox_destroy(sb);
		sb = create(image, dir, &rest_ready[i], &rest_reply[i]);
		lg_sandbox_destroy(sb);
	}
	printf("boot:    ready %.0f ms, first reply %.0f ms (median of %d)\n",
	       bench_median(boot_ready, runs), bench_median(boot_reply, runs), runs);
	printf("restore: ready %.1f ms, first reply %.1f ms (median of %d)\n",
	       bench_median(rest_ready, runs), bench_median(rest_reply, runs), runs);

	sbs = xzalloc(sizeof(*sbs) * (size_t)clones);
	sbs[0] = create(image, NULL, NULL, NULL);
	sleep(2);
	pss_of(lg_sandbox_pid(sbs[0]), &pss, &rss);
	printf("pss:     1 booted   %ld KiB (rss %ld KiB)\n", pss, rss);
	lg_sandbox_destroy(sbs[0]);
	sbs[0] = create(image, dir, NULL, NULL);
	sleep(2);
	pss_of(lg_sandbox_pid(sbs[0]), &pss, &rss);
	printf("pss:     1 restored %ld KiB (rss %ld KiB)\n", pss, rss);
	for (int i = 1; i < clones; i++)
		sbs[i] = create(image, dir, NULL, NULL);
	sleep(2);
	for (int i = 0; i < clones; i++) {
		pss_of(lg_sandbox_pid(sbs[i]), &pss, &rss);
		sum_pss += pss;
		sum_rss += rss;
	}
	printf("pss:     %d restored %ld KiB in all, %ld KiB each (rss %ld KiB in all)\n", clones,
	       sum_pss, sum_pss / clones, sum_rss);
	for (int i = 0; i < clones; i++)
		lg_sandbox_destroy(sbs[i]);
	free(sbs);
	free(boot_ready);
	free(boot_reply);
	free(rest_ready);
	free(rest_reply);
	free(dir);
	return 0;
}
