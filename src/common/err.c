/* SPDX-License-Identifier: Apache-2.0 */
#include "common/err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct lg_err oom_err = {ENOMEM, (char *)"out of memory"};

/*
 * Every error carries a real code: callers compare codes (-EADDRINUSE,
 * -ENOENT...), and -1 would read as -EPERM.  A caller that has none to
 * give is a bug; it gets EIO rather than a code that means something else.
 */
static int real_code(int errnum)
{
	return errnum > 0 ? errnum : EIO;
}

static int code_of(int errnum)
{
	return -real_code(errnum);
}

static int __attribute__((format(printf, 4, 0)))
vset(struct lg_err **err, int errnum, bool with_strerror, const char *fmt, va_list ap)
{
	char *msg = NULL;
	char *full = NULL;
	struct lg_err *e;

	if (err == NULL || *err != NULL)
		return code_of(errnum);
	if (vasprintf(&msg, fmt, ap) < 0) {
		*err = &oom_err;
		return code_of(errnum);
	}
	if (errnum > 0 && with_strerror) {
		if (asprintf(&full, "%s: %s", msg, strerror(errnum)) < 0)
			full = NULL;
		free(msg);
		msg = full;
	}
	e = malloc(sizeof(*e));
	if (e == NULL || msg == NULL) {
		free(e);
		free(msg);
		*err = &oom_err;
		return code_of(errnum);
	}
	e->errnum = real_code(errnum);
	e->msg = msg;
	*err = e;
	return code_of(errnum);
}

int lg_err_set(struct lg_err **err, int errnum, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = vset(err, errnum, true, fmt, ap);
	va_end(ap);
	return ret;
}

int lg_err_msg(struct lg_err **err, int errnum, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = vset(err, errnum, false, fmt, ap);
	va_end(ap);
	return ret;
}

int lg_err_sys(struct lg_err **err, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = vset(err, saved, true, fmt, ap);
	va_end(ap);
	errno = saved;
	return ret;
}

int lg_err_wrap(struct lg_err **err, const char *fmt, ...)
{
	char *prefix = NULL;
	char *full = NULL;
	va_list ap;

	if (err == NULL || *err == NULL)
		return -1;
	if (*err == &oom_err)
		return -ENOMEM;
	va_start(ap, fmt);
	if (vasprintf(&prefix, fmt, ap) < 0)
		prefix = NULL;
	va_end(ap);
	if (prefix != NULL && asprintf(&full, "%s: %s", prefix, (*err)->msg) >= 0) {
		free((*err)->msg);
		(*err)->msg = full;
	}
	free(prefix);
	return code_of((*err)->errnum);
}

int lg_err_code(const struct lg_err *err)
{
	return code_of(err != NULL ? err->errnum : 0);
}

void lg_err_free(struct lg_err **err)
{
	if (err == NULL || *err == NULL)
		return;
	if (*err != &oom_err) {
		free((*err)->msg);
		free(*err);
	}
	*err = NULL;
}

void lg_err_report(const char *prog, struct lg_err **err)
{
	if (err == NULL || *err == NULL)
		return;
	fprintf(stderr, "%s: %s\n", prog, (*err)->msg);
	lg_err_free(err);
}
