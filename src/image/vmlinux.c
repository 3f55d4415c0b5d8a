/* SPDX-License-Identifier: Apache-2.0 */
#include "image/vmlinux.h"

#include "common/err.h"
#include "common/util.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <lzma.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A decompressed kernel is tens of MiB; refuse to inflate without bound. */
#define VMLINUX_MAX_SIZE (1ull << 30)
#define VMLINUZ_MAX_SIZE (256u << 20)
/* A PVH note lives in a small PT_NOTE segment; cap what we read of one. */
#define NOTE_SEG_MAX		 (1u << 20)
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#define LZ4_LEGACY_MAGIC     0x184c2102u
#define LZ4_COMPRESSBOUND(n) ((n) + (n) / 255 + 16)

static const uint8_t xz_magic[6] = {0xfd, '7', 'z', 'X', 'Z', 0x00};
static const uint8_t lz4_magic[4] = {0x02, 0x21, 0x4c, 0x18};

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Names the compression of a bzImage payload from its first bytes. */
static const char *compression_name(const uint8_t *p, size_t len)
{
	static const struct {
		const char *name;
		uint8_t magic[6];
		size_t len;
	} magics[] = {
	    {"xz", {0xfd, '7', 'z', 'X', 'Z', 0x00}, 6},
	    {"gzip", {0x1f, 0x8b}, 2},
	    {"zstd", {0x28, 0xb5, 0x2f, 0xfd}, 4},
	    {"bzip2", {'B', 'Z', 'h'}, 3},
	    {"lz4", {0x02, 0x21, 0x4c, 0x18}, 4},
	    {"lzo", {0x89, 'L', 'Z', 'O'}, 4},
	    {"lzma", {0x5d, 0x00, 0x00}, 3},
	    {"ELF (uncompressed)", {0x7f, 'E', 'L', 'F'}, 4},
	};

	for (size_t i = 0; i < ARRAY_SIZE(magics); i++)
		if (len >= magics[i].len && memcmp(p, magics[i].magic, magics[i].len) == 0)
			return magics[i].name;
	return "an unknown format";
}

/* Where decompressed kernel bytes go: checks the ELF magic and bounds the size. */
struct sink {
	int fd;
	uint64_t total;
};

static int sink_write(struct sink *s, const uint8_t *p, size_t n, struct lg_err **err)
{
	ssize_t w;

	if (n == 0)
		return 0;
	if (s->total == 0 && (n < SELFMAG || memcmp(p, ELFMAG, SELFMAG) != 0))
		return lg_err_msg(err, ENOEXEC, "the decompressed kernel is not an ELF file");
	if (n > VMLINUX_MAX_SIZE - s->total)
		return lg_err_msg(err, EFBIG, "the decompressed kernel is larger than %llu bytes",
				  (unsigned long long)VMLINUX_MAX_SIZE);
	w = lg_write_all(s->fd, p, n);
	if (w < 0)
		return lg_err_set(err, (int)-w, "write the decompressed kernel");
	s->total += n;
	return 0;
}

/*
 * Decodes the xz stream at in[0..len).  Bytes after the end of the stream
 * are ignored: in a bzImage the payload may be followed by other data.
 */
static int xz_decode(const uint8_t *in, size_t len, struct sink *out, struct lg_err **err)
{
	lzma_stream strm = LZMA_STREAM_INIT;
	cleanup_free uint8_t *buf = NULL;
	const size_t bufsz = 1 << 20;
	lzma_ret lr;
	int ret = 0;

	lr = lzma_stream_decoder(&strm, UINT64_MAX, 0);
	if (lr != LZMA_OK)
		return lg_err_msg(err, EIO, "cannot start the xz decoder (liblzma error %d)", lr);
	buf = xmalloc(bufsz);
	strm.next_in = in;
	strm.avail_in = len;
	for (;;) {
		strm.next_out = buf;
		strm.avail_out = bufsz;
		lr = lzma_code(&strm, LZMA_FINISH);
		if ((ret = sink_write(out, buf, bufsz - strm.avail_out, err)) < 0)
			break;
		if (lr == LZMA_STREAM_END)
			break;
		if (lr == LZMA_OK)
			continue;
		if (lr == LZMA_BUF_ERROR)
			ret = lg_err_msg(err, EBADMSG, "the kernel's xz stream is truncated");
		else if (lr == LZMA_MEM_ERROR)
			ret = lg_err_msg(err, ENOMEM, "xz decoding ran out of memory");
		else
			ret = lg_err_set(
			    err, 0, "the kernel's xz stream is corrupt (liblzma error %d)", lr);
		break;
	}
	lzma_end(&strm);
	return ret;
}

