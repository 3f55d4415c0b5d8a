/* SPDX-License-Identifier: Apache-2.0 */
/* SHA-256 (FIPS 180-4), used to record and check image file digests. */
#ifndef LG_COMMON_SHA256_H
#define LG_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct lg_err;

#define LG_SHA256_LEN	  32
#define LG_SHA256_HEX_LEN 64

struct lg_sha256 {
	uint32_t h[8];
	uint64_t total; /* bytes hashed so far */
	uint8_t buf[64];
	size_t used; /* bytes pending in buf */
};

void lg_sha256_init(struct lg_sha256 *ctx);
void lg_sha256_update(struct lg_sha256 *ctx, const void *data, size_t len);
void lg_sha256_final(struct lg_sha256 *ctx, uint8_t out[LG_SHA256_LEN]);

/* One-shot digest of a buffer. */
void lg_sha256(const void *data, size_t len, uint8_t out[LG_SHA256_LEN]);

/* Lower-case hex of a digest; hex must hold LG_SHA256_HEX_LEN + 1 bytes. */
void lg_sha256_hex(const uint8_t digest[LG_SHA256_LEN], char hex[LG_SHA256_HEX_LEN + 1]);

/* The digest of a buffer, straight to hex. */
void lg_sha256_hex_of(const void *data, size_t len, char hex[LG_SHA256_HEX_LEN + 1]);

/*
 * Hex digest of everything read from fd (from its current offset to EOF).
 * If size_out is non-NULL it receives the number of bytes hashed.  Does not
 * close fd.  Returns 0, or negative with *err set ("read: ..." without a
 * path; callers wrap).
 */
int lg_sha256_fd(int fd, char hex_out[LG_SHA256_HEX_LEN + 1], uint64_t *size_out,
		 struct lg_err **err);

/* Hex digest of the file at path.  Returns 0, or negative with *err set. */
int lg_sha256_file(const char *path, char hex_out[LG_SHA256_HEX_LEN + 1], struct lg_err **err);

#endif
