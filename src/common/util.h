/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers shared by host and guest: cleanup attributes, allocation, I/O. */
#ifndef LG_COMMON_UTIL_H
#define LG_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

void lg_freep(void *p);
void lg_closep(int *fd);
void lg_fclosep(FILE **f);

#define cleanup_free  __attribute__((cleanup(lg_freep)))
#define cleanup_close __attribute__((cleanup(lg_closep)))
#define cleanup_file  __attribute__((cleanup(lg_fclosep)))

/* Hands ownership of *p to the caller: returns it and leaves NULL behind. */
#define steal_pointer(pp)                                                                          \
	({                                                                                         \
		__typeof__(*(pp)) steal_tmp_ = *(pp);                                              \
		*(pp) = NULL;                                                                      \
		steal_tmp_;                                                                        \
	})
static inline int steal_fd(int *fd)
{
	int ret = *fd;
	*fd = -1;
	return ret;
}

/* Allocation that cannot fail: out of memory aborts, as in crun and QEMU. */
void *xmalloc(size_t n);
void *xzalloc(size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Frees a NULL-terminated array of strings and the strings (NULL is fine). */
void lg_strv_free(char **v);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Full read/write that retries on EINTR and short transfers.  -errno on error. */
ssize_t lg_write_all(int fd, const void *buf, size_t n);
/* Reads until n bytes or EOF; returns bytes read or -errno. */
ssize_t lg_read_all(int fd, void *buf, size_t n);

/*
 * Reads exactly n bytes at offset off of a file of fsize bytes: -EINVAL if
 * the range is outside the file (checked without overflow), -EIO if short.
 */
int lg_pread_exact(int fd, void *buf, size_t n, uint64_t off, uint64_t fsize);

/* Milliseconds on CLOCK_MONOTONIC. */
uint64_t lg_now_ms(void);
uint64_t lg_now_ns(void);

/*
 * 2 * nbytes hex digits of getrandom(2) (nbytes <= 32), NUL not written.
 * For ids that must not be guessed: where getrandom fails the process
 * aborts rather than hand out a predictable one.
 */
void lg_random_hex(char *out, size_t nbytes);

int lg_set_nonblock(int fd, bool on);
int lg_set_cloexec(int fd, bool on);

/* Parses a decimal unsigned integer in [min, max]; whole string must match. */
int lg_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* mkdir -p with the given mode for every created component. -errno on error. */
int lg_mkdir_p(const char *path, mode_t mode);
/* rm -rf of a directory tree, not following symlinks. -errno on error. */
int lg_rm_rf(const char *path);

#endif
