/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the ELF dependency resolver: real binaries of this host,
 * ld.so.conf includes, missing libraries, and broken or hostile files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "jail/elfdeps.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QEMU	"/usr/bin/qemu-system-x86_64"
#define TRUE	"/bin/true"
#define BUSYBOX "/bin/busybox"

struct fixture {
	char dir[64];
};

static int setup(void **state)
{
	struct fixture *f = xzalloc(sizeof(*f));

	strcpy(f->dir, "/tmp/lg-test-elfdeps-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	lg_rm_rf(f->dir);
	free(f);
	return 0;
}

static char *slurp(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = xmalloc((size_t)st.st_size + 1);
	assert_int_equal(lg_read_all(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void spit(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);

	assert_true(fd >= 0);
	assert_int_equal(lg_write_all(fd, buf, len), (ssize_t)len);
	close(fd);
}

static const struct lg_elf_file *find_soname(const struct lg_elf_deps *d, const char *soname)
{
	for (size_t i = 0; i < d->n; i++) {
		const char *slash = strrchr(d->files[i].jail_path, '/');
		if (slash != NULL && strcmp(slash + 1, soname) == 0)
			return &d->files[i];
	}
	return NULL;
}

static void check_well_formed(const struct lg_elf_deps *d)
{
	for (size_t i = 0; i < d->n; i++) {
		char *real = realpath(d->files[i].host_path, NULL);
		assert_non_null(real);
		assert_string_equal(real, d->files[i].host_path);
		free(real);
		assert_true(d->files[i].jail_path[0] == '/');
		for (size_t j = i + 1; j < d->n; j++)
			assert_string_not_equal(d->files[i].jail_path, d->files[j].jail_path);
	}
}

static void test_qemu(void **state)
{
	struct lg_elf_deps d;
	struct lg_err *err = NULL;
	const struct lg_elf_file *glib;

	(void)state;
	if (access(QEMU, X_OK) != 0)
		skip();
	assert_int_equal(lg_elf_deps_resolve(QEMU, NULL, &d, &err), 0);
	assert_null(err);
	assert_true(d.n > 10);
	assert_string_equal(d.files[0].jail_path, "/lib64/ld-linux-x86-64.so.2");
	glib = find_soname(&d, "libglib-2.0.so.0");
	assert_non_null(glib);
	assert_non_null(find_soname(&d, "libc.so.6"));
	check_well_formed(&d);
	/* The directory of every library is on the search path. */
	{
		cleanup_free char *dir = xstrdup(glib->jail_path);
		*strrchr(dir, '/') = '\0';
		assert_non_null(strstr(d.library_path, dir));
	}
	lg_elf_deps_free(&d);
}

static void test_static(void **state)
{
	struct lg_elf_deps d;
	struct lg_err *err = NULL;

	(void)state;
	if (access(BUSYBOX, X_OK) != 0)
		skip();
	assert_int_equal(lg_elf_deps_resolve(BUSYBOX, NULL, &d, &err), 0);
	assert_int_equal(d.n, 0);
	assert_string_equal(d.library_path, "");
	lg_elf_deps_free(&d);
}

static void expect_error(const char *path, const char *needle)
{
	struct lg_elf_deps d;
	struct lg_err *err = NULL;

	assert_true(lg_elf_deps_resolve(path, NULL, &d, &err) < 0);
	assert_non_null(err);
	if (strstr(err->msg, needle) == NULL)
		fail_msg("error '%s' does not say '%s'", err->msg, needle);
	assert_int_equal(d.n, 0);
	lg_err_free(&err);
}

static void test_broken_files(void **state)
{
	struct fixture *f = *state;
	cleanup_free char *path = xasprintf("%s/bad", f->dir);
	size_t len;
	cleanup_free char *elf = slurp(TRUE, &len);

	spit(path, "hello, world\n", 13);
	expect_error(path, "not an ELF file");
	spit(path, "", 0);
	expect_error(path, "truncated");
	spit(path, elf, 40); /* inside the ELF header */
	expect_error(path, "truncated");
	spit(path, elf, 200); /* header fine, program headers cut */
	expect_error(path, "program header table outside the file");
	elf[4] = ELFCLASS32;
	spit(path, elf, len);
	expect_error(path, "64-bit little-endian x86_64");
	expect_error("/nonexistent/binary", "/nonexistent/binary");
}

/*
 * Hostile input: every single-byte change in the headers and the dynamic
 * section region of a real binary either resolves or fails cleanly.
 */
static void test_corrupted(void **state)
{
	struct fixture *f = *state;
	cleanup_free char *path = xasprintf("%s/mut", f->dir);
	size_t len;
	cleanup_free char *elf = slurp(TRUE, &len);
	static const unsigned char vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
	size_t n_ok = 0, n_err = 0;

	srandom(42);
	for (size_t i = 0; i < 3000; i++) {
		size_t off = i < 1024 ? i % 1024 : (size_t)random() % len;
		unsigned char save = (unsigned char)elf[off];
		struct lg_elf_deps d;
		struct lg_err *err = NULL;

		elf[off] = (char)vals[i % ARRAY_SIZE(vals)];
		spit(path, elf, len);
		elf[off] = (char)save;
		if (lg_elf_deps_resolve(path, NULL, &d, &err) == 0) {
			n_ok++;
			lg_elf_deps_free(&d);
		} else {
			assert_non_null(err);
			n_err++;
			lg_err_free(&err);
		}
	}
	assert_true(n_ok > 0);
	assert_true(n_err > 0);
}

static void test_missing_library(void **state)
{
	struct fixture *f = *state;
	cleanup_free char *path = xasprintf("%s/needs-missing", f->dir);
	size_t len;
	cleanup_free char *elf = slurp(TRUE, &len);
	char *p = memmem(elf, len, "libc.so.6", 10);

	assert_non_null(p);
	memcpy(p, "libq.so.6", 9);
	spit(path, elf, len);
	expect_error(path, "library libq.so.6 (needed by");
}

static void test_ldconf_include(void **state)
{
	struct fixture *f = *state;
	cleanup_free char *conf = xasprintf("%s/ld.so.conf", f->dir);
	cleanup_free char *confd = xasprintf("%s/conf.d", f->dir);
	cleanup_free char *sub = xasprintf("%s/conf.d/a.conf", f->dir);
	cleanup_free char *libdir = xasprintf("%s/libs", f->dir);
	cleanup_free char *libc = xasprintf("%s/libs/libc.so.6", f->dir);
	cleanup_free char *body =
	    xasprintf("# a comment\n  /nonexistent/dir\n%s  # trailing\n", libdir);
	struct lg_elf_deps d;
	struct lg_err *err = NULL;
	const struct lg_elf_file *lf;
	size_t len;
	cleanup_free char *bytes = NULL;

	/* Only the system's libc.so.6 is known under this name on every host. */
	lf = NULL;
	assert_int_equal(lg_elf_deps_resolve(TRUE, "/nonexistent.conf", &d, &err), 0);
	lf = find_soname(&d, "libc.so.6");
	assert_non_null(lf);
	bytes = slurp(lf->host_path, &len);
	lg_elf_deps_free(&d);

	assert_int_equal(mkdir(confd, 0755), 0);
	assert_int_equal(mkdir(libdir, 0755), 0);
	spit(libc, bytes, len);
	spit(conf, "include conf.d/*.conf\n", 22);
	spit(sub, body, strlen(body));

	/* Directories of an included file come before the default ones. */
	assert_int_equal(lg_elf_deps_resolve(TRUE, conf, &d, &err), 0);
	lf = find_soname(&d, "libc.so.6");
	assert_non_null(lf);
	assert_string_equal(lf->jail_path, libc);
	assert_non_null(strstr(d.library_path, libdir));
	check_well_formed(&d);
	lg_elf_deps_free(&d);

	/* A 32-bit (or otherwise foreign) file of the right name is skipped, as ld.so does. */
	bytes[4] = ELFCLASS32;
	spit(libc, bytes, len);
	assert_int_equal(lg_elf_deps_resolve(TRUE, conf, &d, &err), 0);
	lf = find_soname(&d, "libc.so.6");
	assert_non_null(lf);
	assert_string_not_equal(lf->jail_path, libc);
	lg_elf_deps_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_qemu),
	    cmocka_unit_test(test_static),
	    cmocka_unit_test_setup_teardown(test_broken_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_library, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ldconf_include, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
