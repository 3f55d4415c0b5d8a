/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration tests that boot real micro-VMs (the qemu backend, the default
 * image under $LUMINAGUARD_HOME) and run real commands through lg-agent.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/sha256.h"
#include "common/util.h"
#include "host/sandbox.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

struct capture {
	struct lg_buf out;
	struct lg_buf err;
};

static int capture_cb(void *ctx, enum lg_stream s, const uint8_t *p, size_t n)
{
	struct capture *c = ctx;
	lg_buf_append(s == LG_STREAM_STDOUT ? &c->out : &c->err, p, n);
	return 0;
}

static void capture_free(struct capture *c)
{
	lg_buf_free(&c->out);
	lg_buf_free(&c->err);
}

/* NUL-terminated copy of a capture buffer, for string asserts. */
static char *str_of(struct lg_buf *b)
{
	char *s = xmalloc(b->len + 1);
	memcpy(s, b->data ? (char *)b->data : "", b->len);
	s[b->len] = '\0';
	return s;
}

/* A sandbox of image (NULL: "default", the Debian root file system). */
static struct lg_sandbox *boot_image(const char *image)
{
	struct lg_sandbox_opts o = {.image = image, .cancel_fd = -1, .console_fd = -1};
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;

	if (lg_sandbox_create(&o, &sb, &err) < 0)
		fail_msg("sandbox: %s", err->msg);
	return sb;
}

static struct lg_sandbox *boot(void)
{
	return boot_image(NULL);
}

static int run(struct lg_sandbox *sb, char *const argv[], const char *in, size_t in_len,
	       uint32_t timeout_ms, struct capture *c, struct lg_exec_result *res)
{
	struct lg_exec_opts o = {
	    .cancel_fd = -1,
	    .argv = argv,
	    .stdin_fd = -1,
	    .stdin_data = in,
	    .stdin_len = in_len,
	    .timeout_ms = timeout_ms,
	    .on_output = capture_cb,
	    .ctx = c,
	};
	struct lg_err *err = NULL;
	int r = lg_agent_exec(lg_sandbox_agent(sb), &o, res, &err);
	if (r < 0)
		fail_msg("exec %s: %s", argv[0], err->msg);
	return r;
}

static int group_setup(void **state)
{
	*state = boot();
	return *state ? 0 : -1;
}

static int group_teardown(void **state)
{
	lg_sandbox_destroy(*state);
	return 0;
}

static void test_output_and_exit_codes(void **state)
{
	struct lg_sandbox *sb = *state;
	struct lg_exec_result res;
	struct capture c = {0};
	struct utsname host;
	char *uname_argv[] = {"uname", "-r", NULL};
	char *sh_argv[] = {"sh", "-c", "echo out; echo err >&2; exit 7", NULL};
	cleanup_free char *out = NULL;
	cleanup_free char *errs = NULL;

	run(sb, uname_argv, NULL, 0, 0, &c, &res);
	assert_int_equal(res.exit_code, 0);
	out = str_of(&c.out);
	uname(&host);
	/* the guest's own kernel, not the host's */
	assert_non_null(strstr(out, "amd64"));
	assert_null(strstr(out, host.release));
	capture_free(&c);
	free(out);

	memset(&c, 0, sizeof(c));
	run(sb, sh_argv, NULL, 0, 0, &c, &res);
	assert_int_equal(res.exit_code, 7);
	assert_int_equal(res.signal, 0);
	out = str_of(&c.out);
	errs = str_of(&c.err);
	assert_string_equal(out, "out\n");
	assert_string_equal(errs, "err\n");
	capture_free(&c);
}

static void test_signal_exit(void **state)
{
	struct lg_sandbox *sb = *state;
	struct lg_exec_result res;
	struct capture c = {0};
	char *argv[] = {"sh", "-c", "kill -TERM $$", NULL};

	run(sb, argv, NULL, 0, 0, &c, &res);
	assert_int_equal(res.signal, 15);
	capture_free(&c);
}