/*
 * One LZ4 block (lz4_Block_format.md): sequences of a token, literals, a
 * 2-byte match offset and a match length.  Every read and write is
 * bounds-checked.  Returns the decoded length or -1 on malformed input.
 */
static ssize_t lz4_block(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
	const uint8_t *ip = in, *iend = in + len;
	uint8_t *op = out, *oend = out + cap;

	while (ip < iend) {
		unsigned token = *ip++;
		size_t lit = token >> 4, mlen = token & 15, offset;
		uint8_t b;

		if (lit == 15) {
			do {
				if (ip == iend)
					return -1;
				b = *ip++;
				lit += b;
			} while (b == 255);
		}
		if (lit > (size_t)(iend - ip) || lit > (size_t)(oend - op))
			return -1;
		memcpy(op, ip, lit);
		ip += lit;
		op += lit;
		if (ip == iend)
			break; /* the last sequence has literals only */
		if (iend - ip < 2)
			return -1;
		offset = (size_t)ip[0] | (size_t)ip[1] << 8;
		ip += 2;
		if (offset == 0 || offset > (size_t)(op - out))
			return -1;
		if (mlen == 15) {
			do {
				if (ip == iend)
					return -1;
				b = *ip++;
				mlen += b;
			} while (b == 255);
		}
		mlen += 4;
		if (mlen > (size_t)(oend - op))
			return -1;
		/* Byte by byte: a match may overlap the bytes it produces. */
		for (const uint8_t *m = op - offset; mlen > 0; mlen--)
			*op++ = *m++;
	}
	return op - out;
}

/*
 * The LZ4 "legacy" frame the kernel's build uses (lz4 -l): the magic
 * 0x184C2102, then chunks of a 4-byte little-endian compressed size and an
 * independent block of at most 8 MiB of output.  The kernel appends the
 * uncompressed size as 4 more bytes; anything after the last chunk is
 * ignored.
 */
static int lz4_legacy_decode(const uint8_t *in, size_t len, struct sink *out, struct lg_err **err)
{
	const size_t chunk_max = 8u << 20;
	cleanup_free uint8_t *buf = NULL;
	size_t off = 4;
	int ret;

	if (len < 4 || get_le32(in) != LZ4_LEGACY_MAGIC)
		return lg_err_msg(err, EINVAL, "not an LZ4 legacy stream");
	buf = xmalloc(chunk_max);
	while (len - off >= 4) {
		uint32_t csize = get_le32(in + off);
		ssize_t n;

		if (csize == LZ4_LEGACY_MAGIC) { /* concatenated streams */
			off += 4;
			continue;
		}
		if (csize > len - off - 4) {
			/* The size the kernel's build appends must agree with what we got. */
			if (len - off == 4 && out->total > 0 && csize != (uint32_t)out->total)
				return lg_err_msg(err, EBADMSG,
						  "the kernel's lz4 stream decoded to %llu bytes, "
						  "its trailer says %u",
						  (unsigned long long)out->total, csize);
			if (out->total > 0)
				break; /* trailing bytes, e.g. the appended size */
			return lg_err_msg(err, EBADMSG, "the kernel's lz4 stream is truncated");
		}
		if (csize == 0 || csize > LZ4_COMPRESSBOUND(chunk_max))
			break;
		n = lz4_block(in + off + 4, csize, buf, chunk_max);
		if (n < 0)
			return lg_err_msg(err, EBADMSG, "the kernel's lz4 stream is corrupt");
		if ((ret = sink_write(out, buf, (size_t)n, err)) < 0)
			return ret;
		off += 4 + (size_t)csize;
	}
	return 0;
}

