/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Boot benchmark: `luminaguard run` against plain QEMU booting the same
 * kernel and initramfs, measured in the same run so the ratio is fair.
 *
 *   bench-boot [-n RUNS] LUMINAGUARD IMAGE_DIR
 *
 * For each run it measures
 *   lg-first:  `luminaguard run -- echo x`, start to the first byte of output
 *   lg-total:  `luminaguard run -- true`, start to exit (boot, exec, teardown)
 *   lg-rss:    the VMM's peak RSS (luminaguard logs it from wait4())
 *   qemu-init: plain qemu-system-x86_64 with the same kernel, initramfs,
 *              machine and accelerator, /init = busybox poweroff: start to exit
 *   qemu-rss:  its peak RSS
 * and prints medians and the ratios.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hv/hv.h"
#include "stats.h"
#include <stdint.h>

struct sample {
	double first_ms; /* first byte on stdout, or -1 */
	double total_ms;
	long maxrss_kib;  /* of the child tree as wait4 reports it */
	long vmm_rss_kib; /* parsed from luminaguard's debug log, or -1 */
	int status;
};

/* Runs argv; stdout and stderr are read through pipes; returns the sample. */
static struct sample run(char *const argv[], char *const envp_add[])
{
	struct sample s = {.first_ms = -1, .vmm_rss_kib = -1};
	int out[2], err[2];
	char errbuf[65536];
	size_t errlen = 0;
	double t0 = bench_now_ms();
	struct rusage ru;
	pid_t pid;

	if (pipe(out) < 0 || pipe(err) < 0)
		exit(1);
	pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		for (size_t i = 0; envp_add && envp_add[i]; i++)
			putenv(envp_add[i]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	struct pollfd pfd[2] = {{.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
	int open_fds = 2;
	while (open_fds > 0) {
		char buf[4096];
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			ssize_t n = read(pfd[i].fd, buf, sizeof(buf));
			if (n <= 0) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				open_fds--;
				continue;
			}
			if (i == 0 && s.first_ms < 0)
				s.first_ms = bench_now_ms() - t0;
			if (i == 1 && errlen + (size_t)n < sizeof(errbuf) - 1) {
				memcpy(errbuf + errlen, buf, (size_t)n);
				errlen += (size_t)n;
			}
		}
	}
	wait4(pid, &s.status, 0, &ru);
	s.total_ms = bench_now_ms() - t0;
	s.maxrss_kib = ru.ru_maxrss;
	errbuf[errlen] = '\0';
	const char *p = strstr(errbuf, "peak rss ");
	if (p != NULL)
		s.vmm_rss_kib = strtol(p + 9, NULL, 10);
	if (!WIFEXITED(s.status) || WEXITSTATUS(s.status) != 0)
		fprintf(stderr, "bench: %s exited with status 0x%x: %s\n", argv[0], s.status,
			errbuf);
	return s;
}

int main(int argc, char **argv)
{
	int runs = 10;
	int opt;

	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt == 'n')
			runs = atoi(optarg);
		else
			return 2;
	}
	if (argc - optind != 2 || runs < 1 || runs > 1000) {
		fprintf(stderr, "usage: bench-boot [-n RUNS] LUMINAGUARD IMAGE_DIR\n");
		return 2;
	}
	char *lg = argv[optind];
	char *img = argv[optind + 1];
	char kernel[4096], initrd[4096];
	snprintf(kernel, sizeof(kernel), "%s/vmlinux", img);
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio", img);
	const char *accel = getenv("BENCH_ACCEL") ? getenv("BENCH_ACCEL") : "tcg";

	/* luminaguard boots the same image: its name is the directory's. */
	char *name = strrchr(img, '/') != NULL ? strrchr(img, '/') + 1 : img;
	char *lg_echo[] = {lg,	 "run", "--accel", (char *)accel, "--image",
			   name, "--",	"echo",	   "x",		  NULL};
	char *lg_true[] = {lg,	 "run", "--accel", (char *)accel, "--image",
			   name, "--",	"true",	   NULL};
	char *env_debug[] = {"LUMINAGUARD_LOG=debug", NULL};
	/* The backend's own command line, so the peer boots the same way. */
	char *cmdline = hv_qemu_kernel_cmdline(
	    strcmp(accel, "kvm") == 0 ? HV_ACCEL_KVM : HV_ACCEL_TCG, "rdinit=/bin/poweroff -- -f");
	/* Same machine, memory, kernel, initramfs and command line as the qemu backend. */
	char *qemu[] = {"qemu-system-x86_64",
			"-M",
			"microvm,pit=on,pic=on,rtc=on,isa-serial=on",
			"-accel",
			(char *)accel,
			"-cpu",
			strcmp(accel, "kvm") ? "max" : "host",
			"-smp",
			"1",
			"-m",
			"256",
			"-nodefaults",
			"-no-user-config",
			"-nographic",
			"-no-reboot",
			"-serial",
			"null",
			"-kernel",
			kernel,
			"-initrd",
			initrd,
			"-append",
			cmdline,
			NULL};

	double *first = calloc((size_t)runs, sizeof(double));
	double *total = calloc((size_t)runs, sizeof(double));
	double *lrss = calloc((size_t)runs, sizeof(double));
	double *qinit = calloc((size_t)runs, sizeof(double));
	double *qrss = calloc((size_t)runs, sizeof(double));

	printf("bench-boot: %d runs, accel %s, image %s\n", runs, accel, img);
	printf("%4s %10s %10s %10s %10s %10s\n", "run", "lg-first", "lg-total", "lg-vmm-rss",
	       "qemu-init", "qemu-rss");
	for (int i = 0; i < runs; i++) {
		/* Interleaved, so drift in the machine's load hits both sides alike. */
		struct sample a = run(lg_echo, NULL);
		struct sample b = run(lg_true, env_debug);
		struct sample c = run(qemu, NULL);
		first[i] = a.first_ms;
		total[i] = b.total_ms;
		lrss[i] = (double)(b.vmm_rss_kib > 0 ? b.vmm_rss_kib : b.maxrss_kib) / 1024.0;
		qinit[i] = c.total_ms;
		qrss[i] = (double)c.maxrss_kib / 1024.0;
		printf("%4d %8.0fms %8.0fms %8.1fMB %8.0fms %8.1fMB\n", i + 1, first[i], total[i],
		       lrss[i], qinit[i], qrss[i]);
	}
	double mf = bench_median(first, runs), mt = bench_median(total, runs),
	       ml = bench_median(lrss, runs);
	double mq = bench_median(qinit, runs), mr = bench_median(qrss, runs);
	printf(
	    "median: luminaguard run first output %.0f ms, total %.0f ms, VMM peak RSS %.1f MiB\n",
	    mf, mt, ml);
	printf("median: plain qemu to /init and exit %.0f ms, peak RSS %.1f MiB\n", mq, mr);
	printf("ratio:  first-output / plain-qemu %.2f, total / plain-qemu %.2f, RSS %.2f\n",
	       mf / mq, mt / mq, ml / mr);
	free(cmdline);
	return 0;
}
