/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the tar reader, then the extractor on the same bytes into a fresh
 * directory: a root file system tarball is hostile input, and nothing in it
 * may crash the reader, hang it, or put anything outside the destination.
 * A sentinel directory beside the destination is checked after every run;
 * any change, or anything new beside it, aborts.
 */
#include "common/err.h"
#include "common/util.h"
#include "image/tar.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[] = "/tmp/lg-fuzz-tar-XXXXXX";
static char *dest, *sentinel, *keep;
static int memfd = -1;

static void cleanup(void)
{
	lg_rm_rf(base);
}

static void setup(void)
{
	int fd;

	if (mkdtemp(base) == NULL)
		abort();
	dest = xasprintf("%s/dest", base);
	sentinel = xasprintf("%s/sentinel", base);
	keep = xasprintf("%s/keep", sentinel);
	if (mkdir(sentinel, 0755) < 0)
		abort();
	fd = open(keep, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, "sentinel", 8) != 8)
		abort();
	close(fd);
	memfd = memfd_create("fuzz-tar", MFD_CLOEXEC);
	if (memfd < 0)
		abort();
	atexit(cleanup);
}

static size_t count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	size_t n = 0;

	if (d == NULL)
		abort();
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Nothing escaped: base holds dest and sentinel only, the sentinel as made. */
static void check_contained(void)
{
	char buf[16] = {0};
	struct stat st;
	int fd;

	if (count_dir(base) != 2 || count_dir(sentinel) != 1)
		abort();
	if (lstat(keep, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
	    (st.st_mode & 07777) != 0644)
		abort();
	fd = open(keep, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || read(fd, buf, sizeof(buf)) != 8 || memcmp(buf, "sentinel", 8) != 0)
		abort();
	close(fd);
}

struct mem {
	const uint8_t *p;
	size_t n, off;
};

static ssize_t mem_read(void *ctx, void *buf, size_t n)
{
	struct mem *m = ctx;
	size_t k = m->n - m->off;

	/* Short reads of uneven sizes, as from a pipe. */
	if (k > n)
		k = n;
	if (k > 1 + (m->off % 509))
		k = 1 + (m->off % 509);
	memcpy(buf, m->p + m->off, k);
	m->off += k;
	return (ssize_t)k;
}

static void fuzz_reader(const uint8_t *data, size_t size)
{
	struct mem m = {.p = data, .n = size};
	struct lg_tar_reader *r = lg_tar_reader_new(mem_read, &m);
	struct lg_tar_entry e;
	struct lg_err *err = NULL;
	uint8_t buf[700];
	int ret;

	while ((ret = lg_tar_next(r, &e, &err)) == 1) {
		if (e.path[0] == '\0' || strlen(e.path) > LG_TAR_NAME_MAX ||
		    strlen(e.linkname) > LG_TAR_NAME_MAX || e.mode > 07777 ||
		    (e.type != LG_TAR_FILE && e.size != 0))
			abort();
		/* Read some entries' data, skip others. */
		if (e.size & 1) {
			ssize_t d;

			while ((d = lg_tar_read_data(r, buf, sizeof(buf), &err)) > 0)
				;
			if (d < 0) {
				/* the data's error ends the archive as lg_tar_next's would */
				ret = (int)d;
				break;
			}
		}
		if (err)
			abort(); /* an error set without a negative return */
	}
	if ((ret < 0) != (err != NULL))
		abort();
	if (err && (err->errnum <= 0 || strchr(err->msg, '\n')))
		abort();
	lg_err_free(&err);
	lg_tar_reader_free(r);
}

static void fuzz_extract(const uint8_t *data, size_t size)
{
	struct lg_tar_opts o = {
	    .max_total_bytes = 1 << 20,
	    .max_entries = 256,
	    .no_openat2 = size & 1, /* both resolvers */
	};
	struct lg_tar_stats st;
	struct lg_err *err = NULL;
	int ret;

	if (mkdir(dest, 0755) < 0)
		abort();
	if (ftruncate(memfd, 0) < 0 || lg_write_all(memfd, data, size) != (ssize_t)size ||
	    lseek(memfd, 0, SEEK_SET) != 0)
		abort();
	ret = lg_tar_extract(memfd, dest, &o, &st, &err);
	if ((ret < 0) != (err != NULL))
		abort();
	if (err) {
		if (err->errnum <= 0)
			abort();
		for (const char *c = err->msg; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				abort();
	}
	lg_err_free(&err);
	check_contained();
	if (lg_rm_rf(dest) < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (memfd < 0)
		setup();
	fuzz_reader(data, size);
	fuzz_extract(data, size);
	return 0;
}
