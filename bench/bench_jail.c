/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Jail benchmark: what the jailer and the seccomp filter add to starting a
 * process, each against its peer measured in the same run.
 *
 *   bench-jail [-n RUNS] [-r VM_RUNS] PROBE [LUMINAGUARD]
 *
 * Spawn latency (needs root for the jailed cases): jail_spawn() of PROBE, a
 * static program that writes one byte to fd 3 and exits, timed from the
 * call to that byte arriving (the program is running), in four
 * configurations, interleaved run by run so load drift hits all alike:
 *   bare:      opts.disabled, seccomp off (fds, environment, rlimits only)
 *   jail:      jailed, seccomp off
 *   seccomp:   opts.disabled, seccomp strict (the qemu profile)
 *   both:      jailed, seccomp strict (the default)
 * The jail's cost is jail - bare; seccomp's is seccomp - bare (and
 * both - jail when jailed).
 *
 * Then the per-VM resolution of QEMU's libraries (lg_elf_deps_resolve).
 *
 * With LUMINAGUARD, also `luminaguard run -- true` start to exit, default
 * vs --no-jail vs --no-jail --seccomp off, VM_RUNS each (a whole VM boot:
 * under TCG the boot dominates and the jail's share is small and noisy).
 */
#include "common/log.h"
#include "jail/elfdeps.h"
#include "jail/jail.h"
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct config {
	const char *name;
	bool disabled;
	enum lg_seccomp_level seccomp;
};

static const struct config configs[] = {
    {"bare", true, LG_SECCOMP_OFF},
    {"jail", false, LG_SECCOMP_OFF},
    {"seccomp", true, LG_SECCOMP_STRICT},
    {"both", false, LG_SECCOMP_STRICT},
};
#define N_CONFIGS (sizeof(configs) / sizeof(configs[0]))

/*
 * One spawn: returns the ms from jail_spawn() to the probe's byte, and in
 * *ret_ms the ms until jail_spawn() returned.  Exits on any failure: a
 * figure from a run that did not work would be meaningless.
 */
static double spawn_once(const char *probe, const struct config *c, int i, double *ret_ms)
{
	struct jail_opts opts = {.disabled = c->disabled, .seccomp = c->seccomp};
	char name[64];
	char *argv[] = {(char *)probe, NULL};
	struct lg_err *err = NULL;
	struct jail *j = NULL;
	struct pollfd pfd;
	int p[2], status;
	double t0, t1, t2;
	char b;

	if (pipe2(p, O_CLOEXEC) < 0) {
		perror("bench-jail: pipe2");
		exit(1);
	}
	snprintf(name, sizeof(name), "bench-%s-%d", c->name, i);
	struct jail_spec spec = {
	    .name = name,
	    .vmm_kind = "qemu",
	    .binary = probe,
	    .argv = argv,
	    .pass_fds = &p[1],
	    .n_pass_fds = 1,
	    .stderr_fd = STDERR_FILENO,
	    /* The limits a default VM gets, so cgroup setup is counted. */
	    .memory_bytes = 512ull << 20,
	    .pids_max = 64,
	    .cpus = 1,
	    .opts = &opts,
	};

	t0 = bench_now_ms();
	if (jail_spawn(&spec, &j, &err) < 0) {
		fprintf(stderr, "bench-jail: %s: %s\n", c->name, err ? err->msg : "failed");
		exit(1);
	}
	t1 = bench_now_ms();
	close(p[1]);
	pfd = (struct pollfd){.fd = p[0], .events = POLLIN};
	if (poll(&pfd, 1, 10000) != 1 || read(p[0], &b, 1) != 1) {
		fprintf(stderr, "bench-jail: %s: the probe never ran\n", c->name);
		exit(1);
	}
	t2 = bench_now_ms();
	close(p[0]);
	while (waitpid(jail_pid(j), &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char *why = jail_explain_exit(j, status);
		fprintf(stderr, "bench-jail: %s: the probe ended with status 0x%x%s%s\n", c->name,
			status, why ? ": " : "", why ? why : "");
		exit(1);
	}
	jail_release(j);
	*ret_ms = t1 - t0;
	return t2 - t0;
}

/* Runs argv with stdin, stdout and stderr on /dev/null; ms from fork to exit. */
static double run_cmd(char *const argv[])
{
	double t0 = bench_now_ms();
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench-jail: `%s run ... true` failed (status 0x%x)\n", argv[0],
			status);
		exit(1);
	}
	return bench_now_ms() - t0;
}

