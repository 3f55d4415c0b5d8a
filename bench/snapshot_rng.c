/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Do clones of one snapshot share their RNG output, with and without ADOPT?
 * (docs/snapshots.md)
 *
 *   snapshot-rng DIR SETTLE_S
 *
 * Boots `tiny` with its RAM in DIR/ram, waits SETTLE_S seconds, saves the
 * device state to DIR/state, then restores it twice without ADOPT and
 * twice with it, and prints 16 bytes of each clone's /dev/urandom.  Run it
 * with an image whose agent skips the reseed to see what the seed alone does.
 */
#include "common/log.h"
#include "common/util.h"
#include "host/sandbox.h"
#include "host/sandbox_internal.h"
#include "host/snapshot.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cb(void *ctx, enum lg_stream s, const uint8_t *p, size_t n)
{
	if (s == LG_STREAM_STDOUT)
		lg_buf_append(ctx, p, n);
	return 0;
}

static void rnd(struct lg_agent *a, char out[200])
{
	char *argv[] = {(char *)"/bin/sh", (char *)"-c",
			(char *)"od -An -tx1 -N16 /dev/urandom | tr -d ' \\n'", NULL};
	struct lg_buf b = {0};
	struct lg_exec_opts o = {
	    .argv = argv, .stdin_fd = -1, .cancel_fd = -1, .on_output = cb, .ctx = &b};
	struct lg_exec_result res;
	struct lg_err *err = NULL;
	if (lg_agent_exec(a, &o, &res, &err) < 0) {
		fprintf(stderr, "exec: %s\n", err->msg);
		exit(1);
	}
	snprintf(out, 200, "%.*s", (int)b.len, (char *)b.data);
	lg_buf_free(&b);
}

int main(int argc, char **argv)
{
	const char *dir;
	int settle;
	struct lg_sandbox_opts o = {.image = "tiny", .cancel_fd = -1, .console_fd = -1};
	struct lg_sandbox_plan p;
	struct lg_err *err = NULL;
	struct lg_sandbox *sb;
	char *ram, *state;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: snapshot-rng DIR SETTLE_S\n");
		return 2;
	}
	dir = argv[1];
	settle = atoi(argv[2]);
	ram = xasprintf("%s/ram", dir);
	state = xasprintf("%s/state", dir);
	lg_log_init();
	mkdir(dir, 0700);
	if (lg_sandbox_plan(&o, &p, &err) < 0) {
		fprintf(stderr, "%s\n", err->msg);
		return 1;
	}
	fd = open(ram, O_RDWR | O_CREAT | O_TRUNC, 0666);
	fchmod(fd, 0666);
	if (ftruncate(fd, (off_t)(hv_guest_ram_mib(&p.cfg) << 20)) < 0)
		return 1;
	close(fd);
	if (lg_sandbox_create_shared_ram(&o, ram, &sb, &err) < 0) {
		fprintf(stderr, "%s\n", err->msg);
		return 1;
	}
	sleep(settle);
	fd = open(state, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (lg_sandbox_save_state(sb, fd, &err) < 0) {
		fprintf(stderr, "%s\n", err->msg);
		return 1;
	}
	close(fd);
	lg_sandbox_destroy(sb);
	for (int adopt = 0; adopt < 2; adopt++) {
		for (int i = 0; i < 2; i++) {
			struct vm_config cfg = p.cfg;
			struct vm *vm;
			struct lg_agent *a;
			char out[200];
			/* A restore maps a sealed memfd of the RAM file, as lg_snapshot_open makes.
			 */
			if (lg_snapshot_ram_memfd(ram, &cfg.ram_fd, &err) < 0) {
				fprintf(stderr, "%s\n", err->msg);
				return 1;
			}
			cfg.incoming = true;
			if (p.backend->spawn(&cfg, &vm, &err) < 0) {
				fprintf(stderr, "%s\n", err->msg);
				return 1;
			}
			fd = open(state, O_RDONLY);
			if (p.backend->load_state(vm, fd, 10000, &err) < 0) {
				fprintf(stderr, "%s\n", err->msg);
				return 1;
			}
			close(fd);
			if (lg_agent_attach(p.backend->agent_fd(vm), -1, 10000, &a, &err) < 0) {
				fprintf(stderr, "%s\n", err->msg);
				return 1;
			}
			if (adopt && lg_agent_adopt(a, NULL, NULL, &err) < 0) {
				fprintf(stderr, "%s\n", err->msg);
				return 1;
			}
			rnd(a, out);
			printf("settle %d s, %s, clone %d: %s\n", settle,
			       adopt ? "ADOPT" : "no ADOPT", i, out);
			lg_agent_free(a);
			p.backend->destroy(vm);
			close(cfg.ram_fd);
		}
	}
	return 0;
}