static void test_missing_command(void **state)
{
	struct lg_sandbox *sb = *state;
	struct lg_exec_result res;
	struct capture c = {0};
	char *argv[] = {"no-such-command-xyz", "arg", NULL};
	cleanup_free char *errs = NULL;

	run(sb, argv, NULL, 0, 0, &c, &res);
	assert_int_equal(res.exit_code, 127);
	errs = str_of(&c.err);
	assert_non_null(strstr(errs, "no-such-command-xyz"));
	assert_non_null(strstr(errs, "not found"));
	capture_free(&c);
}

static void test_stdin(void **state)
{
	struct lg_sandbox *sb = *state;
	struct lg_exec_result res;
	struct capture c = {0};
	char *argv[] = {"cat", NULL};
	const size_t n = 3 * 1024 * 1024 + 17;
	cleanup_free uint8_t *data = xmalloc(n);
	uint32_t x = 12345;

	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		data[i] = (uint8_t)(x >> 16);
	}
	run(sb, argv, (const char *)data, n, 0, &c, &res);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(c.out.len, n);
	assert_memory_equal(c.out.data, data, n);
	capture_free(&c);
}

/*
 * 3 MB and 8 MB of stdin reach EOF in a command that prints nothing until
 * then.  Before per-exec stdin credit (protocol 2) the host stopped
 * queueing stdin above 512 KiB and waited for a frame from the guest that
 * never came: wc never saw EOF and only the timeout ended it.
 */
static void test_large_stdin_eof(void **state)
{
	struct lg_sandbox *sb = *state;
	char *argv[] = {"sh", "-c", "tee /tmp/in | wc -c; sha256sum </tmp/in; rm /tmp/in", NULL};
	const size_t sizes[] = {3000000, 8u << 20};

	for (size_t k = 0; k < ARRAY_SIZE(sizes); k++) {
		size_t n = sizes[k];
		cleanup_free uint8_t *data = xmalloc(n);
		cleanup_free char *out = NULL;
		uint8_t digest[LG_SHA256_LEN];
		char want[128], hex[LG_SHA256_HEX_LEN + 1];
		struct lg_exec_result res;
		struct lg_sha256 sha;
		struct capture c = {0};
		uint32_t x = 777 + (uint32_t)k;

		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			data[i] = (uint8_t)(x >> 16);
		}
		lg_sha256_init(&sha);
		lg_sha256_update(&sha, data, n);
		lg_sha256_final(&sha, digest);
		for (size_t i = 0; i < LG_SHA256_LEN; i++)
			snprintf(hex + 2 * i, 3, "%02x", digest[i]);
		snprintf(want, sizeof(want), "%zu\n%s  -\n", n, hex);

		run(sb, argv, (const char *)data, n, 60000, &c, &res);
		assert_false(res.timed_out);
		assert_int_equal(res.exit_code, 0);
		out = str_of(&c.out);
		assert_string_equal(out, want);
		capture_free(&c);
	}
}

/* 10 MB of output arrive intact, in order, and on the right stream. */
static void test_large_output(void **state)
{
	struct lg_sandbox *sb = *state;
	struct lg_exec_result res;
	struct capture c = {0};
	const size_t total = 10 * 1024 * 1024;
	char *argv[] = {"sh", "-c", "yes 0123456789abcdef | head -c 10485760", NULL};

	run(sb, argv, NULL, 0, 0, &c, &res);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(c.out.len, total);
	assert_int_equal(c.err.len, 0);
	for (size_t i = 0; i < total; i += 17)
		if (memcmp(c.out.data + i, "0123456789abcdef\n", total - i < 17 ? total - i : 17))
			fail_msg("output corrupt at byte %zu", i);
	capture_free(&c);
}