static void bench_spawn(const char *probe, int runs)
{
	double *run_ms[N_CONFIGS], *ret_ms[N_CONFIGS], med[N_CONFIGS], med_ret[N_CONFIGS];

	for (size_t c = 0; c < N_CONFIGS; c++) {
		run_ms[c] = calloc((size_t)runs, sizeof(double));
		ret_ms[c] = calloc((size_t)runs, sizeof(double));
	}
	/* Warm-up: page cache, the seccomp filter's first compile, cgroup dirs. */
	for (size_t c = 0; c < N_CONFIGS; c++) {
		double ignored;
		spawn_once(probe, &configs[c], -1, &ignored);
	}
	for (int i = 0; i < runs; i++)
		for (size_t c = 0; c < N_CONFIGS; c++)
			run_ms[c][i] = spawn_once(probe, &configs[c], i, &ret_ms[c][i]);

	printf("spawn to program running, median of %d (jail_spawn() returned):\n", runs);
	for (size_t c = 0; c < N_CONFIGS; c++) {
		med[c] = bench_median(run_ms[c], runs);
		med_ret[c] = bench_median(ret_ms[c], runs);
		printf("  %-8s %8.2f ms  (%.2f ms)   min %.2f, max %.2f\n", configs[c].name, med[c],
		       med_ret[c], run_ms[c][0], run_ms[c][runs - 1]);
	}
	printf("jail:    +%.2f ms (jail / bare %.1fx)\n", med[1] - med[0], med[1] / med[0]);
	printf("seccomp: +%.2f ms unjailed (seccomp / bare %.2fx), +%.2f ms jailed (both / jail "
	       "%.2fx)\n",
	       med[2] - med[0], med[2] / med[0], med[3] - med[1], med[3] / med[1]);
	for (size_t c = 0; c < N_CONFIGS; c++) {
		free(run_ms[c]);
		free(ret_ms[c]);
	}
}

/*
 * The part of a QEMU spawn that a static probe does not have: finding the
 * 50-odd libraries QEMU loads (the jail mounts each).  Done per VM.
 */
static void bench_elfdeps(int runs)
{
	const char *qemu = "/usr/bin/qemu-system-x86_64";
	double *ms = calloc((size_t)runs, sizeof(double));
	size_t n = 0;

	for (int i = 0; i < runs; i++) {
		struct lg_elf_deps d;
		struct lg_err *err = NULL;
		double t0 = bench_now_ms();

		if (lg_elf_deps_resolve(qemu, NULL, &d, &err) < 0) {
			fprintf(stderr, "bench-jail: %s\n", err->msg);
			lg_err_free(&err);
			free(ms);
			return;
		}
		ms[i] = bench_now_ms() - t0;
		n = d.n;
		lg_elf_deps_free(&d);
	}
	printf("ELF dependencies of %s (%zu files), median of %d: %.2f ms\n", qemu, n, runs,
	       bench_median(ms, runs));
	free(ms);
}

static void bench_run(char *lg, int runs)
{
	char *variants[][8] = {
	    {lg, "run", "--", "true", NULL},
	    {lg, "run", "--no-jail", "--", "true", NULL},
	    {lg, "run", "--no-jail", "--seccomp", "off", "--", "true", NULL},
	};
	const char *names[] = {"default (jailed, seccomp strict)", "--no-jail",
			       "--no-jail --seccomp off"};
	double *ms[3], med[3];

	for (int v = 0; v < 3; v++)
		ms[v] = calloc((size_t)runs, sizeof(double));
	for (int i = 0; i < runs; i++)
		for (int v = 0; v < 3; v++)
			ms[v][i] = run_cmd(variants[v]);
	printf("`luminaguard run -- true`, start to exit, median of %d:\n", runs);
	for (int v = 0; v < 3; v++) {
		med[v] = bench_median(ms[v], runs);
		printf("  %-34s %8.0f ms   min %.0f, max %.0f\n", names[v], med[v], ms[v][0],
		       ms[v][runs - 1]);
	}
	printf("jailed / --no-jail %.3f (%+.0f ms)\n", med[0] / med[1], med[0] - med[1]);
	for (int v = 0; v < 3; v++)
		free(ms[v]);
}

int main(int argc, char **argv)
{
	int runs = 50, vm_runs = 5;
	int opt;

	while ((opt = getopt(argc, argv, "n:r:")) != -1) {
		if (opt == 'n')
			runs = atoi(optarg);
		else if (opt == 'r')
			vm_runs = atoi(optarg);
		else
			return 2;
	}
	if (argc - optind < 1 || argc - optind > 2 || runs < 1 || runs > 100000 || vm_runs < 1 ||
	    vm_runs > 1000) {
		fprintf(stderr, "usage: bench-jail [-n RUNS] [-r VM_RUNS] PROBE [LUMINAGUARD]\n");
		return 2;
	}
	if (geteuid() != 0)
		fprintf(stderr, "bench-jail: not root: the jail uses a user namespace and the "
				"figures are not the production (root) ones\n");
	/* "seccomp off" warns on every spawn; the figures are the output here. */
	lg_log_set_level(LG_LOG_ERROR);
	bench_spawn(argv[optind], runs);
	bench_elfdeps(runs);
	if (argc - optind == 2)
		bench_run(argv[optind + 1], vm_runs);
	return 0;
}