static int decode(const char *kind, const uint8_t *in, size_t len, struct sink *out,
		  struct lg_err **err)
{
	int ret = strcmp(kind, "xz") == 0 ? xz_decode(in, len, out, err)
					  : lz4_legacy_decode(in, len, out, err);

	if (ret == 0 && out->total == 0)
		ret = lg_err_msg(err, EBADMSG, "the kernel's %s stream is empty", kind);
	return ret;
}

/*
 * The boot protocol header (Documentation/x86/boot.rst) says where the
 * compressed payload is: setup_sects at 0x1f1, "HdrS" at 0x202, the
 * protocol version at 0x206, payload_offset/payload_length at 0x248/0x24c
 * (protocol 2.08+), relative to the protected-mode code after the setup.
 */
static int bzimage_payload(const uint8_t *p, size_t len, const uint8_t **payload,
			   size_t *payload_len)
{
	uint64_t setup_sects, off, plen;

	if (len < 0x250 || memcmp(p + 0x202, "HdrS", 4) != 0 || get_le16(p + 0x206) < 0x208)
		return -1;
	setup_sects = p[0x1f1] ? p[0x1f1] : 4;
	off = (setup_sects + 1) * 512 + get_le32(p + 0x248);
	plen = get_le32(p + 0x24c);
	if (off > len || plen > len - off || plen == 0)
		return -1;
	*payload = p + off;
	*payload_len = (size_t)plen;
	return 0;
}

/* The first occurrence of magic in p[0..len), or NULL. */
static const uint8_t *find_magic(const uint8_t *p, size_t len, const uint8_t *magic, size_t mlen)
{
	for (size_t i = 0; len >= mlen && i <= len - mlen; i++) {
		const uint8_t *hit = memchr(p + i, magic[0], len - mlen + 1 - i);
		if (hit == NULL)
			return NULL;
		i = (size_t)(hit - p);
		if (memcmp(hit, magic, mlen) == 0)
			return hit;
	}
	return NULL;
}

/* The first xz or lz4 magic in p[0..len), or NULL. */
static const uint8_t *next_stream(const uint8_t *p, size_t len, const char **kind)
{
	const uint8_t *x = find_magic(p, len, xz_magic, sizeof(xz_magic));
	const uint8_t *l = find_magic(p, len, lz4_magic, sizeof(lz4_magic));

	if (x != NULL && (l == NULL || x < l)) {
		*kind = "xz";
		return x;
	}
	*kind = "lz4";
	return l;
}

int lg_vmlinux_extract_mem(const void *data, size_t len, int out_fd, struct lg_err **err)
{
	const uint8_t *p = data;
	const uint8_t *payload, *q;
	struct sink out = {.fd = out_fd};
	const char *kind;
	size_t plen;
	int ret;

	if (len >= SELFMAG && memcmp(p, ELFMAG, SELFMAG) == 0)
		return sink_write(&out, p, len, err);
	if (bzimage_payload(p, len, &payload, &plen) == 0) {
		if (plen >= sizeof(xz_magic) && memcmp(payload, xz_magic, sizeof(xz_magic)) == 0)
			return decode("xz", payload, plen, &out, err);
		if (plen >= sizeof(lz4_magic) && memcmp(payload, lz4_magic, sizeof(lz4_magic)) == 0)
			return decode("lz4", payload, plen, &out, err);
		return lg_err_msg(err, ENOTSUP,
				  "kernel image is compressed with %s; not supported "
				  "(xz and lz4 are)",
				  compression_name(payload, plen));
	}
	/* Not a bzImage we understand: try each embedded stream in turn. */
	ret = lg_err_msg(err, ENOTSUP,
			 "no xz or lz4 compressed kernel found (not a bzImage or ELF file)");
	for (size_t from = 0;
	     from < len && (q = next_stream(p + from, len - from, &kind)) != NULL;) {
		lg_err_free(err);
		ret = decode(kind, q, len - (size_t)(q - p), &out, err);
		if (ret == 0 || out.total > 0)
			return ret;
		from = (size_t)(q - p) + 1;
	}
	return ret;
}