static void test_timeout(void **state)
{
	struct lg_sandbox *sb = *state;
	struct lg_exec_result res;
	struct capture c = {0};
	char *argv[] = {"sh", "-c", "echo started; sleep 60; echo never", NULL};
	uint64_t t0 = lg_now_ms();
	cleanup_free char *out = NULL;

	run(sb, argv, NULL, 0, 1500, &c, &res);
	assert_true(res.timed_out);
	assert_int_equal(res.signal, 9);
	assert_true(lg_now_ms() - t0 < 30000);
	out = str_of(&c.out);
	assert_string_equal(out, "started\n");
	capture_free(&c);

	/* the sandbox is still usable afterwards */
	assert_int_equal(lg_agent_ping(lg_sandbox_agent(sb), NULL), 0);
}

static void test_env_and_cwd(void **state)
{
	struct lg_sandbox *sb = *state;
	struct lg_exec_result res;
	struct capture c = {0};
	char *argv[] = {"sh", "-c", "echo \"$FOO:$(pwd)\"", NULL};
	char *env[] = {"FOO=bar baz", NULL};
	struct lg_exec_opts o = {.cancel_fd = -1,
				 .argv = argv,
				 .env = env,
				 .cwd = "/tmp",
				 .stdin_fd = -1,
				 .on_output = capture_cb,
				 .ctx = &c};
	struct lg_err *err = NULL;
	cleanup_free char *out = NULL;

	assert_int_equal(lg_agent_exec(lg_sandbox_agent(sb), &o, &res, &err), 0);
	out = str_of(&c.out);
	assert_string_equal(out, "bar baz:/tmp\n");
	capture_free(&c);

	/* a working directory that does not exist is an error, not a silent / */
	memset(&c, 0, sizeof(c));
	o.cwd = "/does/not/exist";
	int r = lg_agent_exec(lg_sandbox_agent(sb), &o, &res, &err);
	if (r == 0) {
		assert_int_not_equal(res.exit_code, 0);
	} else {
		assert_non_null(strstr(err->msg, "/does/not/exist"));
		lg_err_free(&err);
	}
	capture_free(&c);
}

static void test_files(void **state)
{
	struct lg_sandbox *sb = *state;
	struct lg_err *err = NULL;
	const size_t n = 2 * 1024 * 1024 + 3;
	cleanup_free uint8_t *data = xmalloc(n);
	uint8_t *back = NULL;
	size_t back_len = 0;
	struct lg_dirent *ents = NULL;
	size_t count = 0;
	struct lg_stat st;

	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 31 + (i >> 11));
	if (lg_agent_write_file(lg_sandbox_agent(sb), "/tmp/t/sub/blob.bin", data, n, 0600,
				LG_WRITE_MKDIRS, &err) < 0)
		fail_msg("write: %s", err->msg);
	if (lg_agent_read_file(lg_sandbox_agent(sb), "/tmp/t/sub/blob.bin", 64 << 20, &back,
			       &back_len, &err) < 0)
		fail_msg("read: %s", err->msg);
	assert_int_equal(back_len, n);
	assert_memory_equal(back, data, n);
	free(back);

	assert_int_equal(lg_agent_stat(lg_sandbox_agent(sb), "/tmp/t/sub/blob.bin", &st, &err), 0);
	assert_int_equal(st.ftype, LG_FTYPE_FILE);
	assert_int_equal(st.size, n);
	assert_int_equal(st.mode & 0777, 0600);

	assert_int_equal(lg_agent_mkdir(lg_sandbox_agent(sb), "/tmp/t/a/b/c", 0755, true, &err), 0);
	assert_int_equal(lg_agent_list_dir(lg_sandbox_agent(sb), "/tmp/t", &ents, &count, &err), 0);
	assert_int_equal(count, 2);
	bool saw_a = false, saw_sub = false;
	for (size_t i = 0; i < count; i++) {
		saw_a |= strcmp(ents[i].name, "a") == 0 && ents[i].ftype == LG_FTYPE_DIR;
		saw_sub |= strcmp(ents[i].name, "sub") == 0;
	}
	assert_true(saw_a && saw_sub);
	lg_dirents_free(ents, count);

	/* reading what is not there: a clean error naming the path */
	assert_true(lg_agent_read_file(lg_sandbox_agent(sb), "/tmp/t/nope", 1024, &back, &back_len,
				       &err) < 0);
	assert_non_null(strstr(err->msg, "/tmp/t/nope"));
	lg_err_free(&err);

	assert_int_equal(lg_agent_remove(lg_sandbox_agent(sb), "/tmp/t", true, &err), 0);
	assert_true(lg_agent_stat(lg_sandbox_agent(sb), "/tmp/t", &st, &err) < 0);
	lg_err_free(&err);

	/* the agent channel is still healthy after errors */
	assert_int_equal(lg_agent_ping(lg_sandbox_agent(sb), NULL), 0);
}

