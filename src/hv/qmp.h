/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small QMP (QEMU Machine Protocol) client: one JSON object per line over
 * a unix socket.  QEMU is a process we started, but once a guest runs it is
 * the process a guest escape would own, so replies are parsed with limits
 * like any other untrusted input.
 */
#ifndef LG_HV_QMP_H
#define LG_HV_QMP_H

#include "common/err.h"
#include "proto/proto.h"

#include <jansson.h>
#include <stdbool.h>

#define QMP_MAX_LINE (1u << 20)

enum qmp_kind {
	QMP_GREETING,
	QMP_RETURN,
	QMP_ERROR,
	QMP_EVENT,
};

struct qmp_msg {
	enum qmp_kind kind;
	json_t *json;	       /* the whole object (owned) */
	const char *event;     /* QMP_EVENT: name */
	const char *err_class; /* QMP_ERROR: class */
	const char *err_desc;  /* QMP_ERROR: desc */
};

/* Parses one line.  0 on success (free with qmp_msg_clear), -EPROTO otherwise. */
int qmp_parse_line(const char *line, size_t len, struct qmp_msg *out, struct lg_err **err);
void qmp_msg_clear(struct qmp_msg *m);

struct qmp {
	int fd;
	struct lg_buf in;
	bool shutdown_seen; /* a SHUTDOWN event arrived */
};

/*
 * Takes ownership of fd: reads the greeting and negotiates capabilities.
 * On error the fd is closed.
 */
int qmp_open(struct qmp *q, int fd, int timeout_ms, struct lg_err **err);
/*
 * Runs one command.  args may be NULL (borrowed).  On success *ret (if
 * non-NULL) gets the "return" value with a new reference.  A QMP error
 * reply becomes an lg_err with QEMU's description.
 */
int qmp_execute(struct qmp *q, const char *cmd, json_t *args, json_t **ret, int timeout_ms,
		struct lg_err **err);
/*
 * The same, with fd passed along (SCM_RIGHTS), for "getfd": QEMU takes its
 * own copy; the caller keeps and closes fd.
 */
int qmp_execute_fd(struct qmp *q, const char *cmd, json_t *args, int fd, json_t **ret,
		   int timeout_ms, struct lg_err **err);
void qmp_close(struct qmp *q);

#endif
