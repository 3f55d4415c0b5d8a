/* SPDX-License-Identifier: Apache-2.0 */
#include "guest/request.h"

#include "common/util.h"
#include "proto/proto.h"

#include <errno.h>
#include <stdlib.h>

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void req_free(struct req *rq)
{
	free(rq->path);
	free(rq->cwd);
	free(rq->user);
	free(rq->hostname);
	free(rq->machine_id);
	strv_free(rq->argv, rq->argc);
	strv_free(rq->env, rq->envc);
}

static int strv_push(char ***v, size_t *n, size_t max, const struct lg_tlv *t, const char *what,
		     struct lg_err **err)
{
	char *s;

	if (*n >= max)
		return lg_err_set(err, E2BIG, "more than %zu %s fields", max, what);
	if (lg_tlv_strdup(t, &s) < 0)
		return lg_err_set(err, EPROTO, "%s field contains a NUL byte", what);
	/* Room for the new string and a NULL terminator (for execvp). */
	if ((*n & (*n + 1)) == 0 || *n < 7)
		*v = xrealloc(*v, (*n + 2 < 8 ? 8 : 2 * (*n + 1)) * sizeof(char *));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
	return 0;
}

static int set_str(char **dst, const struct lg_tlv *t, const char *what, struct lg_err **err)
{
	char *s;

	if (lg_tlv_strdup(t, &s) < 0)
		return lg_err_set(err, EPROTO, "%s field contains a NUL byte", what);
	free(*dst);
	*dst = s;
	return 0;
}

static int get_u32(const struct lg_tlv *t, uint32_t *out, const char *what, struct lg_err **err)
{
	if (lg_tlv_u32(t, out) < 0)
		return lg_err_set(err, EPROTO, "%s field has length %u, want 4", what, t->len);
	return 0;
}

static int get_u64(const struct lg_tlv *t, uint64_t *out, const char *what, struct lg_err **err)
{
	if (lg_tlv_u64(t, out) < 0)
		return lg_err_set(err, EPROTO, "%s field has length %u, want 8", what, t->len);
	return 0;
}

int req_parse(struct req *rq, const uint8_t *p, size_t n, struct lg_err **err)
{
	struct lg_tlv_iter it;
	struct lg_tlv t;
	int r;

	lg_tlv_iter_init(&it, p, n);
	while ((r = lg_tlv_next(&it, &t)) == 1) {
		switch (t.tag) {
		case LG_TAG_PATH:
			r = set_str(&rq->path, &t, "PATH", err);
			break;
		case LG_TAG_CWD:
			r = set_str(&rq->cwd, &t, "CWD", err);
			break;
		case LG_TAG_USER:
			r = set_str(&rq->user, &t, "USER", err);
			break;
		case LG_TAG_ARGV:
			r = strv_push(&rq->argv, &rq->argc, MAX_ARGS, &t, "ARGV", err);
			break;
		case LG_TAG_ENV:
			r = strv_push(&rq->env, &rq->envc, MAX_ENVS, &t, "ENV", err);
			break;
		case LG_TAG_MODE:
			r = get_u32(&t, &rq->mode, "MODE", err);
			rq->has_mode = true;
			break;
		case LG_TAG_OFFSET:
			r = get_u64(&t, &rq->offset, "OFFSET", err);
			break;
		case LG_TAG_LENGTH:
			r = get_u32(&t, &rq->length, "LENGTH", err);
			rq->has_length = true;
			break;
		case LG_TAG_FLAGS:
			r = get_u32(&t, &rq->flags, "FLAGS", err);
			break;
		case LG_TAG_TIMEOUT_MS:
			r = get_u32(&t, &rq->timeout_ms, "TIMEOUT_MS", err);
			break;
		case LG_TAG_SIGNAL:
			r = get_u32(&t, &rq->signal, "SIGNAL", err);
			rq->has_signal = true;
			break;
		case LG_TAG_DATA:
			rq->data = t.val;
			rq->data_len = t.len;
			break;
		case LG_TAG_SEED:
			if (t.len < LG_ADOPT_SEED_MIN || t.len > LG_ADOPT_SEED_MAX)
				return lg_err_set(err, EPROTO,
						  "SEED field has length %u, want %u..%u", t.len,
						  LG_ADOPT_SEED_MIN, LG_ADOPT_SEED_MAX);
			rq->seed = t.val;
			rq->seed_len = t.len;
			break;
		case LG_TAG_REALTIME_NS:
			r = get_u64(&t, &rq->realtime_ns, "REALTIME_NS", err);
			rq->has_realtime = true;
			break;
		case LG_TAG_HOSTNAME:
			if (!lg_hostname_valid((const char *)t.val, t.len))
				return lg_err_set(
				    err, EINVAL,
				    "HOSTNAME is not a hostname (1..%u letters, digits "
				    "or '-', not at either end)",
				    LG_HOSTNAME_MAX);
			r = set_str(&rq->hostname, &t, "HOSTNAME", err);
			break;
		case LG_TAG_MACHINE_ID:
			if (!lg_machine_id_valid((const char *)t.val, t.len))
				return lg_err_set(err, EINVAL,
						  "MACHINE_ID is not %u lowercase hex digits",
						  LG_MACHINE_ID_LEN);
			r = set_str(&rq->machine_id, &t, "MACHINE_ID", err);
			break;
		default:
			break; /* a field of another message: not ours to judge */
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return lg_err_set(err, EPROTO, "malformed TLV field");
	return 0;
}