/* ---- several VMs at once, and nothing left behind ---- */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Processes whose parent is us: a VMM that outlived its sandbox. */
static int count_children(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;
	pid_t self = getpid();

	while ((de = readdir(d)) != NULL) {
		char path[300], buf[512];
		FILE *f;
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "re");
		if (f == NULL)
			continue;
		if (fgets(buf, sizeof(buf), f) != NULL) {
			char *rp = strrchr(buf, ')');
			int ppid = 0;
			if (rp != NULL && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == self)
				n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

struct par {
	int idx;
	char out[128];
	int rc;
};

static void *par_main(void *arg)
{
	struct par *p = arg;
	struct lg_sandbox_opts o = {.cancel_fd = -1, .console_fd = -1};
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;
	struct capture c = {0};
	struct lg_exec_result res;
	char script[64];
	char *argv[] = {"sh", "-c", script, NULL};
	struct lg_exec_opts eo = {
	    .cancel_fd = -1, .argv = argv, .stdin_fd = -1, .on_output = capture_cb, .ctx = &c};

	snprintf(script, sizeof(script), "echo vm%d; exit %d", p->idx, p->idx);
	p->rc = -1;
	if (lg_sandbox_create(&o, &sb, &err) < 0) {
		snprintf(p->out, sizeof(p->out), "create: %s", err->msg);
		lg_err_free(&err);
		return NULL;
	}
	if (lg_agent_exec(lg_sandbox_agent(sb), &eo, &res, &err) == 0) {
		p->rc = res.exit_code;
		snprintf(p->out, sizeof(p->out), "%.*s", (int)c.out.len, (char *)c.out.data);
	} else {
		snprintf(p->out, sizeof(p->out), "exec: %s", err->msg);
		lg_err_free(&err);
	}
	capture_free(&c);
	lg_sandbox_destroy(sb);
	return NULL;
}

/*
 * Only the host ends a sandbox: the agent runs every command without
 * CAP_SYS_BOOT, so poweroff -f, reboot -f and halt -f fail in the guest,
 * and the VM answers the next command.  (Before, they powered it off.)
 */
static void test_poweroff_refused(void **state)
{
	/* busybox's poweroff makes the reboot(2) call itself (Debian's needs systemd). */
	struct lg_sandbox *sb = boot_image("tiny");
	char *cmds[][3] = {{"poweroff", "-f", NULL}, {"reboot", "-f", NULL}, {"halt", "-f", NULL}};
	char *echo[] = {"echo", "alive", NULL};
	cleanup_free char *out = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
		struct lg_exec_result res;
		struct capture c = {0};

		run(sb, cmds[i], NULL, 0, 20000, &c, &res);
		if (res.exit_code == 0 && res.signal == 0)
			fail_msg("%s -f succeeded in the guest", cmds[i][0]);
		capture_free(&c);
	}
	struct lg_exec_result res;
	struct capture c = {0};
	run(sb, echo, NULL, 0, 20000, &c, &res);
	assert_int_equal(res.exit_code, 0);
	out = str_of(&c.out);
	assert_string_equal(out, "alive\n");
	capture_free(&c);
	lg_sandbox_destroy(sb);
}

/*
 * The backend's kill op ends the VMM through its pidfd, and its exit fd
 * says so at once: what a service watching its VMs (issue 10) relies on
 * to notice a dead VMM within a second.  The next command fails instead
 * of hanging, and destroy leaves nothing.
 */
static void test_kill_op(void **state)
{
	struct lg_sandbox *sb = boot_image("tiny");
	char *echo[] = {"echo", "alive", NULL};
	struct lg_exec_result res;
	struct capture c = {0};
	int efd = lg_sandbox_exit_fd(sb);
	pid_t pid = lg_sandbox_pid(sb);
	uint64_t t0;

	(void)state;
	/* As every front end does: a write to the dead VM's channel is EPIPE, not a death. */
	signal(SIGPIPE, SIG_IGN);
	assert_true(efd >= 0);
	struct pollfd pfd = {.fd = efd, .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 0), 0); /* running: not readable */
	t0 = lg_now_ms();
	assert_int_equal(lg_sandbox_kill(sb), 0);
	assert_int_equal(poll(&pfd, 1, 1000), 1);
	assert_true(lg_now_ms() - t0 < 1000);
	struct lg_exec_opts o = {
	    .cancel_fd = -1, .argv = echo, .stdin_fd = -1, .on_output = capture_cb, .ctx = &c};
	struct lg_err *err = NULL;
	assert_true(lg_agent_exec(lg_sandbox_agent(sb), &o, &res, &err) < 0);
	lg_err_free(&err);
	capture_free(&c);
	lg_sandbox_destroy(sb);
	assert_int_equal(kill(pid, 0), -1); /* reaped by destroy, nothing left */
}

