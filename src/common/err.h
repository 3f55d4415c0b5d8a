/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Error reporting, in the style of crun: a fallible function returns a
 * negative value and fills *err with an errno and a message; callers add
 * context with lg_err_wrap() and pass it up.  The message a user finally
 * sees says what failed, on what, and why.
 */
#ifndef LG_COMMON_ERR_H
#define LG_COMMON_ERR_H

#include <stdarg.h>

struct lg_err {
	int errnum; /* a positive errno, always (EIO when a caller gave none) */
	char *msg;
};

/*
 * Records an error in *err (if err is non-NULL and *err is still NULL) and
 * returns -errnum.  errnum must be a real errno: callers compare codes, so
 * an error without one (0) is a bug and becomes EIO, never -1 (= -EPERM).
 * Never fails: on allocation failure a static message is used.
 */
int lg_err_set(struct lg_err **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Like lg_err_set(), for messages that already say why: errnum is kept
 * for callers to test, but its strerror() is not appended.
 */
int lg_err_msg(struct lg_err **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like lg_err_set() with errnum = errno at the time of the call. */
int lg_err_sys(struct lg_err **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes "CONTEXT: " to the message of *err.  Returns the error's code. */
int lg_err_wrap(struct lg_err **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The error's code as a return value: -errnum. */
int lg_err_code(const struct lg_err *err);

void lg_err_free(struct lg_err **err);

/* Prints "luminaguard: MSG" to stderr and frees *err. */
void lg_err_report(const char *prog, struct lg_err **err);

#endif
