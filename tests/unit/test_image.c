/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the guest image builder: SHA-256, cpio, vmlinux, kmod, the store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/env.h"
#include "common/err.h"
#include "common/paths.h"
#include "common/sha256.h"
#include "common/util.h"
#include "image/cpio.h"
#include "image/image.h"
#include "image/kmod.h"
#include "image/spec.h"
#include "image/vmlinux.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---- */

static uint8_t *read_fd_all(int fd, size_t *len)
{
	struct stat st;
	uint8_t *buf;

	assert_int_equal(fstat(fd, &st), 0);
	buf = xmalloc((size_t)st.st_size + 1);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	*len = (size_t)st.st_size;
	return buf;
}

static uint8_t *read_path_all(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t *buf;

	assert_true(fd >= 0);
	buf = read_fd_all(fd, len);
	close(fd);
	return buf;
}

static void write_path(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);

	assert_true(fd >= 0);
	assert_int_equal(lg_write_all(fd, data, len), (ssize_t)len);
	close(fd);
}

static char *make_tmpdir(void)
{
	char *d = xstrdup("/tmp/lg-test-image-XXXXXX");
	assert_non_null(mkdtemp(d));
	return d;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* ---- SHA-256 ---- */

static void check_digest(const void *data, size_t len, const char *want)
{
	uint8_t d[LG_SHA256_LEN];
	char hex[LG_SHA256_HEX_LEN + 1];

	lg_sha256(data, len, d);
	lg_sha256_hex(d, hex);
	assert_string_equal(hex, want);
}

static void test_sha256_vectors(void **state)
{
	static const char m448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	char *million = xmalloc(1000000);

	check_digest("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_digest("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_digest(m448, strlen(m448),
		     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	memset(million, 'a', 1000000);
	check_digest(million, 1000000,
		     "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

	/* The same in odd-sized pieces, across block boundaries. */
	{
		struct lg_sha256 ctx;
		uint8_t d[LG_SHA256_LEN];
		char hex[LG_SHA256_HEX_LEN + 1];
		size_t off = 0, step = 1;

		lg_sha256_init(&ctx);
		while (off < 1000000) {
			size_t n = step < 1000000 - off ? step : 1000000 - off;
			lg_sha256_update(&ctx, million + off, n);
			off += n;
			step = step * 3 % 157 + 1;
		}
		lg_sha256_final(&ctx, d);
		lg_sha256_hex(d, hex);
		assert_string_equal(
		    hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	}
	free(million);
}

static void test_sha256_file(void **state)
{
	char *dir = make_tmpdir();
	char *path = xasprintf("%s/f", dir);
	char hex[LG_SHA256_HEX_LEN + 1];
	struct lg_err *err = NULL;

	write_path(path, "abc", 3);
	assert_int_equal(lg_sha256_file(path, hex, &err), 0);
	assert_string_equal(hex,
			    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	unlink(path);
	assert_true(lg_sha256_file(path, hex, &err) < 0);
	assert_non_null(err);
	assert_int_equal(err->errnum, ENOENT);
	lg_err_free(&err);
	lg_rm_rf(dir);
	free(path);
	free(dir);
}

/* ---- cpio ---- */

struct cpio_entry {
	char name[512];
	uint32_t ino, mode, uid, gid, nlink, mtime, rmajor, rminor;
	const uint8_t *data;
	size_t size;
};

static uint32_t hex8(const uint8_t *p)
{
	char tmp[9];
	char *end;
	unsigned long v;

	memcpy(tmp, p, 8);
	tmp[8] = '\0';
	v = strtoul(tmp, &end, 16);
	assert_true(end == tmp + 8);
	return (uint32_t)v;
}

/* Parses a newc archive, checking alignment; returns the entry count (trailer excluded). */
static size_t parse_cpio(const uint8_t *buf, size_t len, struct cpio_entry *out, size_t max)
{
	size_t off = 0, n = 0;

	assert_int_equal(len % 4, 0);
	for (;;) {
		struct cpio_entry e;
		uint32_t namesize;

		assert_int_equal(off % 4, 0);
		assert_true(off + 110 <= len);
		assert_memory_equal(buf + off, "070701", 6);
		e.ino = hex8(buf + off + 6);
		e.mode = hex8(buf + off + 14);
		e.uid = hex8(buf + off + 22);
		e.gid = hex8(buf + off + 30);
		e.nlink = hex8(buf + off + 38);
		e.mtime = hex8(buf + off + 46);
		e.size = hex8(buf + off + 54);
		e.rmajor = hex8(buf + off + 78);
		e.rminor = hex8(buf + off + 86);
		namesize = hex8(buf + off + 94);
		assert_int_equal(hex8(buf + off + 102), 0); /* check */
		off += 110;
		assert_true(namesize >= 2 && namesize < sizeof(e.name) && off + namesize <= len);
		assert_int_equal(buf[off + namesize - 1], '\0');
		memcpy(e.name, buf + off, namesize);
		off = (off + namesize + 3) & ~(size_t)3;
		assert_true(off + e.size <= len);
		e.data = buf + off;
		off = (off + e.size + 3) & ~(size_t)3;
		if (strcmp(e.name, "TRAILER!!!") == 0) {
			assert_int_equal(off, len);
			return n;
		}
		assert_int_equal(e.uid, 0);
		assert_int_equal(e.gid, 0);
		assert_int_equal(e.mtime, 0);
		assert_true(n < max);
		out[n++] = e;
	}
}

static const struct cpio_entry *cpio_find(const struct cpio_entry *e, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(e[i].name, name) == 0)
			return &e[i];
	return NULL;
}

static void test_cpio_roundtrip(void **state)
{
	char *dir = make_tmpdir();
	char *host = xasprintf("%s/host-file", dir);
	char *arch = xasprintf("%s/a.cpio", dir);
	struct lg_err *err = NULL;
	struct cpio_entry ents[32];
	const struct cpio_entry *e;
	struct lg_cpio *c;
	uint8_t *buf;
	size_t len, n;
	int fd;

	write_path(host, "hello, world", 12);
	fd = open(arch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	c = lg_cpio_new(fd);
	assert_int_equal(lg_cpio_add_dir(c, "/dev", 0755, &err), 0);
	assert_int_equal(lg_cpio_add_chardev(c, "/dev/console", 0600, 5, 1, &err), 0);
	assert_int_equal(lg_cpio_add_data(c, "/a", 0644, "x", 1, &err), 0);
	assert_int_equal(lg_cpio_add_data(c, "/ab", 0644, "xy", 2, &err), 0);
	assert_int_equal(lg_cpio_add_data(c, "/abc", 0600, "xyz", 3, &err), 0);
	assert_int_equal(lg_cpio_add_data(c, "/empty", 0644, "", 0, &err), 0);
	assert_int_equal(lg_cpio_add_file(c, "/deep/er/file", 0755, host, &err), 0);
	assert_int_equal(lg_cpio_add_symlink(c, "/deep/link", "er/file", &err), 0);
	assert_null(err);

	/* Refused: duplicates, relative paths, dot components, missing host files. */
	assert_true(lg_cpio_add_data(c, "/a", 0644, "x", 1, &err) < 0);
	assert_non_null(strstr(err->msg, "twice"));
	lg_err_free(&err);
	assert_true(lg_cpio_add_dir(c, "rel", 0755, &err) < 0);
	lg_err_free(&err);
	assert_true(lg_cpio_add_dir(c, "/x/../y", 0755, &err) < 0);
	lg_err_free(&err);
	assert_true(lg_cpio_add_dir(c, "/x//y", 0755, &err) < 0);
	lg_err_free(&err);
	assert_true(lg_cpio_add_dir(c, "/", 0755, &err) < 0);
	lg_err_free(&err);
	assert_true(lg_cpio_add_file(c, "/nope", 0644, "/nonexistent/file", &err) < 0);
	assert_int_equal(err->errnum, ENOENT);
	lg_err_free(&err);

	assert_int_equal(lg_cpio_finish(c, &err), 0);
	assert_true(lg_cpio_finish(c, &err) < 0);
	lg_err_free(&err);
	assert_true(lg_cpio_add_dir(c, "/late", 0755, &err) < 0);
	lg_err_free(&err);
	buf = read_fd_all(fd, &len);
	assert_int_equal(len, lg_cpio_size(c));
	lg_cpio_free(c);
	close(fd);

	n = parse_cpio(buf, len, ents, ARRAY_SIZE(ents));
	assert_int_equal(n, 10);
	/* Names are stored without the leading slash; parents come first. */
	assert_string_equal(ents[0].name, "dev");
	assert_int_equal(ents[0].mode, 040755);
	assert_int_equal(ents[0].nlink, 2);
	e = cpio_find(ents, n, "dev/console");
	assert_non_null(e);
	assert_int_equal(e->mode, 020600);
	assert_int_equal(e->rmajor, 5);
	assert_int_equal(e->rminor, 1);
	e = cpio_find(ents, n, "abc");
	assert_int_equal(e->mode, 0100600);
	assert_int_equal(e->size, 3);
	assert_memory_equal(e->data, "xyz", 3);
	assert_int_equal(cpio_find(ents, n, "empty")->size, 0);
	assert_string_equal(ents[6].name, "deep");
	assert_string_equal(ents[7].name, "deep/er");
	assert_int_equal(ents[7].mode, 040755);
	assert_string_equal(ents[8].name, "deep/er/file");
	assert_int_equal(ents[8].mode, 0100755);
	assert_memory_equal(ents[8].data, "hello, world", 12);
	e = cpio_find(ents, n, "deep/link");
	assert_int_equal(e->mode, 0120777);
	assert_int_equal(e->size, 7);
	assert_memory_equal(e->data, "er/file", 7);
	/* Distinct inode numbers. */
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			assert_int_not_equal(ents[i].ino, ents[j].ino);

	free(buf);
	lg_rm_rf(dir);
	free(host);
	free(arch);
	free(dir);
}

/* ---- synthetic ELF files ---- */

/*
 * An x86-64 ET_EXEC with one PT_NOTE segment (a PVH "Xen" note when pvh),
 * followed by filler, like a tiny vmlinux.  Also passes as a static binary.
 */
static uint8_t *make_vmlinux(bool pvh, size_t total, size_t *len)
{
	size_t note_off = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr);
	uint8_t *buf = xzalloc(total);
	Elf64_Ehdr eh = {0};
	Elf64_Phdr ph = {0};
	uint8_t *note = buf + note_off;

	assert_true(total >= note_off + 20);
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_phoff = sizeof(Elf64_Ehdr);
	eh.e_ehsize = sizeof(Elf64_Ehdr);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = 1;
	ph.p_type = PT_NOTE;
	ph.p_offset = note_off;
	ph.p_filesz = 20;
	memcpy(buf, &eh, sizeof(eh));
	memcpy(buf + sizeof(eh), &ph, sizeof(ph));
	put_le32(note, 4);
	put_le32(note + 4, 4);
	put_le32(note + 8, pvh ? 18 : 1);
	memcpy(note + 12, pvh ? "Xen" : "GNU", 4);
	put_le32(note + 16, 0x1000000);
	for (size_t i = note_off + 20; i < total; i++)
		buf[i] = (uint8_t)(i * 7 + i / 1000);
	*len = total;
	return buf;
}

static uint8_t *xz_compress(const uint8_t *in, size_t len, size_t *out_len)
{
	size_t cap = lzma_stream_buffer_bound(len), pos = 0;
	uint8_t *out = xmalloc(cap);

	assert_int_equal(
	    lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, len, out, &pos, cap), LZMA_OK);
	*out_len = pos;
	return out;
}

/* A bzImage-shaped file: boot header with "HdrS" and payload_offset/length. */
static uint8_t *make_bzimage(const uint8_t *payload, size_t plen, size_t *len)
{
	size_t setup = 2 * 512, pm_junk = 100, tail = 64;
	size_t total = setup + pm_junk + plen + tail;
	uint8_t *b = xzalloc(total);

	b[0x1f1] = 1; /* setup_sects: (1 + 1) * 512 bytes of setup */
	memcpy(b + 0x202, "HdrS", 4);
	b[0x206] = 0x0f;
	b[0x207] = 0x02;
	put_le32(b + 0x248, (uint32_t)pm_junk);
	put_le32(b + 0x24c, (uint32_t)plen);
	memset(b + setup, 0x90, pm_junk);
	memcpy(b + setup + pm_junk, payload, plen);
	memset(b + setup + pm_junk + plen, 0xcc, tail);
	*len = total;
	return b;
}

static int extract_to_memfd(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len,
			    struct lg_err **err)
{
	int fd = memfd_create("vmlinux", MFD_CLOEXEC);
	int r;

	assert_true(fd >= 0);
	r = lg_vmlinux_extract_mem(in, len, fd, err);
	*out = read_fd_all(fd, out_len);
	close(fd);
	return r;
}

static void test_vmlinux_xz(void **state)
{
	struct lg_err *err = NULL;
	size_t klen, zlen, flen, olen;
	uint8_t *kernel = make_vmlinux(true, 300000, &klen);
	uint8_t *xz = xz_compress(kernel, klen, &zlen);
	uint8_t *file, *out;

	/* Junk, then the stream, then a trailer: how the magic scan sees it. */
	flen = 3000 + zlen + 500;
	file = xmalloc(flen);
	for (size_t i = 0; i < 3000; i++)
		file[i] = (uint8_t)(i % 251);
	memcpy(file + 3000, xz, zlen);
	memset(file + 3000 + zlen, 0xab, 500);
	assert_int_equal(extract_to_memfd(file, flen, &out, &olen, &err), 0);
	assert_null(err);
	assert_int_equal(olen, klen);
	assert_memory_equal(out, kernel, klen);
	free(out);
	free(file);

	/* The same stream as a bzImage payload. */
	file = make_bzimage(xz, zlen, &flen);
	assert_int_equal(extract_to_memfd(file, flen, &out, &olen, &err), 0);
	assert_int_equal(olen, klen);
	assert_memory_equal(out, kernel, klen);
	free(out);
	free(file);

	/* Truncated stream. */
	file = make_bzimage(xz, zlen / 2, &flen);
	assert_true(extract_to_memfd(file, flen, &out, &olen, &err) < 0);
	assert_non_null(err);
	assert_non_null(strstr(err->msg, "xz"));
	lg_err_free(&err);
	free(out);
	free(file);

	/* An ELF input is copied as it is. */
	assert_int_equal(extract_to_memfd(kernel, klen, &out, &olen, &err), 0);
	assert_int_equal(olen, klen);
	assert_memory_equal(out, kernel, klen);
	free(out);

	/* Decompresses fine but is not an ELF file. */
	free(xz);
	memset(kernel, 'Z', 16);
	xz = xz_compress(kernel, klen, &zlen);
	file = make_bzimage(xz, zlen, &flen);
	assert_true(extract_to_memfd(file, flen, &out, &olen, &err) < 0);
	assert_non_null(strstr(err->msg, "not an ELF"));
	lg_err_free(&err);
	free(out);
	free(file);

	/* No stream at all. */
	assert_true(extract_to_memfd((const uint8_t *)"just some bytes", 15, &out, &olen, &err) <
		    0);
	lg_err_free(&err);
	free(out);

	free(xz);
	free(kernel);
}

/*
 * "\x7fELFABCD", then a 100-byte match at offset 4, then "tail!": the LZ4
 * block by hand, in the kernel's legacy frame with the size appended.
 */
static uint8_t *make_lz4_payload(uint32_t appended_size, size_t *len, uint8_t *want,
				 size_t *want_len)
{
	static const uint8_t block[] = {
	    (8 << 4) | 15, 0x7f, 'E',	       'L',	 'F', 'A', 'B', 'C', 'D',
	    0x04,	   0x00, 100 - 4 - 15, (5 << 4), 't', 'a', 'i', 'l', '!',
	};
	uint8_t *p = xmalloc(4 + 4 + sizeof(block) + 4);
	size_t n = 0;

	put_le32(p, 0x184c2102);
	put_le32(p + 4, sizeof(block));
	memcpy(p + 8, block, sizeof(block));
	put_le32(p + 8 + sizeof(block), appended_size);
	*len = 8 + sizeof(block) + 4;

	memcpy(want,
	       "\x7f"
	       "ELFABCD",
	       8);
	n = 8;
	for (int i = 0; i < 25; i++, n += 4)
		memcpy(want + n, "ABCD", 4);
	memcpy(want + n, "tail!", 5);
	*want_len = n + 5;
	return p;
}

static void test_vmlinux_lz4(void **state)
{
	struct lg_err *err = NULL;
	uint8_t want[256], *payload, *file, *out;
	size_t plen, flen, olen, want_len;

	payload = make_lz4_payload(113, &plen, want, &want_len);
	assert_int_equal(want_len, 113);
	file = make_bzimage(payload, plen, &flen);
	assert_int_equal(extract_to_memfd(file, flen, &out, &olen, &err), 0);
	assert_null(err);
	assert_int_equal(olen, want_len);
	assert_memory_equal(out, want, want_len);
	free(out);
	free(file);
	free(payload);

	/* The appended size disagrees. */
	payload = make_lz4_payload(114, &plen, want, &want_len);
	file = make_bzimage(payload, plen, &flen);
	assert_true(extract_to_memfd(file, flen, &out, &olen, &err) < 0);
	assert_non_null(strstr(err->msg, "lz4"));
	lg_err_free(&err);
	free(out);
	free(file);

	/* A match offset that reaches before the start of the output. */
	payload[8 + 9] = 0x40;
	file = make_bzimage(payload, plen, &flen);
	assert_true(extract_to_memfd(file, flen, &out, &olen, &err) < 0);
	assert_non_null(strstr(err->msg, "corrupt"));
	lg_err_free(&err);
	free(out);
	free(file);

	/* Every truncation of the block fails cleanly or decodes a prefix. */
	for (size_t cut = 0; cut < plen; cut++) {
		uint8_t *p = xmalloc(cut ? cut : 1);
		memcpy(p, payload, cut);
		file = make_bzimage(p, cut, &flen);
		(void)extract_to_memfd(file, flen, &out, &olen, &err);
		lg_err_free(&err);
		free(out);
		free(file);
		free(p);
	}
	free(payload);
}

static void test_vmlinux_unsupported(void **state)
{
	static const uint8_t gz[] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 3};
	static const uint8_t zst[] = {0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0};
	struct lg_err *err = NULL;
	uint8_t *file, *out;
	size_t flen, olen;

	file = make_bzimage(gz, sizeof(gz), &flen);
	assert_true(extract_to_memfd(file, flen, &out, &olen, &err) < 0);
	assert_non_null(strstr(err->msg, "compressed with gzip; not supported"));
	lg_err_free(&err);
	free(out);
	free(file);
	file = make_bzimage(zst, sizeof(zst), &flen);
	assert_true(extract_to_memfd(file, flen, &out, &olen, &err) < 0);
	assert_non_null(strstr(err->msg, "compressed with zstd; not supported"));
	lg_err_free(&err);
	free(out);
	free(file);
}

static void test_vmlinux_check(void **state)
{
	char *dir = make_tmpdir();
	char *path = xasprintf("%s/vmlinux", dir);
	struct lg_err *err = NULL;
	uint8_t *k;
	size_t len;

	k = make_vmlinux(true, 4096, &len);
	write_path(path, k, len);
	assert_int_equal(lg_vmlinux_check(path, &err), 0);
	free(k);
	k = make_vmlinux(false, 4096, &len);
	write_path(path, k, len);
	assert_true(lg_vmlinux_check(path, &err) < 0);
	assert_non_null(strstr(err->msg, "PVH"));
	lg_err_free(&err);
	/* Program headers past the end of the file. */
	write_path(path, k, sizeof(Elf64_Ehdr) + 10);
	assert_true(lg_vmlinux_check(path, &err) < 0);
	lg_err_free(&err);
	free(k);
	lg_rm_rf(dir);
	free(path);
	free(dir);
}

/* ---- kmod ---- */

/* An ELF64 ET_REL with sections: null, .modinfo (the given bytes), .shstrtab. */
static uint8_t *make_module(const char *modinfo, size_t mlen, size_t *len)
{
	static const char shstr[] = "\0.modinfo\0.shstrtab";
	size_t mi_off = sizeof(Elf64_Ehdr);
	size_t str_off = mi_off + mlen;
	size_t sh_off = (str_off + sizeof(shstr) + 7) & ~(size_t)7;
	size_t total = sh_off + 3 * sizeof(Elf64_Shdr);
	uint8_t *buf = xzalloc(total);
	Elf64_Ehdr eh = {0};
	Elf64_Shdr sh[3] = {{0}};

	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_REL;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_shoff = sh_off;
	eh.e_ehsize = sizeof(Elf64_Ehdr);
	eh.e_shentsize = sizeof(Elf64_Shdr);
	eh.e_shnum = 3;
	eh.e_shstrndx = 2;
	sh[1].sh_name = 1;
	sh[1].sh_type = SHT_PROGBITS;
	sh[1].sh_offset = mi_off;
	sh[1].sh_size = mlen;
	sh[2].sh_name = 10;
	sh[2].sh_type = SHT_STRTAB;
	sh[2].sh_offset = str_off;
	sh[2].sh_size = sizeof(shstr);
	memcpy(buf, &eh, sizeof(eh));
	memcpy(buf + mi_off, modinfo, mlen);
	memcpy(buf + str_off, shstr, sizeof(shstr));
	memcpy(buf + sh_off, sh, sizeof(sh));
	*len = total;
	return buf;
}

#define MODINFO(s) s, sizeof(s) - 1

static Elf64_Shdr *shdr(uint8_t *mod, unsigned i)
{
	Elf64_Ehdr *eh = (Elf64_Ehdr *)mod;
	return (Elf64_Shdr *)(mod + eh->e_shoff) + i;
}

static void test_kmod_depends(void **state)
{
	struct lg_err *err = NULL;
	char **deps = NULL;
	char *value = NULL;
	uint8_t *m;
	size_t len;

	m = make_module(MODINFO("license=GPL\0depends=virtio,virtio-ring\0name=foo\0"), &len);
	assert_int_equal(lg_kmod_parse_depends(m, len, &deps, &err), 0);
	assert_string_equal(deps[0], "virtio");
	assert_string_equal(deps[1], "virtio_ring");
	assert_null(deps[2]);
	lg_strv_free(deps);
	assert_int_equal(lg_kmod_modinfo_get(m, len, "name", &value, &err), 0);
	assert_string_equal(value, "foo");
	free(value);
	assert_int_equal(lg_kmod_modinfo_get(m, len, "license", &value, &err), 0);
	assert_string_equal(value, "GPL");
	free(value);
	assert_int_equal(lg_kmod_modinfo_get(m, len, "absent", &value, &err), 0);
	assert_null(value);
	free(m);

	/* Empty depends, no depends, and a last string without its NUL. */
	m = make_module(MODINFO("depends=\0"), &len);
	assert_int_equal(lg_kmod_parse_depends(m, len, &deps, &err), 0);
	assert_null(deps[0]);
	lg_strv_free(deps);
	free(m);
	m = make_module(MODINFO("license=GPL"), &len);
	assert_int_equal(lg_kmod_parse_depends(m, len, &deps, &err), 0);
	assert_null(deps[0]);
	lg_strv_free(deps);
	free(m);
	m = make_module(MODINFO("depends=a,b"), &len);
	assert_int_equal(lg_kmod_parse_depends(m, len, &deps, &err), 0);
	assert_string_equal(deps[1], "b");
	lg_strv_free(deps);
	free(m);

	/* A dependency that is not a module name. */
	m = make_module(MODINFO("depends=../../etc/passwd\0"), &len);
	assert_true(lg_kmod_parse_depends(m, len, &deps, &err) < 0);
	assert_null(deps);
	lg_err_free(&err);
	free(m);
}

static void test_kmod_malformed(void **state)
{
	struct lg_err *err = NULL;
	char **deps = NULL;
	uint8_t *m, *copy;
	size_t len;

	m = make_module(MODINFO("depends=virtio\0"), &len);

	/* Every truncation: an error, never a read out of bounds (ASan watches). */
	for (size_t cut = 0; cut < len; cut++) {
		copy = xmalloc(cut ? cut : 1);
		memcpy(copy, m, cut);
		if (lg_kmod_parse_depends(copy, cut, &deps, &err) == 0)
			lg_strv_free(deps);
		else
			assert_non_null(err);
		lg_err_free(&err);
		free(copy);
	}
	/* Cut inside the section header table: always an error. */
	copy = xmalloc(len - 1);
	memcpy(copy, m, len - 1);
	assert_true(lg_kmod_parse_depends(copy, len - 1, &deps, &err) < 0);
	assert_non_null(strstr(err->msg, "outside"));
	lg_err_free(&err);
	free(copy);

	/* Section headers out of range. */
	((Elf64_Ehdr *)m)->e_shoff = UINT64_MAX - 10;
	assert_true(lg_kmod_parse_depends(m, len, &deps, &err) < 0);
	lg_err_free(&err);
	free(m);

	/* .modinfo offset and size out of range, with overflow. */
	m = make_module(MODINFO("depends=virtio\0"), &len);
	shdr(m, 1)->sh_offset = len - 2;
	assert_true(lg_kmod_parse_depends(m, len, &deps, &err) < 0);
	assert_non_null(strstr(err->msg, ".modinfo"));
	lg_err_free(&err);
	shdr(m, 1)->sh_offset = 64;
	shdr(m, 1)->sh_size = UINT64_MAX;
	assert_true(lg_kmod_parse_depends(m, len, &deps, &err) < 0);
	lg_err_free(&err);
	free(m);

	/* Bad string table index and bad section name offsets. */
	m = make_module(MODINFO("depends=virtio\0"), &len);
	((Elf64_Ehdr *)m)->e_shstrndx = 7;
	assert_true(lg_kmod_parse_depends(m, len, &deps, &err) < 0);
	lg_err_free(&err);
	((Elf64_Ehdr *)m)->e_shstrndx = 2;
	shdr(m, 1)->sh_name = 0xffffffff;
	assert_int_equal(lg_kmod_parse_depends(m, len, &deps, &err), 0); /* no .modinfo: no deps */
	assert_null(deps[0]);
	lg_strv_free(deps);
	shdr(m, 2)->sh_size = UINT64_MAX;
	assert_true(lg_kmod_parse_depends(m, len, &deps, &err) < 0);
	lg_err_free(&err);
	free(m);

	/* Not a module at all. */
	assert_true(lg_kmod_parse_depends("hello", 5, &deps, &err) < 0);
	lg_err_free(&err);
	{
		size_t klen;
		uint8_t *k = make_vmlinux(true, 4096, &klen);
		assert_true(lg_kmod_parse_depends(k, klen, &deps, &err) < 0);
		assert_non_null(strstr(err->msg, "ET_REL"));
		lg_err_free(&err);
		free(k);
	}
}

static char **strv(const char *a, const char *b)
{
	char **v = xzalloc(3 * sizeof(*v));
	size_t n = 0;
	if (a)
		v[n++] = xstrdup(a);
	if (b)
		v[n++] = xstrdup(b);
	return v;
}

static struct lg_kmod mod(const char *name, char **deps)
{
	struct lg_kmod m = {.name = xstrdup(name), .depends = deps};
	return m;
}

static void test_kmod_sort(void **state)
{
	struct lg_err *err = NULL;
	struct lg_kmod *m = xzalloc(5 * sizeof(*m));

	m[0] = mod("virtio_console", strv("virtio", "virtio_ring"));
	m[1] = mod("virtio_mmio", strv("virtio", "virtio_ring"));
	m[2] = mod("virtio", strv("virtio_ring", NULL));
	m[3] = mod("standalone", strv(NULL, NULL));
	m[4] = mod("virtio_ring", strv(NULL, NULL));
	assert_int_equal(lg_kmod_sort(m, 5, &err), 0);
	assert_string_equal(m[0].name, "standalone");
	assert_string_equal(m[1].name, "virtio_ring");
	assert_string_equal(m[2].name, "virtio");
	assert_string_equal(m[3].name, "virtio_console");
	assert_string_equal(m[4].name, "virtio_mmio");
	lg_kmod_free(m, 5);

	/* A cycle is an error that names its members. */
	m = xzalloc(3 * sizeof(*m));
	m[0] = mod("a", strv("b", NULL));
	m[1] = mod("b", strv("c", NULL));
	m[2] = mod("c", strv("a", NULL));
	assert_true(lg_kmod_sort(m, 3, &err) < 0);
	assert_non_null(strstr(err->msg, "cycle"));
	assert_non_null(strstr(err->msg, "a, b, c"));
	lg_err_free(&err);
	lg_kmod_free(m, 3);

	/* A dependency outside the set. */
	m = xzalloc(1 * sizeof(*m));
	m[0] = mod("a", strv("ghost", NULL));
	assert_true(lg_kmod_sort(m, 1, &err) < 0);
	assert_non_null(strstr(err->msg, "ghost"));
	lg_err_free(&err);
	lg_kmod_free(m, 1);
}

static void add_module_file(const char *moddir, const char *rel, const char *modinfo, size_t mlen)
{
	char *path = xasprintf("%s/%s", moddir, rel);
	char *slash = strrchr(path, '/');
	size_t len;
	uint8_t *m = make_module(modinfo, mlen, &len);

	*slash = '\0';
	assert_int_equal(lg_mkdir_p(path, 0755), 0);
	*slash = '/';
	write_path(path, m, len);
	free(m);
	free(path);
}

/* A fake kernel tree at ROOT: boot/vmlinuz-VER and lib/modules/VER/kernel/... */
static void make_kernel_tree(const char *root, const char *ver)
{
	char *moddir = xasprintf("%s/lib/modules/%s", root, ver);
	char *boot = xasprintf("%s/boot", root);
	char *vmlinuz = xasprintf("%s/vmlinuz-%s", boot, ver);
	char *builtin = xasprintf("%s/modules.builtin", moddir);
	uint8_t *k, *xz, *bz;
	size_t klen, zlen, blen;

	add_module_file(moddir, "kernel/drivers/virtio/virtio_ring.ko",
			MODINFO("name=virtio_ring\0"));
	add_module_file(moddir, "kernel/drivers/virtio/virtio.ko",
			MODINFO("depends=virtio_ring\0name=virtio\0"));
	add_module_file(moddir, "kernel/drivers/virtio/virtio_mmio.ko",
			MODINFO("depends=virtio,virtio_ring\0"));
	add_module_file(moddir, "kernel/drivers/char/virtio_console.ko",
			MODINFO("depends=virtio_ring,virtio\0"));
	add_module_file(moddir, "kernel/drivers/char/hw_random/virtio-rng.ko",
			MODINFO("depends=virtio,virtio_ring\0"));
	add_module_file(moddir, "kernel/fs/foo/foo-bar.ko", MODINFO("depends=libfoo\0"));
	add_module_file(moddir, "kernel/lib/libfoo.ko", MODINFO("license=GPL\0"));
	add_module_file(moddir, "kernel/lib/loop_a.ko", MODINFO("depends=loop_b\0"));
	add_module_file(moddir, "kernel/lib/loop_b.ko", MODINFO("depends=loop_a\0"));
	add_module_file(moddir, "kernel/lib/needs_ghost.ko", MODINFO("depends=ghost\0"));
	/* What a rootfs image adds: erofs (needing libcrc32c) and overlay. */
	add_module_file(moddir, "kernel/lib/libcrc32c.ko", MODINFO("license=GPL\0"));
	add_module_file(moddir, "kernel/fs/erofs/erofs.ko", MODINFO("depends=libcrc32c\0"));
	add_module_file(moddir, "kernel/fs/overlayfs/overlay.ko", MODINFO("license=GPL\0"));
	/* virtio_blk is built in here. */
	write_path(builtin, "kernel/drivers/block/virtio_blk.ko\n", 35);

	assert_int_equal(lg_mkdir_p(boot, 0755), 0);
	k = make_vmlinux(true, 200000, &klen);
	xz = xz_compress(k, klen, &zlen);
	bz = make_bzimage(xz, zlen, &blen);
	write_path(vmlinuz, bz, blen);
	free(k);
	free(xz);
	free(bz);
	free(moddir);
	free(boot);
	free(vmlinuz);
	free(builtin);
}

static void test_kmod_resolve(void **state)
{
	static const char *const req[] = {"virtio_console", "virtio-mmio", NULL};
	static const char *const opt[] = {"virtio_rng", "virtio_blk", "not_there", NULL};
	char *root = make_tmpdir();
	char *moddir = xasprintf("%s/lib/modules/1.0", root);
	struct lg_err *err = NULL;
	struct lg_kmod *mods = NULL;
	size_t n = 0;

	make_kernel_tree(root, "1.0");
	assert_int_equal(lg_kmod_resolve(moddir, req, opt, &mods, &n, &err), 0);
	assert_null(err);
	assert_int_equal(n, 5);
	assert_string_equal(mods[0].name, "virtio_ring");
	assert_string_equal(mods[1].name, "virtio");
	assert_string_equal(mods[2].name, "virtio_console");
	assert_string_equal(mods[3].name, "virtio_mmio");
	assert_string_equal(mods[4].name, "virtio_rng");
	assert_string_equal(mods[4].relpath, "kernel/drivers/char/hw_random/virtio-rng.ko");
	lg_kmod_free(mods, n);

	/* Dependencies are pulled in; '-' and '_' are the same. */
	{
		static const char *const r2[] = {"foo_bar", NULL};
		assert_int_equal(lg_kmod_resolve(moddir, r2, NULL, &mods, &n, &err), 0);
		assert_int_equal(n, 2);
		assert_string_equal(mods[0].name, "libfoo");
		assert_string_equal(mods[1].name, "foo_bar");
		lg_kmod_free(mods, n);
	}
	/* Built in: nothing to load, no error. */
	{
		static const char *const r3[] = {"virtio_blk", NULL};
		assert_int_equal(lg_kmod_resolve(moddir, r3, NULL, &mods, &n, &err), 0);
		assert_int_equal(n, 0);
		lg_kmod_free(mods, n);
	}
	/* Missing, missing dependency, cycle, bad name. */
	{
		static const char *const r4[] = {"not_there", NULL};
		static const char *const r5[] = {"needs_ghost", NULL};
		static const char *const r6[] = {"loop_a", NULL};
		static const char *const r7[] = {"../x", NULL};

		assert_true(lg_kmod_resolve(moddir, r4, NULL, &mods, &n, &err) < 0);
		assert_non_null(strstr(err->msg, "not_there"));
		lg_err_free(&err);
		assert_true(lg_kmod_resolve(moddir, r5, NULL, &mods, &n, &err) < 0);
		assert_non_null(strstr(err->msg, "needed by `needs_ghost`"));
		lg_err_free(&err);
		assert_true(lg_kmod_resolve(moddir, r6, NULL, &mods, &n, &err) < 0);
		assert_non_null(strstr(err->msg, "cycle"));
		lg_err_free(&err);
		assert_true(lg_kmod_resolve(moddir, r7, NULL, &mods, &n, &err) < 0);
		lg_err_free(&err);
		assert_null(mods);
	}
	lg_rm_rf(root);
	free(moddir);
	free(root);
}

/* ---- the image store ---- */

static char *set_home(void)
{
	char *home = make_tmpdir();
	setenv("LUMINAGUARD_HOME", home, 1);
	lg_env_reload();
	return home;
}

static void test_image_names(void **state)
{
	char long_name[80];

	assert_true(lg_image_name_valid("default"));
	assert_true(lg_image_name_valid("deb-12.cloud_v2"));
	assert_false(lg_image_name_valid(""));
	assert_false(lg_image_name_valid(NULL));
	assert_false(lg_image_name_valid("."));
	assert_false(lg_image_name_valid(".."));
	assert_false(lg_image_name_valid(".hidden"));
	assert_false(lg_image_name_valid("../etc"));
	assert_false(lg_image_name_valid("a/b"));
	assert_false(lg_image_name_valid("a b"));
	assert_false(lg_image_name_valid("a\nb"));
	memset(long_name, 'a', sizeof(long_name));
	long_name[64] = '\0';
	assert_true(lg_image_name_valid(long_name));
	long_name[64] = 'a';
	long_name[65] = '\0';
	assert_false(lg_image_name_valid(long_name));
}

/* Writes images/<name>/ by hand with the given file contents and a matching manifest. */
static char *fake_image(const char *name, const void *k, size_t klen, const void *i, size_t ilen,
			uint64_t manifest_ksize)
{
	char *images = lg_images_dir();
	char *dir = xasprintf("%s/%s", images, name);
	char *p;
	char *manifest;
	uint8_t d[LG_SHA256_LEN];
	char khex[65], ihex[65];

	assert_int_equal(lg_mkdir_p(dir, 0755), 0);
	p = xasprintf("%s/vmlinux", dir);
	write_path(p, k, klen);
	free(p);
	p = xasprintf("%s/initramfs.cpio", dir);
	write_path(p, i, ilen);
	free(p);
	lg_sha256(k, klen, d);
	lg_sha256_hex(d, khex);
	lg_sha256(i, ilen, d);
	lg_sha256_hex(d, ihex);
	manifest = xasprintf("{\"format\":1,\"name\":\"%s\",\"kernel_version\":\"1.0\","
			     "\"created\":\"2024-01-01T00:00:00Z\",\"agent\":\"sha256:00\","
			     "\"modules\":[\"virtio\"],\"files\":{"
			     "\"vmlinux\":{\"size\":%llu,\"sha256\":\"%s\"},"
			     "\"initramfs.cpio\":{\"size\":%zu,\"sha256\":\"%s\"}}}",
			     name, (unsigned long long)manifest_ksize, khex, ilen, ihex);
	p = xasprintf("%s/manifest.json", dir);
	write_path(p, manifest, strlen(manifest));
	free(p);
	free(manifest);
	free(images);
	return dir;
}

static void expect_open_error(const char *name, const char *what)
{
	struct lg_image *img = (struct lg_image *)0x1;
	struct lg_err *err = NULL;

	assert_true(lg_image_open(name, &img, &err) < 0);
	assert_null(img);
	assert_non_null(err);
	assert_non_null(strstr(err->msg, "luminaguard image build"));
	if (what != NULL && strstr(err->msg, what) == NULL)
		fail_msg("error `%s` does not mention `%s`", err->msg, what);
	lg_err_free(&err);
}

static void test_image_open_errors(void **state)
{
	char *home = set_home();
	struct lg_image *img = NULL;
	struct lg_err *err = NULL;
	char *dir, *p;
	char **names = NULL;

	/* Nothing there yet. */
	assert_true(lg_image_open("default", &img, &err) < 0);
	assert_int_equal(err->errnum, ENOENT);
	assert_non_null(strstr(err->msg, "not found"));
	assert_non_null(strstr(err->msg, "luminaguard image build"));
	lg_err_free(&err);
	expect_open_error("other", "--name other");
	assert_int_equal(lg_image_list(&names, &err), 0);
	assert_null(names[0]);
	lg_strv_free(names);

	/* Invalid names never touch the file system. */
	assert_true(lg_image_open("../../etc", &img, &err) < 0);
	assert_non_null(strstr(err->msg, "invalid image name"));
	lg_err_free(&err);

	/* A good one. */
	dir = fake_image("good",
			 "\x7f"
			 "ELF....",
			 8, "070701xx", 8, 8);
	assert_int_equal(lg_image_open("good", &img, &err), 0);
	assert_string_equal(img->name, "good");
	assert_string_equal(img->kernel_version, "1.0");
	assert_non_null(strstr(img->kernel, "/good/vmlinux"));
	assert_true(img->kernel[0] == '/' && img->initrd[0] == '/');
	assert_string_equal(img->modules[0], "virtio");
	assert_null(img->modules[1]);
	/* A format-1 manifest is an initramfs image, rebuilt as one. */
	assert_int_equal(img->kind, LG_IMAGE_INITRAMFS);
	assert_null(img->rootfs);
	assert_int_equal(img->rootfs_size, 0);
	assert_null(img->packages[0]);
	assert_null(img->env[0]);
	assert_null(img->workdir);
	assert_null(img->user);
	assert_string_equal(img->rebuild, "luminaguard image build --name good");
	lg_image_free(img);
	assert_int_equal(lg_image_verify("good", &err), 0);
	assert_int_equal(lg_image_check("good", &img, &err), 0);
	lg_image_free(img);
	free(dir);

	/* Size mismatch. */
	free(fake_image("short",
			"\x7f"
			"ELF....",
			8, "070701xx", 8, 9));
	expect_open_error("short", "bytes");

	/* Bad magic. */
	free(fake_image("nomagic", "MZ......", 8, "070701xx", 8, 8));
	expect_open_error("nomagic", "magic");
	free(fake_image("noinitrd",
			"\x7f"
			"ELF....",
			8, "0707xxxx", 8, 8));
	expect_open_error("noinitrd", "magic");

	/* Content changed, size and magic the same: open passes, verify does not. */
	dir = fake_image("tampered",
			 "\x7f"
			 "ELF....",
			 8, "070701xx", 8, 8);
	p = xasprintf("%s/vmlinux", dir);
	write_path(p,
		   "\x7f"
		   "ELF!!!!",
		   8);
	assert_int_equal(lg_image_open("tampered", &img, &err), 0);
	lg_image_free(img);
	assert_true(lg_image_verify("tampered", &err) < 0);
	assert_non_null(strstr(err->msg, "SHA-256"));
	assert_non_null(strstr(err->msg, "luminaguard image build --name tampered"));
	lg_err_free(&err);
	/* A missing file. */
	unlink(p);
	expect_open_error("tampered", "missing");
	free(p);
	free(dir);

	/* Broken and missing manifests. */
	dir = fake_image("badjson",
			 "\x7f"
			 "ELF....",
			 8, "070701xx", 8, 8);
	p = xasprintf("%s/manifest.json", dir);
	write_path(p, "{\"format\":", 10);
	expect_open_error("badjson", "manifest.json");
	write_path(p, "{\"format\":3}", 12);
	expect_open_error("badjson", "format");
	write_path(p, "{\"format\":1,\"name\":\"someone-else\"}", 34);
	expect_open_error("badjson", "name");
	unlink(p);
	expect_open_error("badjson", "missing");
	free(p);
	free(dir);

	/* list: sorted, hidden entries and plain files skipped. */
	p = xasprintf("%s/images/.default.tmp-abcdef", home);
	assert_int_equal(lg_mkdir_p(p, 0755), 0);
	free(p);
	p = xasprintf("%s/images/a-file", home);
	write_path(p, "x", 1);
	free(p);
	assert_int_equal(lg_image_list(&names, &err), 0);
	assert_string_equal(names[0], "badjson");
	assert_string_equal(names[1], "good");
	assert_string_equal(names[2], "noinitrd");
	assert_string_equal(names[3], "nomagic");
	assert_string_equal(names[4], "short");
	assert_string_equal(names[5], "tampered");
	assert_null(names[6]);
	lg_strv_free(names);

	/* remove */
	assert_int_equal(lg_image_remove("good", &err), 0);
	expect_open_error("good", "not found");
	assert_true(lg_image_remove("good", &err) < 0);
	assert_int_equal(err->errnum, ENOENT);
	lg_err_free(&err);
	assert_true(lg_image_remove("..", &err) < 0);
	lg_err_free(&err);

	lg_rm_rf(home);
	free(home);
}

static json_t *load_manifest(const char *name)
{
	char *images = lg_images_dir();
	char *p = xasprintf("%s/%s/manifest.json", images, name);
	json_t *m = json_load_file(p, JSON_REJECT_DUPLICATES, NULL);

	assert_non_null(m);
	free(p);
	free(images);
	return m;
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* A complete build from a synthetic kernel tree: no real kernel or busybox needed. */
static void test_image_build_synthetic(void **state)
{
	char *home = set_home();
	char *root = xasprintf("%s/kernels/1.0", home);
	char *exe = xasprintf("%s/static-exe", home);
	struct lg_image_build_opts o = {0};
	struct lg_image *img = NULL;
	struct lg_err *err = NULL;
	struct cpio_entry *ents = xzalloc(512 * sizeof(*ents));
	const struct cpio_entry *e;
	uint8_t *k, *cpio, *vm;
	size_t klen, clen, vlen, n;
	char **names = NULL;
	char *first_sha;
	char hex[LG_SHA256_HEX_LEN + 1];

	make_kernel_tree(root, "1.0");
	/* Found without --kernel-dir: newest under lg_kernels_dir(). */
	k = make_vmlinux(true, 8192, &klen);
	write_path(exe, k, klen);
	o.agent_path = exe;
	o.busybox_path = exe; /* cannot run: the fixed applet list is used */
	assert_int_equal(lg_image_build(&o, &img, &err), 0);
	assert_null(err);
	assert_string_equal(img->name, "default");
	assert_string_equal(img->kernel_version, "1.0");
	assert_string_equal(img->modules[0], "virtio_ring");
	assert_string_equal(img->modules[3], "virtio_console");
	assert_string_equal(img->modules[4], "virtio_rng");
	assert_null(img->modules[5]);
	assert_non_null(strstr(img->agent, "sha256:"));
	assert_int_equal(img->kind, LG_IMAGE_INITRAMFS);
	assert_null(img->rootfs);
	{
		char *want = xasprintf("luminaguard image build --agent %s --busybox %s", exe, exe);
		json_t *m = load_manifest("default");

		assert_string_equal(img->rebuild, want);
		assert_int_equal(json_integer_value(json_object_get(m, "format")), 2);
		assert_string_equal(jstr(m, "kind"), "initramfs");
		assert_string_equal(jstr(m, "rebuild"), img->rebuild);
		assert_null(json_object_get(m, "rootfs"));
		json_decref(m);
		free(want);
	}

	vm = read_path_all(img->kernel, &vlen);
	assert_int_equal(vlen, 200000);
	free(vm);
	cpio = read_path_all(img->initrd, &clen);
	n = parse_cpio(cpio, clen, ents, 512);
	e = cpio_find(ents, n, "init");
	assert_non_null(e);
	assert_int_equal(e->mode, 0100755);
	assert_int_equal(e->size, klen);
	e = cpio_find(ents, n, "dev/console");
	assert_int_equal(e->mode, 020600);
	assert_int_equal(e->rmajor, 5);
	assert_int_equal(e->rminor, 1);
	e = cpio_find(ents, n, "dev/null");
	assert_int_equal(e->rmajor, 1);
	assert_int_equal(e->rminor, 3);
	assert_int_equal(cpio_find(ents, n, "tmp")->mode, 041777);
	e = cpio_find(ents, n, "bin/sh");
	assert_int_equal(e->mode, 0120777);
	assert_memory_equal(e->data, "busybox", 7);
	assert_non_null(cpio_find(ents, n, "etc/passwd"));
	assert_non_null(cpio_find(ents, n, "usr/sbin"));
	e = cpio_find(ents, n, "etc/lg-modules");
	assert_non_null(e);
	{
		static const char want[] =
		    "/lib/modules/1.0/kernel/drivers/virtio/virtio_ring.ko\n"
		    "/lib/modules/1.0/kernel/drivers/virtio/virtio.ko\n"
		    "/lib/modules/1.0/kernel/drivers/virtio/virtio_mmio.ko\n"
		    "/lib/modules/1.0/kernel/drivers/char/virtio_console.ko\n"
		    "/lib/modules/1.0/kernel/drivers/char/hw_random/virtio-rng.ko\n";
		assert_int_equal(e->size, sizeof(want) - 1);
		assert_memory_equal(e->data, want, sizeof(want) - 1);
	}
	assert_non_null(
	    cpio_find(ents, n, "lib/modules/1.0/kernel/drivers/char/virtio_console.ko"));
	free(cpio);
	assert_int_equal(lg_image_verify("default", &err), 0);
	assert_int_equal(lg_sha256_file(img->initrd, hex, &err), 0);
	first_sha = xstrdup(hex);
	lg_image_free(img);

	/* Rebuilding replaces the image; the same inputs give the same initramfs. */
	assert_int_equal(lg_image_build(&o, &img, &err), 0);
	assert_int_equal(lg_sha256_file(img->initrd, hex, &err), 0);
	assert_string_equal(hex, first_sha);
	lg_image_free(img);
	free(first_sha);

	/* A second image by name, with an extra module and its dependency. */
	{
		static const char *const extra[] = {"foo-bar", NULL};
		o.name = "second";
		o.kernel_dir = root;
		o.kernel_version = "1.0";
		o.extra_modules = extra;
		assert_int_equal(lg_image_build(&o, &img, &err), 0);
		/* Extra modules count as required: before the optional ones. */
		assert_string_equal(img->modules[4], "libfoo");
		assert_string_equal(img->modules[5], "foo_bar");
		assert_string_equal(img->modules[6], "virtio_rng");
		lg_image_free(img);
	}
	assert_int_equal(lg_image_list(&names, &err), 0);
	assert_string_equal(names[0], "default");
	assert_string_equal(names[1], "second");
	assert_null(names[2]);
	lg_strv_free(names);

	/* Failures leave no half-built image behind. */
	o.name = "broken";
	o.kernel_version = "9.9";
	assert_true(lg_image_build(&o, &img, &err) < 0);
	assert_non_null(strstr(err->msg, "no kernel 9.9"));
	lg_err_free(&err);
	o.kernel_version = NULL;
	o.busybox_path = "/nonexistent/busybox";
	assert_true(lg_image_build(&o, &img, &err) < 0);
	assert_non_null(strstr(err->msg, "busybox"));
	lg_err_free(&err);
	o.busybox_path = exe;
	o.name = "../escape";
	assert_true(lg_image_build(&o, &img, &err) < 0);
	lg_err_free(&err);
	assert_int_equal(lg_image_list(&names, &err), 0);
	assert_null(names[2]);
	lg_strv_free(names);
	{
		char *images = lg_images_dir();
		DIR *d = opendir(images);
		struct dirent *de;
		while ((de = readdir(d)) != NULL)
			assert_null(strstr(de->d_name, ".tmp-"));
		closedir(d);
		free(images);
	}

	free(k);
	free(ents);
	lg_rm_rf(home);
	free(root);
	free(exe);
	free(home);
}

/* ---- rootfs images ---- */

static bool have_program(const char *name)
{
	char *cmd = xasprintf("command -v %s >/dev/null 2>&1", name);
	int r = system(cmd);

	free(cmd);
	return r == 0;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
	char *cmd = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	assert_true(vasprintf(&cmd, fmt, ap) >= 0);
	va_end(ap);
	r = system(cmd);
	if (r != 0)
		fail_msg("`%s` failed (%d)", cmd, r);
	free(cmd);
}

/* Runs cmd in a shell, returns its stdout (new string) and its exit status in *rc. */
static char *run_capture(const char *cmd, int *rc)
{
	FILE *f = popen(cmd, "r");
	char *out = xzalloc(65536);
	size_t n;
	int st;

	assert_non_null(f);
	n = fread(out, 1, 65535, f);
	out[n] = '\0';
	st = pclose(f);
	*rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return out;
}

/* A tiny root file system made with the system tar from a staged tree, in dir/rootfs.tar. */
static void make_rootfs_tar(const char *dir)
{
	sh("cd '%s' && mkdir -p stage/etc stage/usr/bin stage/var/lib/dpkg && "
	   "printf 'ID=tiny\\n' > stage/etc/os-release && "
	   "printf '#!/bin/sh\\necho hi\\n' > stage/usr/bin/hello && chmod 755 stage/usr/bin/hello "
	   "&& "
	   "ln -s usr/bin stage/bin && "
	   "printf 'Package: a\\nStatus: install ok installed\\n\\n"
	   "Package: b\\nStatus: install ok installed\\n\\n"
	   "Package: c\\nStatus: deinstall ok config-files\\n\\n' > stage/var/lib/dpkg/status && "
	   "tar -C stage -cf rootfs.tar . && rm -rf stage",
	   dir);
}

/* A tarball whose one entry climbs out of the extraction directory. */
static void write_hostile_tar(const char *path)
{
	uint8_t t[512 * 4] = {0};
	unsigned sum = 0;

	memcpy(t, "../escape", 9);
	memcpy(t + 100, "0000644", 7);
	memcpy(t + 108, "0000000", 7);
	memcpy(t + 116, "0000000", 7);
	memcpy(t + 124, "00000000005", 11);
	memcpy(t + 136, "00000000000", 11);
	t[156] = '0';
	memcpy(t + 257,
	       "ustar\0"
	       "00",
	       8);
	memset(t + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += t[i];
	snprintf((char *)t + 148, 8, "%06o", sum);
	memcpy(t + 512, "evil\n", 5);
	write_path(path, t, sizeof(t));
}

/* The hidden entries of images/ must be the lock alone: no build left anything. */
static void assert_store_clean(const char *const *want_images)
{
	char *images = lg_images_dir();
	DIR *d = opendir(images);
	struct dirent *de;
	size_t n = 0, want = 0;

	assert_non_null(d);
	while (want_images[want] != NULL)
		want++;
	while ((de = readdir(d)) != NULL) {
		bool known = false;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    strcmp(de->d_name, ".lock") == 0)
			continue;
		for (size_t i = 0; i < want; i++)
			known = known || strcmp(de->d_name, want_images[i]) == 0;
		if (!known)
			fail_msg("unexpected `%s` in `%s`", de->d_name, images);
		n++;
	}
	closedir(d);
	assert_int_equal(n, want);
	free(images);
}

static ssize_t module_index(const struct lg_image *img, const char *name)
{
	for (size_t i = 0; img->modules[i] != NULL; i++)
		if (strcmp(img->modules[i], name) == 0)
			return (ssize_t)i;
	return -1;
}

static char *read_text(const char *path)
{
	size_t len;
	uint8_t *b = read_path_all(path, &len);

	b[len] = '\0';
	return (char *)b;
}

/* What lg_image_open fails with: one line, saying why and how to rebuild. */
static void expect_damaged(const char *name, const char *why, const char *rebuild)
{
	struct lg_image *img = (struct lg_image *)0x1;
	struct lg_err *err = NULL;
	char *want =
	    xasprintf("image '%s' is damaged: %s; rebuild it with: %s", name, why, rebuild);

	assert_true(lg_image_open(name, &img, &err) < 0);
	assert_null(img);
	if (strcmp(err->msg, want) != 0)
		fail_msg("error `%s`, expected `%s`", err->msg, want);
	lg_err_free(&err);
	free(want);
}

static int cancel_now(void)
{
	return 1;
}

/* A rootfs image from a handmade tarball: the manifest, the stamp, damage and hostile input. */
static void test_image_rootfs_import(void **state)
{
	static const char *const only_imp[] = {"imp", NULL};
	char *home, *root, *exe, *tar, *odd_tar, *rebuild, *rpath, *stamp_path, *stamp1, *stamp2;
	char *libexec, *cmd, *out, *abs_home;
	struct lg_image_build_opts o = {0};
	struct lg_image *img = NULL;
	struct lg_err *err = NULL;
	json_t *m, *r, *f;
	uint8_t *k, byte, flipped;
	size_t klen;
	struct stat st;
	int fd, rc;
	off_t mid;

	if (!have_program("mkfs.erofs") || !have_program("tar")) {
		fprintf(stderr, "skipping: needs mkfs.erofs (erofs-utils) and tar\n");
		skip();
	}
	home = set_home();
	abs_home = realpath(home, NULL);
	root = xasprintf("%s/kernels/1.0", home);
	exe = xasprintf("%s/static-exe", home);
	tar = xasprintf("%s/rootfs.tar", home);
	/* A name the rebuild command must quote for the shell. */
	odd_tar = xasprintf("%s/my root's.tar", home);
	make_kernel_tree(root, "1.0");
	k = make_vmlinux(true, 8192, &klen);
	write_path(exe, k, klen);
	make_rootfs_tar(home);
	assert_int_equal(rename(tar, odd_tar), 0);

	o.agent_path = exe;
	o.busybox_path = exe;
	o.name = "imp";
	o.import_tar = odd_tar;
	if (lg_image_build(&o, &img, &err) < 0)
		fail_msg("import: %s", err->msg);
	assert_int_equal(img->kind, LG_IMAGE_ROOTFS);
	rpath = xasprintf("%s/images/imp/rootfs.erofs", abs_home);
	assert_string_equal(img->rootfs, rpath);
	assert_int_equal(stat(rpath, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(img->rootfs_size, (uint64_t)st.st_size);
	assert_int_equal(img->installed_packages, 2);
	assert_null(img->packages[0]);
	assert_null(img->suite);
	assert_null(img->env[0]);
	assert_null(img->workdir);
	assert_null(img->user);
	rebuild =
	    xasprintf("luminaguard image import imp '%s/my root'\\''s.tar' --agent %s/static-exe "
		      "--busybox %s/static-exe",
		      abs_home, abs_home, abs_home);
	assert_string_equal(img->rebuild, rebuild);
	/* The modules the agent mounts the base with, dependencies first. */
	assert_true(module_index(img, "erofs") > module_index(img, "libcrc32c"));
	assert_true(module_index(img, "libcrc32c") >= 0);
	assert_true(module_index(img, "overlay") >= 0);
	assert_true(module_index(img, "virtio_console") >= 0);
	lg_image_free(img);

	m = load_manifest("imp");
	assert_int_equal(json_integer_value(json_object_get(m, "format")), 2);
	assert_string_equal(jstr(m, "kind"), "rootfs");
	assert_string_equal(jstr(m, "rebuild"), rebuild);
	f = json_object_get(json_object_get(m, "files"), "rootfs.erofs");
	assert_int_equal(json_integer_value(json_object_get(f, "size")), st.st_size);
	assert_int_equal(strlen(jstr(f, "sha256")), 64);
	r = json_object_get(m, "rootfs");
	assert_string_equal(jstr(r, "fs"), "erofs");
	assert_string_equal(jstr(r, "compression"), "lz4hc");
	assert_string_equal(jstr(r, "source"), "import");
	assert_true(json_is_null(json_object_get(r, "suite")));
	assert_int_equal(json_array_size(json_object_get(r, "packages")), 0);
	assert_int_equal(json_integer_value(json_object_get(r, "installed_packages")), 2);
	assert_true(json_is_boolean(json_object_get(r, "owners")));
	assert_null(json_object_get(m, "defaults"));
	json_decref(m);

	stamp_path = xasprintf("%s/images/imp/.verified", home);
	stamp1 = read_text(stamp_path);
	assert_non_null(strstr(stamp1, "lg-verified 1 "));
	assert_int_equal(lg_image_verify("imp", &err), 0);
	assert_int_equal(lg_image_check("imp", &img, &err), 0);
	lg_image_free(img);

	/* The CLI's list line, with this agent installed (ok) and another one (stale). */
	libexec = xasprintf("%s/libexec", home);
	assert_int_equal(mkdir(libexec, 0755), 0);
	cmd = xasprintf("%s/lg-agent", libexec);
	write_path(cmd, k, klen);
	free(cmd);
	cmd = xasprintf("LUMINAGUARD_LIBEXEC='%s' '%s/luminaguard' image list", libexec,
			LG_BUILD_DIR);
	out = run_capture(cmd, &rc);
	assert_int_equal(rc, 0);
	{
		char name[32], kind[32], size[32], unit[8], pkgs[32], word[64];
		char *line = strchr(out, '\n');

		assert_non_null(line);
		assert_true(strncmp(out, "NAME ", 5) == 0);
		assert_int_equal(sscanf(line + 1, "%31s %31s %31s %7s %31s %63s", name, kind, size,
					unit, pkgs, word),
				 6);
		assert_non_null(strchr(size, '.'));
		assert_string_equal(unit, "MiB");
		assert_string_equal(name, "imp");
		assert_string_equal(kind, "rootfs");
		assert_string_equal(pkgs, "2");
		assert_string_equal(word, "ok");
	}
	free(out);
	free(cmd);
	cmd = xasprintf("LUMINAGUARD_LIBEXEC='%s' '%s/luminaguard' image list --json", libexec,
			LG_BUILD_DIR);
	out = run_capture(cmd, &rc);
	assert_int_equal(rc, 0);
	m = json_loads(out, 0, NULL);
	assert_non_null(m);
	assert_string_equal(jstr(json_array_get(m, 0), "kind"), "rootfs");
	assert_string_equal(jstr(json_array_get(m, 0), "state"), "ok");
	json_decref(m);
	free(out);
	free(cmd);
	cmd = xasprintf("%s/lg-agent", libexec);
	write_path(cmd,
		   "\x7f"
		   "ELF-other",
		   10);
	free(cmd);
	cmd = xasprintf("LUMINAGUARD_LIBEXEC='%s' '%s/luminaguard' image list", libexec,
			LG_BUILD_DIR);
	out = run_capture(cmd, &rc);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "stale: built for another lg-agent; rebuild it with: "
				    "luminaguard image import imp"));
	free(out);

	/* One byte flipped: the file's ctime moved, so the stamp no longer vouches for it. */
	fd = open(rpath, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	mid = st.st_size / 2;
	assert_int_equal(pread(fd, &byte, 1, mid), 1);
	flipped = byte ^ 0xff;
	assert_int_equal(pwrite(fd, &flipped, 1, mid), 1);
	{
		char *imp_cmd = xasprintf("luminaguard image import imp '%s/my root'\\''s.tar' "
					  "--agent %s/static-exe --busybox %s/static-exe",
					  abs_home, abs_home, abs_home);
		expect_damaged("imp", "rootfs.erofs: SHA-256 differs from the manifest", imp_cmd);
		free(imp_cmd);
	}
	out = run_capture(cmd, &rc);
	assert_int_equal(rc, 1);
	assert_non_null(strstr(out, "CORRUPT: image 'imp' is damaged: rootfs.erofs: SHA-256"));
	free(out);
	/* Restored: hashed once more, good, and the stamp rewritten for the new ctime. */
	assert_int_equal(pwrite(fd, &byte, 1, mid), 1);
	assert_int_equal(lg_image_open("imp", &img, &err), 0);
	lg_image_free(img);
	stamp2 = read_text(stamp_path);
	assert_string_not_equal(stamp1, stamp2);
	free(stamp1);

	/*
	 * What the stamp buys: open trusts it without hashing.  Whoever can
	 * write the image directory can forge one (and the manifest too); a
	 * full verify never trusts it.
	 */
	assert_int_equal(pwrite(fd, &flipped, 1, mid), 1);
	{
		struct stat now;
		char *forged;

		assert_int_equal(fstat(fd, &now), 0);
		forged =
		    xasprintf("%.*s dev=%llu ino=%llu size=%lld mtime=%lld.%09ld ctime=%lld.%09ld "
			      "sha256=%s",
			      (int)strlen("lg-verified 1"), stamp2, (unsigned long long)now.st_dev,
			      (unsigned long long)now.st_ino, (long long)now.st_size,
			      (long long)now.st_mtim.tv_sec, now.st_mtim.tv_nsec,
			      (long long)now.st_ctim.tv_sec, now.st_ctim.tv_nsec,
			      strstr(stamp2, "sha256=") + 7);
		write_path(stamp_path, forged, strlen(forged));
		free(forged);
	}
	assert_int_equal(lg_image_open("imp", &img, &err), 0);
	lg_image_free(img);
	assert_true(lg_image_verify("imp", &err) < 0);
	assert_non_null(strstr(err->msg, "rootfs.erofs: SHA-256 differs from the manifest"));
	lg_err_free(&err);
	assert_int_equal(pwrite(fd, &byte, 1, mid), 1);
	assert_int_equal(lg_image_verify("imp", &err), 0);
	free(stamp2);

	/* Size and magic are checked on every open, stamp or not. */
	assert_int_equal(pwrite(fd, "x", 1, st.st_size), 1);
	assert_true(lg_image_open("imp", &img, &err) < 0);
	assert_non_null(strstr(err->msg, "rootfs.erofs has"));
	lg_err_free(&err);
	assert_int_equal(ftruncate(fd, st.st_size), 0);
	{
		uint8_t magic[4];

		assert_int_equal(pread(fd, magic, 4, 1024), 4);
		assert_memory_equal(magic, "\xe2\xe1\xf5\xe0", 4);
		assert_int_equal(pwrite(fd, "\0\0\0\0", 4, 1024), 4);
		assert_true(lg_image_open("imp", &img, &err) < 0);
		assert_non_null(strstr(err->msg, "rootfs.erofs does not have the expected magic"));
		lg_err_free(&err);
		assert_int_equal(pwrite(fd, magic, 4, 1024), 4);
	}
	close(fd);
	assert_int_equal(lg_image_verify("imp", &err), 0);

	/* Missing. */
	free(cmd);
	cmd = xasprintf("%s.away", rpath);
	assert_int_equal(rename(rpath, cmd), 0);
	expect_damaged("imp", "rootfs.erofs is missing", rebuild);
	/* A rebuild command with a terminal escape in it is not printed. */
	{
		char *mpath = xasprintf("%s/images/imp/manifest.json", home);
		char *orig = read_text(mpath);
		char *text;

		m = load_manifest("imp");
		json_object_set_new(m, "rebuild", json_string("luminaguard \x1b]0;owned\x07"));
		text = json_dumps(m, 0);
		write_path(mpath, text, strlen(text));
		expect_damaged("imp", "rootfs.erofs is missing",
			       "luminaguard image build --name imp");
		write_path(mpath, orig, strlen(orig));
		json_decref(m);
		free(text);
		free(orig);
		free(mpath);
	}
	assert_int_equal(rename(cmd, rpath), 0);
	free(cmd);
	assert_int_equal(lg_image_verify("imp", &err), 0);

	/* A hostile tarball: one line, nothing left behind, the good image untouched. */
	cmd = xasprintf("%s/hostile.tar", home);
	write_hostile_tar(cmd);
	o.name = "evil";
	o.import_tar = cmd;
	assert_true(lg_image_build(&o, &img, &err) < 0);
	assert_null(img);
	assert_null(strchr(err->msg, '\n'));
	assert_non_null(strstr(err->msg, "build image 'evil'"));
	lg_err_free(&err);
	assert_store_clean(only_imp);
	out = xasprintf("%s/escape", home);
	assert_int_equal(access(out, F_OK), -1);
	free(out);
	free(cmd);

	/* A missing tarball and contradictory options fail before anything is made. */
	o.import_tar = "/nonexistent/rootfs.tar";
	assert_true(lg_image_build(&o, &img, &err) < 0);
	assert_non_null(strstr(err->msg, "/nonexistent/rootfs.tar"));
	lg_err_free(&err);
	{
		static const char *const pkgs[] = {"python3", NULL};
		o.import_tar = odd_tar;
		o.packages = pkgs;
		assert_true(lg_image_build(&o, &img, &err) < 0);
		assert_int_equal(err->errnum, EINVAL);
		lg_err_free(&err);
		o.packages = NULL;
		o.compress = "zstd";
		assert_true(lg_image_build(&o, &img, &err) < 0);
		assert_non_null(strstr(err->msg, "zstd"));
		lg_err_free(&err);
		o.import_tar = NULL;
		o.compress = "none";
		assert_true(lg_image_build(&o, &img, &err) < 0);
		assert_non_null(strstr(err->msg, "--compress"));
		lg_err_free(&err);
	}
	/* Interrupted (Ctrl-C caught by the CLI): abandoned, nothing left. */
	o.import_tar = odd_tar;
	o.compress = NULL;
	o.cancelled = cancel_now;
	assert_true(lg_image_build(&o, &img, &err) < 0);
	assert_non_null(strstr(err->msg, "interrupted"));
	lg_err_free(&err);
	o.cancelled = NULL;
	assert_store_clean(only_imp);

	/* Rebuilt in place, uncompressed: the manifest and the rebuild command say so. */
	o.name = "imp";
	o.compress = "none";
	if (lg_image_build(&o, &img, &err) < 0)
		fail_msg("rebuild: %s", err->msg);
	assert_non_null(strstr(img->rebuild, " --compress none"));
	lg_image_free(img);
	m = load_manifest("imp");
	assert_string_equal(jstr(json_object_get(m, "rootfs"), "compression"), "none");
	json_decref(m);
	assert_int_equal(lg_image_verify("imp", &err), 0);
	assert_store_clean(only_imp);

	free(k);
	free(rebuild);
	free(rpath);
	free(stamp_path);
	free(libexec);
	lg_rm_rf(home);
	free(abs_home);
	free(root);
	free(exe);
	free(tar);
	free(odd_tar);
	free(home);
}

/*
 * The Debian path with mmdebstrap replaced by a script that copies a
 * handmade tarball to the target it is given: the spec's defaults, the
 * flags overriding them, the manifest, and a failing mmdebstrap.
 */
static void test_image_rootfs_debian_fake(void **state)
{
	static const char *const only_py[] = {"py", NULL};
	static const char *const curl[] = {"curl", NULL};
	char *home, *abs_home, *root, *exe, *bin, *script, *spec_path, *log, *want, *old_path;
	struct lg_image_build_opts o = {0};
	struct lg_image_spec *spec = NULL;
	struct lg_image *img = NULL;
	struct lg_err *err = NULL;
	json_t *m, *r, *d;
	uint8_t *k;
	size_t klen;
	char *args;

	if (!have_program("mkfs.erofs") || !have_program("tar")) {
		fprintf(stderr, "skipping: needs mkfs.erofs (erofs-utils) and tar\n");
		skip();
	}
	home = set_home();
	abs_home = realpath(home, NULL);
	root = xasprintf("%s/kernels/1.0", home);
	exe = xasprintf("%s/static-exe", home);
	make_kernel_tree(root, "1.0");
	k = make_vmlinux(true, 8192, &klen);
	write_path(exe, k, klen);
	make_rootfs_tar(home);
	bin = xasprintf("%s/bin", home);
	log = xasprintf("%s/mmdebstrap.args", home);
	assert_int_equal(mkdir(bin, 0755), 0);
	script = xasprintf("%s/mmdebstrap", bin);
	{
		char *text = xasprintf(
		    "#!/bin/sh\n"
		    "printf '%%s\\n' \"$@\" > '%s'\n"
		    "[ \"${LG_FAKE_RC:-0}\" = 0 ] || { echo 'E: no network' >&2; exit 1; }\n"
		    "for a; do case \"$a\" in */rootfs.tar) cp '%s/rootfs.tar' \"$a\";; "
		    "esac; done\n",
		    log, home);
		write_path(script, text, strlen(text));
		free(text);
	}
	old_path = xstrdup(getenv("PATH"));
	{
		char *path = xasprintf("%s:%s", bin, old_path);
		setenv("PATH", path, 1);
		lg_env_reload();
		free(path);
	}
	spec_path = xasprintf("%s/py.json", home);
	{
		static const char text[] = "{\"name\": \"py\", \"suite\": \"bookworm\", "
					   "\"packages\": [\"python3\", \"git\"], "
					   "\"env\": {\"PYTHONDONTWRITEBYTECODE\": \"1\"}, "
					   "\"workdir\": \"/work\", \"user\": \"agent\"}\n";
		write_path(spec_path, text, strlen(text));
	}
	assert_int_equal(lg_image_spec_load(spec_path, &spec, &err), 0);

	/* The spec alone: its name, suite and packages. */
	o.agent_path = exe;
	o.busybox_path = exe;
	o.spec = spec;
	o.spec_path = spec_path;
	if (lg_image_build(&o, &img, &err) < 0) {
		if (strstr(err->msg, "subordinate ids") != NULL) {
			fprintf(stderr, "skipping: %s\n", err->msg);
			lg_err_free(&err);
			setenv("PATH", old_path, 1);
			lg_env_reload();
			lg_rm_rf(home);
			skip();
		}
		fail_msg("build: %s", err->msg);
	}
	assert_string_equal(img->name, "py");
	assert_int_equal(img->kind, LG_IMAGE_ROOTFS);
	assert_string_equal(img->suite, "bookworm");
	assert_string_equal(img->packages[0], "python3");
	assert_string_equal(img->packages[1], "git");
	assert_null(img->packages[2]);
	assert_string_equal(img->env[0], "PYTHONDONTWRITEBYTECODE=1");
	assert_null(img->env[1]);
	assert_string_equal(img->workdir, "/work");
	assert_string_equal(img->user, "agent");
	want = xasprintf("luminaguard image build -f %s/py.json --agent %s/static-exe --busybox "
			 "%s/static-exe",
			 abs_home, abs_home, abs_home);
	assert_string_equal(img->rebuild, want);
	free(want);
	lg_image_free(img);
	args = read_text(log);
	assert_non_null(strstr(args, "--include=ca-certificates,python3,git\n"));
	assert_non_null(strstr(args, "\nbookworm\n"));
	free(args);
	m = load_manifest("py");
	r = json_object_get(m, "rootfs");
	assert_string_equal(jstr(r, "source"), "debian");
	assert_string_equal(jstr(r, "suite"), "bookworm");
	assert_int_equal(json_array_size(json_object_get(r, "packages")), 2);
	d = json_object_get(m, "defaults");
	assert_string_equal(json_string_value(json_array_get(json_object_get(d, "env"), 0)),
			    "PYTHONDONTWRITEBYTECODE=1");
	assert_string_equal(jstr(d, "workdir"), "/work");
	assert_string_equal(jstr(d, "user"), "agent");
	json_decref(m);
	/* The tarball mmdebstrap wrote does not stay in the image. */
	{
		char *p = xasprintf("%s/images/py/rootfs.tar", home);
		assert_int_equal(access(p, F_OK), -1);
		free(p);
	}

	/* --packages replaces the spec's list, it does not add to it. */
	o.packages = curl;
	if (lg_image_build(&o, &img, &err) < 0)
		fail_msg("build: %s", err->msg);
	assert_string_equal(img->packages[0], "curl");
	assert_null(img->packages[1]);
	want = xasprintf("luminaguard image build -f %s/py.json --packages curl --agent "
			 "%s/static-exe --busybox %s/static-exe",
			 abs_home, abs_home, abs_home);
	assert_string_equal(img->rebuild, want);
	free(want);
	lg_image_free(img);
	args = read_text(log);
	assert_non_null(strstr(args, "--include=ca-certificates,curl\n"));
	assert_null(strstr(args, "python3"));
	free(args);

	/* mmdebstrap fails: one line, the previous image still there and good, nothing else. */
	setenv("LG_FAKE_RC", "1", 1);
	assert_true(lg_image_build(&o, &img, &err) < 0);
	assert_null(strchr(err->msg, '\n'));
	assert_non_null(strstr(err->msg, "build image 'py'"));
	lg_err_free(&err);
	unsetenv("LG_FAKE_RC");
	assert_store_clean(only_py);
	assert_int_equal(lg_image_verify("py", &err), 0);

	setenv("PATH", old_path, 1);
	lg_env_reload();
	lg_image_spec_free(spec);
	free(old_path);
	free(k);
	free(bin);
	free(log);
	free(script);
	free(spec_path);
	lg_rm_rf(home);
	free(abs_home);
	free(root);
	free(exe);
	free(home);
}

/* Kernel trees to try: the user's fetched kernels, then the example trees. */
static size_t real_kernel_trees(char **out, size_t max)
{
	char *saved = getenv("LUMINAGUARD_HOME") ? xstrdup(getenv("LUMINAGUARD_HOME")) : NULL;
	char *kernels, *pat;
	const char *pats[2];
	size_t n = 0;

	unsetenv("LUMINAGUARD_HOME");
	lg_env_reload();
	kernels = lg_kernels_dir();
	if (saved != NULL) {
		setenv("LUMINAGUARD_HOME", saved, 1);
		free(saved);
	}
	lg_env_reload();
	pat = xasprintf("%s/*/boot/vmlinuz-*", kernels);
	pats[0] = pat;
	pats[1] = "/tmp/k/linux-image-*/boot/vmlinuz-*";
	for (size_t p = 0; p < ARRAY_SIZE(pats); p++) {
		glob_t g;

		if (glob(pats[p], 0, NULL, &g) != 0)
			continue;
		for (size_t i = 0; i < g.gl_pathc && n < max; i++) {
			char *b = strstr(g.gl_pathv[i], "/boot/");
			out[n++] = strndup(g.gl_pathv[i], (size_t)(b - g.gl_pathv[i]));
		}
		globfree(&g);
	}
	free(pat);
	free(kernels);
	return n;
}

/* With real Debian kernel trees and a built lg-agent, build real images (xz and lz4 kernels). */
static void test_image_build_real(void **state)
{
	const char *agent = LG_BUILD_DIR "/lg-agent";
	char *kdirs[4];
	size_t n = real_kernel_trees(kdirs, ARRAY_SIZE(kdirs));
	char *home;

	if (n == 0 || access(agent, X_OK) != 0 || access("/bin/busybox", X_OK) != 0) {
		fprintf(stderr,
			"skipping: needs a kernel (scripts/fetch-kernel.sh), %s and /bin/busybox\n",
			agent);
		for (size_t i = 0; i < n; i++)
			free(kdirs[i]);
		skip();
	}
	home = set_home();
	for (size_t i = 0; i < n; i++) {
		char name[32];
		struct lg_image_build_opts o = {
		    .name = name, .kernel_dir = kdirs[i], .agent_path = agent};
		struct lg_image *img = NULL;
		struct lg_err *err = NULL;

		snprintf(name, sizeof(name), "real%zu", i);
		if (lg_image_build(&o, &img, &err) < 0)
			fail_msg("build from %s: %s", kdirs[i], err->msg);
		assert_int_equal(lg_image_verify(name, &err), 0);
		assert_string_equal(img->modules[0], "virtio_ring");
		assert_string_equal(img->modules[3], "virtio_console");
		assert_int_equal(lg_vmlinux_check(img->kernel, &err), 0);
		lg_image_free(img);
		free(kdirs[i]);
	}
	lg_rm_rf(home);
	free(home);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sha256_vectors),
	    cmocka_unit_test(test_sha256_file),
	    cmocka_unit_test(test_cpio_roundtrip),
	    cmocka_unit_test(test_vmlinux_xz),
	    cmocka_unit_test(test_vmlinux_lz4),
	    cmocka_unit_test(test_vmlinux_unsupported),
	    cmocka_unit_test(test_vmlinux_check),
	    cmocka_unit_test(test_kmod_depends),
	    cmocka_unit_test(test_kmod_malformed),
	    cmocka_unit_test(test_kmod_sort),
	    cmocka_unit_test(test_kmod_resolve),
	    cmocka_unit_test(test_image_names),
	    cmocka_unit_test(test_image_open_errors),
	    cmocka_unit_test(test_image_build_synthetic),
	    cmocka_unit_test(test_image_build_real),
	    cmocka_unit_test(test_image_rootfs_import),
	    cmocka_unit_test(test_image_rootfs_debian_fake),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