static void test_four_vms_at_once(void **state)
{
	pthread_t t[4];
	struct par p[4];
	int fds_before = count_fds();

	for (int i = 0; i < 4; i++) {
		p[i].idx = i + 1;
		pthread_create(&t[i], NULL, par_main, &p[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 4; i++) {
		char want[16];
		snprintf(want, sizeof(want), "vm%d\n", i + 1);
		if (p[i].rc != i + 1 || strcmp(p[i].out, want) != 0)
			fail_msg("vm %d: rc %d, output '%s'", i + 1, p[i].rc, p[i].out);
	}
	assert_int_equal(count_children(), 0);
	assert_int_equal(count_fds(), fds_before);
}

static void test_nothing_left_behind(void **state)
{
	int fds_before = count_fds();
	struct lg_sandbox *sb = boot();
	struct lg_exec_result res;
	struct capture c = {0};
	char *argv[] = {"true", NULL};

	run(sb, argv, NULL, 0, 0, &c, &res);
	capture_free(&c);
	assert_int_equal(count_children(), 1); /* the VMM */
	lg_sandbox_destroy(sb);
	assert_int_equal(count_children(), 0);
	assert_int_equal(count_fds(), fds_before);
}

int main(void)
{
	const struct CMUnitTest shared_vm[] = {
	    cmocka_unit_test(test_output_and_exit_codes), cmocka_unit_test(test_signal_exit),
	    cmocka_unit_test(test_missing_command),	  cmocka_unit_test(test_stdin),
	    cmocka_unit_test(test_large_output),	  cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_env_and_cwd),		  cmocka_unit_test(test_files),
	    cmocka_unit_test(test_large_stdin_eof),
	};
	const struct CMUnitTest own_vms[] = {
	    cmocka_unit_test(test_poweroff_refused),
	    cmocka_unit_test(test_kill_op),
	    cmocka_unit_test(test_four_vms_at_once),
	    cmocka_unit_test(test_nothing_left_behind),
	};
	int failed =
	    cmocka_run_group_tests_name("shared-vm", shared_vm, group_setup, group_teardown);
	failed += cmocka_run_group_tests_name("own-vms", own_vms, NULL, NULL);
	return failed;
}
