/* SPDX-License-Identifier: Apache-2.0 */
/* Text encodings for bytes that cross into JSON: UTF-8 checks and base64. */
#ifndef LG_COMMON_ENCODING_H
#define LG_COMMON_ENCODING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True if p[0..n) is well-formed UTF-8 (no overlongs, surrogates or NULs). */
bool lg_utf8_valid(const uint8_t *p, size_t n);
/*
 * A NUL-terminated copy of p[0..n) with every ill-formed sequence (and NUL)
 * replaced by U+FFFD, so guest output can always become a JSON string.
 */
char *lg_utf8_sanitize(const uint8_t *p, size_t n, size_t *out_len);

/* Standard base64 with padding; NUL-terminated, new string. */
char *lg_base64_encode(const uint8_t *p, size_t n);

/* The value of one hexadecimal digit (either case), or -1 if c is not one. */
int lg_hex_digit(unsigned char c);
/*
 * Decodes standard base64 (padding required, no whitespace).  Returns 0 and
 * a new buffer, or -EINVAL on any malformed input.
 */
int lg_base64_decode(const char *s, size_t len, uint8_t **out, size_t *out_len);

#endif