int lg_vmlinux_extract(const char *vmlinuz_path, const char *out_path, struct lg_err **err)
{
	cleanup_close int in = open(vmlinuz_path, O_RDONLY | O_CLOEXEC);
	cleanup_close int out = -1;
	cleanup_free uint8_t *buf = NULL;
	struct stat st;
	ssize_t n;
	int ret;

	if (in < 0) {
		if (errno == EACCES)
			return lg_err_sys(err,
					  "open `%s` (some distributions make kernels readable "
					  "only by root; use scripts/fetch-kernel.sh instead)",
					  vmlinuz_path);
		return lg_err_sys(err, "open `%s`", vmlinuz_path);
	}
	if (fstat(in, &st) < 0)
		return lg_err_sys(err, "stat `%s`", vmlinuz_path);
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > VMLINUZ_MAX_SIZE)
		return lg_err_msg(err, ENOEXEC, "`%s` is not a plausible kernel image",
				  vmlinuz_path);
	buf = xmalloc((size_t)st.st_size);
	n = lg_read_all(in, buf, (size_t)st.st_size);
	if (n < 0)
		return lg_err_set(err, (int)-n, "read `%s`", vmlinuz_path);
	if (n != st.st_size)
		return lg_err_msg(err, EIO, "`%s` changed while being read", vmlinuz_path);
	out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0)
		return lg_err_sys(err, "create `%s`", out_path);
	ret = lg_vmlinux_extract_mem(buf, (size_t)n, out, err);
	if (ret < 0)
		return lg_err_wrap(err, "extract the kernel from `%s`", vmlinuz_path);
	if (fsync(out) < 0 || close(steal_fd(&out)) < 0)
		return lg_err_sys(err, "write `%s`", out_path);
	return 0;
}

/* Looks for a "Xen" note of type PHYS32_ENTRY in notes[0..len). */
static bool has_pvh_note(const uint8_t *notes, size_t len)
{
	size_t off = 0;

	while (len - off >= 12) {
		uint32_t namesz = get_le32(notes + off);
		uint32_t descsz = get_le32(notes + off + 4);
		uint32_t type = get_le32(notes + off + 8);
		uint64_t name_pad = ((uint64_t)namesz + 3) & ~3ull;
		uint64_t desc_pad = ((uint64_t)descsz + 3) & ~3ull;

		off += 12;
		if (name_pad > len - off || desc_pad > len - off - name_pad)
			return false;
		if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
		    memcmp(notes + off, "Xen", 4) == 0)
			return true;
		off += (size_t)(name_pad + desc_pad);
	}
	return false;
}

int lg_vmlinux_check(const char *path, struct lg_err **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	Elf64_Ehdr eh;
	struct stat st;
	uint64_t fsize;

	if (fd < 0)
		return lg_err_sys(err, "open `%s`", path);
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat `%s`", path);
	fsize = (uint64_t)st.st_size;
	if (lg_pread_exact(fd, &eh, sizeof(eh), 0, fsize) < 0 ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
		return lg_err_msg(err, ENOEXEC, "`%s` is not an ELF file", path);
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64)
		return lg_err_msg(err, ENOEXEC, "`%s` is not an x86-64 kernel", path);
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum == PN_XNUM)
		return lg_err_msg(err, ENOEXEC, "`%s` has no usable program headers", path);
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		cleanup_free uint8_t *notes = NULL;
		Elf64_Phdr ph;

		if (lg_pread_exact(fd, &ph, sizeof(ph), eh.e_phoff + (uint64_t)i * sizeof(ph),
				   fsize) < 0)
			return lg_err_msg(err, EBADMSG, "`%s` has truncated program headers", path);
		if (ph.p_type != PT_NOTE || ph.p_filesz == 0 || ph.p_filesz > NOTE_SEG_MAX)
			continue;
		notes = xmalloc((size_t)ph.p_filesz);
		if (lg_pread_exact(fd, notes, (size_t)ph.p_filesz, ph.p_offset, fsize) < 0)
			return lg_err_msg(err, EBADMSG, "`%s` has a truncated note segment", path);
		if (has_pvh_note(notes, (size_t)ph.p_filesz))
			return 0;
	}
	return lg_err_msg(err, ENOEXEC,
			  "`%s` has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), so QEMU cannot "
			  "boot it directly; the kernel needs CONFIG_PVH=y",
			  path);
}
