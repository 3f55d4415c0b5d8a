/* SPDX-License-Identifier: Apache-2.0 */
#include "host/agent_client.h"

#include "common/util.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/*
 * Stop reading the user's stdin while this much is queued for the guest
 * (with a protocol-2 agent the stdin credit, LG_STDIN_WINDOW, binds first).
 */
#define OUT_HIGH_WATER (512u * 1024u)
/* A guest that ignores the guest-side timeout gets this much longer. */
#define EXEC_GRACE_MS	    10000u
#define REQUEST_TIMEOUT_MS  60000u
#define SHUTDOWN_TIMEOUT_MS 2000u
/* The code of every failure the guest reports (see agent_client.h). */
#define GUEST_REFUSED EREMOTEIO

struct lg_agent {
	int fd;
	int cancel_fd;
	struct lg_reader rd;
	struct lg_buf out;
	uint32_t next_id;
	uint32_t version; /* the agent's protocol, LG_PROTO_VERSION_MIN..LG_PROTO_VERSION */
	char *name;
	uint32_t request_timeout_ms;
	bool broken; /* a protocol error or EOF: no more requests */
};

/* The fields of one message, first occurrence of each tag. */
struct fields {
	struct lg_tlv f[LG_TAG_MAX_ + 1];
	bool have[LG_TAG_MAX_ + 1];
	const uint8_t *payload; /* the whole message, for a strict second look */
	size_t len;
};

static int collect(const uint8_t *payload, size_t len, struct fields *out)
{
	struct lg_tlv_iter it;
	struct lg_tlv t;
	int r;

	memset(out, 0, sizeof(*out));
	out->payload = payload;
	out->len = len;
	lg_tlv_iter_init(&it, payload, len);
	while ((r = lg_tlv_next(&it, &t)) == 1) {
		if (t.tag > LG_TAG_MAX_)
			continue; /* a newer guest's field */
		if (!out->have[t.tag]) {
			out->f[t.tag] = t;
			out->have[t.tag] = true;
		}
	}
	return r;
}

static int field_u32(const struct fields *f, uint16_t tag, uint32_t def, uint32_t *out)
{
	if (!f->have[tag]) {
		*out = def;
		return 0;
	}
	return lg_tlv_u32(&f->f[tag], out);
}

static int field_u64(const struct fields *f, uint16_t tag, uint64_t def, uint64_t *out)
{
	if (!f->have[tag]) {
		*out = def;
		return 0;
	}
	return lg_tlv_u64(&f->f[tag], out);
}

/* The MESSAGE field, sanitized for a terminal: printable ASCII only, bounded. */
static void field_msg(const struct fields *f, char *buf, size_t n)
{
	size_t j = 0;

	buf[0] = '\0';
	if (!f->have[LG_TAG_MESSAGE])
		return;
	for (uint32_t i = 0; i < f->f[LG_TAG_MESSAGE].len && j + 1 < n; i++) {
		uint8_t c = f->f[LG_TAG_MESSAGE].val[i];
		buf[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	buf[j] = '\0';
}

static int broken(struct lg_agent *a, struct lg_err **err, int errnum, const char *what)
{
	a->broken = true;
	return lg_err_set(err, errnum, "agent channel: %s", what);
}

/*
 * EOF on the channel: the agent ended the session or the VM is gone (the
 * guest powered itself off, or QEMU died).  -ECONNRESET tells callers this
 * apart from a refusal (errnum 0), a protocol error (-EPROTO) and a
 * channel already closed by an earlier error (-EPIPE, check_usable).
 */
static int vm_gone(struct lg_agent *a, struct lg_err **err)
{
	a->broken = true;
	return lg_err_msg(err, ECONNRESET, "agent channel: the guest closed the connection");
}

/* Sends what is queued without blocking; -errno on a dead channel. */
static int flush_some(struct lg_agent *a)
{
	while (lg_buf_pending(&a->out) > 0) {
		ssize_t w = write(a->fd, lg_buf_head(&a->out), lg_buf_pending(&a->out));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		lg_buf_consume(&a->out, (size_t)w);
	}
	return 0;
}

/* Reads what is available into the frame reader.  0, or -errno / -EPIPE on EOF. */
static int fill(struct lg_agent *a)
{
	size_t room;
	uint8_t *dst = lg_reader_space(&a->rd, &room);
	ssize_t r;

	if (room == 0)
		return 0;
	r = read(a->fd, dst, room);
	if (r < 0)
		return (errno == EINTR || errno == EAGAIN) ? 0 : -errno;
	if (r == 0)
		return -EPIPE;
	lg_reader_commit(&a->rd, (size_t)r);
	return 0;
}

/*
 * An extra source for the wait loop: the exec's stdin, or the caller's
 * cancel fd.  Wanted only while `want` and, if max_out is not 0, while
 * less than max_out bytes are queued for the guest: wait_event checks
 * that on every round, as its own flushing drains the queue, so a source
 * it stopped reading because the queue was full is read again once the
 * queue has room (backpressure to the user's pipe, and no stall once it
 * clears).  fd -1 with want: a source in memory, always ready.
 */
struct extra_in {
	int fd;
	bool want;
	size_t max_out;
};

static bool extra_ready(const struct lg_agent *a, const struct extra_in *x)
{
	return x->want && (x->max_out == 0 || lg_buf_pending(&a->out) < x->max_out);
}

/*
 * Waits for the next frame (any id) while flushing the output queue.
 * 1: a frame is ready (peek it, then lg_reader_pop); 2 + i: extra[i] is
 * ready (its fd readable, or it is in memory and wanted); <0: error.
 * deadline_ms 0 = no deadline.
 */
static int wait_event(struct lg_agent *a, uint64_t deadline_ms, struct extra_in extra[2],
		      struct lg_frame_hdr *h, const uint8_t **payload, struct lg_err **err)
{
	for (;;) {
		struct pollfd pfd[4];
		int n = 0, idx_cancel = -1, idx_extra[2] = {-1, -1}, timeout = -1, r;

		/*
		 * A source in memory first: it only queues (bounded by its
		 * credit and max_out), and the frames it would otherwise wait
		 * behind may be the ACKs for what it queues.
		 */
		for (int i = 0; extra != NULL && i < 2; i++)
			if (extra[i].fd < 0 && extra_ready(a, &extra[i]))
				return 2 + i;
		r = lg_reader_peek(&a->rd, h, payload);
		if (r < 0)
			return broken(a, err, -r,
				      r == -EMSGSIZE ? "frame from guest exceeds the size limit"
						     : "malformed frame from guest");
		if (r == 1)
			return 1;

		r = flush_some(a);
		if (r == -EPIPE || r == -ECONNRESET)
			return vm_gone(a, err);
		if (r < 0)
			return broken(a, err, -r, "write to guest");
		pfd[n++] = (struct pollfd){
		    .fd = a->fd,
		    .events = (short)(POLLIN | (lg_buf_pending(&a->out) ? POLLOUT : 0))};
		if (a->cancel_fd >= 0) {
			idx_cancel = n;
			pfd[n++] = (struct pollfd){.fd = a->cancel_fd, .events = POLLIN};
		}
		for (int i = 0; extra != NULL && i < 2; i++) {
			if (extra[i].fd >= 0 && extra_ready(a, &extra[i])) {
				idx_extra[i] = n;
				pfd[n++] = (struct pollfd){.fd = extra[i].fd, .events = POLLIN};
			}
		}
		if (deadline_ms != 0) {
			uint64_t now = lg_now_ms();
			if (now >= deadline_ms)
				return lg_err_set(err, ETIMEDOUT,
						  "the guest agent did not answer in time");
			timeout = (int)(deadline_ms - now);
		}
		r = poll(pfd, (nfds_t)n, timeout);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return lg_err_sys(err, "poll");
		}
		if (idx_cancel >= 0 && (pfd[idx_cancel].revents & POLLIN))
			return lg_err_set(err, EINTR, "interrupted");
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			r = fill(a);
			if (r == -EPIPE || r == -ECONNRESET)
				return vm_gone(a, err);
			if (r < 0)
				return broken(a, err, -r, "read from guest");
		}
		for (int i = 0; i < 2; i++)
			if (idx_extra[i] >= 0 && pfd[idx_extra[i]].revents)
				return 2 + i;
	}
}

/* The AGENT field as a printable name, or "lg-agent". */
static char *agent_name_of(const struct fields *f)
{
	char name[128];
	struct fields tmp = {0};

	if (!f->have[LG_TAG_AGENT])
		return xstrdup("lg-agent");
	tmp.f[LG_TAG_MESSAGE] = f->f[LG_TAG_AGENT];
	tmp.have[LG_TAG_MESSAGE] = true;
	field_msg(&tmp, name, sizeof(name));
	return xstrdup(name);
}

int lg_agent_connect(int fd, int cancel_fd, int timeout_ms, struct lg_agent **out,
		     struct lg_err **err)
{
	struct lg_agent *a = xzalloc(sizeof(*a));
	struct lg_frame_hdr h;
	const uint8_t *payload;
	struct fields f;
	uint32_t version;
	int r;

	a->fd = fd;
	a->cancel_fd = cancel_fd;
	a->next_id = 1;
	a->request_timeout_ms = REQUEST_TIMEOUT_MS;
	lg_reader_init(&a->rd);
	r = lg_set_nonblock(fd, true);
	if (r < 0) {
		lg_err_set(err, -r, "agent channel");
		goto fail;
	}
	r = wait_event(a, lg_now_ms() + (uint64_t)timeout_ms, NULL, &h, &payload, err);
	if (r < 0)
		goto fail;
	if (h.type != LG_MSG_HELLO || h.id != 0) {
		r = lg_err_set(err, EPROTO, "agent channel: expected HELLO, got %s",
			       lg_msg_name(h.type));
		goto fail;
	}
	if (collect(payload, h.len, &f) < 0 || field_u32(&f, LG_TAG_VERSION, 0, &version) < 0) {
		r = lg_err_set(err, EPROTO, "agent channel: malformed HELLO");
		goto fail;
	}
	/*
	 * Protocol 1 differs only in granting no stdin credit, and images built
	 * before 2 are still about: it is served, with stdin bounded by our
	 * own queue as before.
	 */
	if (version < LG_PROTO_VERSION_MIN || version > LG_PROTO_VERSION) {
		r = lg_err_set(err, EPROTO,
			       "guest agent speaks protocol %u, this host %u; rebuild the image "
			       "with: luminaguard image build",
			       version, LG_PROTO_VERSION);
		goto fail;
	}
	a->version = version;
	/*
	 * Protocol 3: the guest booted but could not mount the image's root
	 * (no disk, a bad image).  Its commands would run in the bare
	 * initramfs: nothing to serve.  An older agent never sends ERRNO here.
	 */
	if (f.have[LG_TAG_ERRNO]) {
		uint32_t guest_errno;
		char msg[512];

		if (field_u32(&f, LG_TAG_ERRNO, 0, &guest_errno) < 0) {
			r = lg_err_set(err, EPROTO, "agent channel: malformed HELLO");
			goto fail;
		}
		if (guest_errno != 0) {
			field_msg(&f, msg, sizeof(msg));
			r = lg_err_msg(
			    err, LG_AGENT_SETUP_ERRNO,
			    "the guest could not set up its root file system: %s",
			    *msg ? msg
				 : (guest_errno < 4096 ? strerror((int)guest_errno) : "error"));
			goto fail;
		}
	}
	a->name = agent_name_of(&f);
	lg_reader_pop(&a->rd);
	*out = a;
	return 0;
fail:
	lg_agent_free(a);
	return r < 0 ? r : -EPROTO;
}

void lg_agent_free(struct lg_agent *a)
{
	if (a == NULL)
		return;
	lg_reader_free(&a->rd);
	lg_buf_free(&a->out);
	free(a->name);
	free(a);
}

const char *lg_agent_name(const struct lg_agent *a)
{
	return a->name;
}

uint32_t lg_agent_version(const struct lg_agent *a)
{
	return a->version;
}

/*
 * Sends the request built in a->out (already framed) and waits for the
 * RESULT with the same id.  On success *f holds the result fields, which
 * point into the reader: valid until the caller calls lg_reader_pop.
 */
static int roundtrip(struct lg_agent *a, uint32_t id, const char *what, struct fields *f,
		     struct lg_err **err)
{
	uint64_t deadline = lg_now_ms() + a->request_timeout_ms;
	struct lg_frame_hdr h;
	const uint8_t *payload;
	uint32_t guest_errno;
	char msg[512];
	int r;

	for (;;) {
		r = wait_event(a, deadline, NULL, &h, &payload, err);
		if (r < 0)
			return lg_err_wrap(err, "%s", what);
		if (h.id != id) {
			/* Late frames of an earlier, abandoned request. */
			bool fatal = h.id == 0 && h.type == LG_MSG_RESULT;
			if (fatal) {
				collect(payload, h.len, f);
				field_msg(f, msg, sizeof(msg));
				lg_reader_pop(&a->rd);
				a->broken = true;
				return lg_err_set(err, EPROTO, "%s: guest agent error: %s", what,
						  msg);
			}
			lg_reader_pop(&a->rd);
			continue;
		}
		if (h.type != LG_MSG_RESULT) {
			lg_reader_pop(&a->rd);
			return broken(a, err, EPROTO, "unexpected message from guest");
		}
		if (collect(payload, h.len, f) < 0 ||
		    field_u32(f, LG_TAG_ERRNO, 0, &guest_errno) < 0) {
			lg_reader_pop(&a->rd);
			return broken(a, err, EPROTO, "malformed RESULT from guest");
		}
		if (guest_errno != 0) {
			field_msg(f, msg, sizeof(msg));
			lg_reader_pop(&a->rd);
			/*
			 * Guest errno numbers are Linux's; show them only if
			 * plausible.  The code is GUEST_REFUSED whatever the guest
			 * said: its number is untrusted and must not pass for one
			 * of the channel's own (-ECONNRESET, -EPROTO, -EPIPE).
			 */
			return lg_err_msg(
			    err, GUEST_REFUSED, "%s: %s", what,
			    *msg ? msg
				 : (guest_errno < 4096 ? strerror((int)guest_errno) : "error"));
		}
		return 0;
	}
}

static int check_usable(struct lg_agent *a, struct lg_err **err)
{
	if (a->broken)
		return lg_err_set(err, EPIPE, "agent channel is closed");
	return 0;
}

static int simple_request(struct lg_agent *a, size_t start, uint32_t id, const char *what,
			  struct lg_err **err)
{
	struct fields f;
	int r = lg_frame_end(&a->out, start);

	if (r < 0)
		return lg_err_set(err, EMSGSIZE, "%s: request too large", what);
	r = roundtrip(a, id, what, &f, err);
	if (r == 0)
		lg_reader_pop(&a->rd);
	return r;
}

/*
 * Starts a request frame of `type` in the output queue, with a PATH field
 * when path is non-NULL; the caller adds fields and ends the frame.
 */
static size_t begin_request(struct lg_agent *a, uint16_t type, const char *path, uint32_t *id)
{
	size_t start;

	*id = a->next_id++;
	start = lg_frame_begin(&a->out, type, *id);
	if (path != NULL)
		lg_tlv_put_str(&a->out, LG_TAG_PATH, path);
	return start;
}

int lg_agent_ping(struct lg_agent *a, struct lg_err **err)
{
	uint32_t id;
	size_t start;
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	start = begin_request(a, LG_MSG_PING, NULL, &id);
	return simple_request(a, start, id, "ping", err);
}

int lg_agent_attach(int fd, int cancel_fd, int timeout_ms, struct lg_agent **out,
		    struct lg_err **err)
{
	struct lg_agent *a = xzalloc(sizeof(*a));
	struct fields f;
	uint32_t id, version;
	size_t start;
	int r;

	a->fd = fd;
	a->cancel_fd = cancel_fd;
	a->next_id = 1;
	a->request_timeout_ms = (uint32_t)timeout_ms;
	a->version = LG_PROTO_VERSION_ADOPT; /* what a snapshot's agent must speak; checked below */
	lg_reader_init(&a->rd);
	r = lg_set_nonblock(fd, true);
	if (r < 0) {
		lg_err_set(err, -r, "agent channel");
		goto fail;
	}
	start = begin_request(a, LG_MSG_PING, NULL, &id);
	r = lg_frame_end(&a->out, start);
	if (r == 0)
		r = roundtrip(a, id, "ping", &f, err);
	if (r < 0)
		goto fail;
	if (!f.have[LG_TAG_VERSION]) {
		lg_reader_pop(&a->rd);
		r = lg_err_msg(err, EPROTO,
			       "the guest agent answers PING without its version (protocol below "
			       "%u, too old for snapshots); rebuild the image with: luminaguard "
			       "image build",
			       LG_PROTO_VERSION_ADOPT);
		goto fail;
	}
	if (field_u32(&f, LG_TAG_VERSION, 0, &version) < 0 || version < LG_PROTO_VERSION_ADOPT ||
	    version > LG_PROTO_VERSION) {
		lg_reader_pop(&a->rd);
		r = lg_err_msg(err, EPROTO,
			       "the restored guest agent speaks protocol %u, this host %u..%u; "
			       "rebuild the image with: luminaguard image build",
			       version, LG_PROTO_VERSION_ADOPT, LG_PROTO_VERSION);
		goto fail;
	}
	a->version = version;
	a->name = agent_name_of(&f);
	lg_reader_pop(&a->rd);
	a->request_timeout_ms = REQUEST_TIMEOUT_MS;
	*out = a;
	return 0;
fail:
	lg_agent_free(a);
	return r < 0 ? r : -EPROTO;
}

/*
 * ADOPT's RESULT, strictly: ERRNO, MESSAGE and FLAGS each at most once,
 * ERRNO 0 (roundtrip turned a refusal into -EREMOTEIO already), FLAGS
 * present with only known bits, nothing else.  The guest may be hostile,
 * and what it claims to have done is reported to the caller.
 */
static int adopt_reply_parse(const struct fields *f, uint32_t *flags, struct lg_err **err)
{
	bool seen[LG_TAG_MAX_ + 1] = {false};
	struct lg_tlv_iter it;
	struct lg_tlv t;
	int r;

	lg_tlv_iter_init(&it, f->payload, f->len);
	while ((r = lg_tlv_next(&it, &t)) == 1) {
		if (t.tag != LG_TAG_ERRNO && t.tag != LG_TAG_MESSAGE && t.tag != LG_TAG_FLAGS)
			return lg_err_set(err, EPROTO,
					  "adopt: unexpected field %u in the guest's reply",
					  (unsigned)t.tag);
		if (seen[t.tag])
			return lg_err_set(err, EPROTO, "adopt: field %u twice in the guest's reply",
					  (unsigned)t.tag);
		seen[t.tag] = true;
	}
	if (r < 0)
		return lg_err_set(err, EPROTO, "adopt: malformed reply from the guest");
	if (!seen[LG_TAG_FLAGS] || lg_tlv_u32(&f->f[LG_TAG_FLAGS], flags) < 0)
		return lg_err_set(err, EPROTO, "adopt: the guest's reply has no valid FLAGS");
	if (*flags & ~(uint32_t)LG_ADOPT_FLAGS_ALL)
		return lg_err_set(err, EPROTO, "adopt: unknown flags %#x in the guest's reply",
				  *flags);
	return 0;
}

int lg_agent_adopt(struct lg_agent *a, const char *hostname, uint32_t *flags_out,
		   struct lg_err **err)
{
	uint8_t seed[64];
	char host[16], mid[LG_MACHINE_ID_LEN + 1];
	struct timespec now;
	struct fields f;
	uint32_t id, flags = 0;
	size_t start, got = 0;
	int r;

	r = check_usable(a, err);
	if (r < 0)
		return r;
	if (a->version < LG_PROTO_VERSION_ADOPT)
		return lg_err_msg(err, EOPNOTSUPP,
				  "the guest agent speaks protocol %u and cannot take a fresh RNG "
				  "seed, clock and hostname (needs %u, for pools and snapshots); "
				  "rebuild the image with: luminaguard image build",
				  a->version, LG_PROTO_VERSION_ADOPT);
	if (hostname == NULL) {
		memcpy(host, "lg-", 3);
		lg_random_hex(host + 3, 4);
		host[11] = '\0';
		hostname = host;
	}
	if (!lg_hostname_valid(hostname, strlen(hostname)))
		return lg_err_msg(
		    err, EINVAL,
		    "hostname '%.80s': want 1..%u letters, digits or '-', not starting "
		    "or ending with '-'",
		    hostname, LG_HOSTNAME_MAX);
	do {
		lg_random_hex(mid, LG_MACHINE_ID_LEN / 2);
		mid[LG_MACHINE_ID_LEN] = '\0';
	} while (!lg_machine_id_valid(mid, LG_MACHINE_ID_LEN));
	while (got < sizeof(seed)) {
		ssize_t n = getrandom(seed + got, sizeof(seed) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return lg_err_sys(err, "adopt: getrandom");
		got += (size_t)n;
	}
	/* Last, right before sending: the guest's clock is set to this. */
	clock_gettime(CLOCK_REALTIME, &now);
	start = begin_request(a, LG_MSG_ADOPT, NULL, &id);
	lg_tlv_put(&a->out, LG_TAG_SEED, seed, sizeof(seed));
	explicit_bzero(seed, sizeof(seed));
	lg_tlv_put_u64(&a->out, LG_TAG_REALTIME_NS,
		       (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec);
	lg_tlv_put_str(&a->out, LG_TAG_HOSTNAME, hostname);
	lg_tlv_put_str(&a->out, LG_TAG_MACHINE_ID, mid);
	r = lg_frame_end(&a->out, start);
	if (r < 0)
		return lg_err_set(err, EMSGSIZE, "adopt: request too large");
	r = roundtrip(a, id, "adopt", &f, err);
	if (r < 0)
		return r;
	r = adopt_reply_parse(&f, &flags, err);
	lg_reader_pop(&a->rd);
	if (r < 0) {
		a->broken = true;
		return r;
	}
	if (flags_out != NULL)
		*flags_out = flags;
	return 0;
}

int lg_agent_write_file(struct lg_agent *a, const char *path, const void *data, size_t len,
			uint32_t mode, uint32_t flags, struct lg_err **err)
{
	const size_t chunk = LG_FRAME_MAX_PAYLOAD - 64 * 1024; /* room for the other fields */
	cleanup_free char *what = xasprintf("write %s", path);
	size_t off = 0;
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	do {
		size_t n = len - off < chunk ? len - off : chunk;
		uint32_t id;
		size_t start = begin_request(a, LG_MSG_FILE_WRITE, path, &id);

		lg_tlv_put_u32(&a->out, LG_TAG_MODE, mode);
		lg_tlv_put_u64(&a->out, LG_TAG_OFFSET, off);
		lg_tlv_put(&a->out, LG_TAG_DATA, (const uint8_t *)data + off, n);
		lg_tlv_put_u32(&a->out, LG_TAG_FLAGS, (off == 0 ? LG_WRITE_TRUNC : 0) | flags);
		r = simple_request(a, start, id, what, err);
		if (r < 0)
			return r;
		off += n;
	} while (off < len);
	return 0;
}

int lg_agent_read_file(struct lg_agent *a, const char *path, size_t max, uint8_t **out,
		       size_t *out_len, struct lg_err **err)
{
	const uint32_t chunk = LG_FRAME_MAX_PAYLOAD - 64 * 1024;
	cleanup_free char *what = xasprintf("read %s", path);
	struct lg_buf data = {0};
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	for (;;) {
		struct fields f;
		uint32_t id;
		size_t start = begin_request(a, LG_MSG_FILE_READ, path, &id);
		uint32_t rflags;

		lg_tlv_put_u64(&a->out, LG_TAG_OFFSET, data.len);
		lg_tlv_put_u32(&a->out, LG_TAG_LENGTH, chunk);
		lg_frame_end(&a->out, start);
		r = roundtrip(a, id, what, &f, err);
		if (r < 0)
			goto fail;
		if (field_u32(&f, LG_TAG_FLAGS, 0, &rflags) < 0 || !f.have[LG_TAG_DATA]) {
			lg_reader_pop(&a->rd);
			r = broken(a, err, EPROTO, "malformed FILE_READ result from guest");
			goto fail;
		}
		if (data.len + f.f[LG_TAG_DATA].len > max) {
			lg_reader_pop(&a->rd);
			r = lg_err_set(err, EFBIG, "%s: file larger than %zu bytes", what, max);
			goto fail;
		}
		lg_buf_append(&data, f.f[LG_TAG_DATA].val, f.f[LG_TAG_DATA].len);
		bool eof = (rflags & LG_READ_EOF) || f.f[LG_TAG_DATA].len == 0;
		lg_reader_pop(&a->rd);
		if (eof)
			break;
	}
	*out_len = data.len;
	*out = data.data != NULL ? data.data : xzalloc(1);
	return 0;
fail:
	lg_buf_free(&data);
	return r;
}

void lg_dirents_free(struct lg_dirent *d, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(d[i].name);
	free(d);
}

int lg_agent_list_dir(struct lg_agent *a, const char *path, struct lg_dirent **out, size_t *count,
		      struct lg_err **err)
{
	cleanup_free char *what = xasprintf("list %s", path);
	struct lg_dirent *ents = NULL;
	size_t n = 0;
	struct fields f;
	struct lg_tlv_iter it;
	struct lg_tlv t;
	const uint8_t *payload;
	struct lg_frame_hdr h;
	uint32_t id;
	size_t start;
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	start = begin_request(a, LG_MSG_LIST_DIR, path, &id);
	lg_frame_end(&a->out, start);
	r = roundtrip(a, id, what, &f, err);
	if (r < 0)
		return r;
	/* roundtrip left the frame in the reader: walk it again for every DIRENT. */
	if (lg_reader_peek(&a->rd, &h, &payload) != 1)
		return broken(a, err, EPROTO, "lost frame");
	lg_tlv_iter_init(&it, payload, h.len);
	while ((r = lg_tlv_next(&it, &t)) == 1) {
		if (t.tag != LG_TAG_DIRENT)
			continue;
		if (t.len <= LG_DIRENT_FIXED ||
		    memchr(t.val + LG_DIRENT_FIXED, '\0', t.len - LG_DIRENT_FIXED) != NULL) {
			r = -EPROTO;
			break;
		}
		ents = xrealloc(ents, (n + 1) * sizeof(*ents));
		ents[n].ftype = lg_get_le32(t.val);
		ents[n].mode = lg_get_le32(t.val + 4);
		ents[n].size = lg_get_le64(t.val + 8);
		ents[n].name = xmalloc(t.len - LG_DIRENT_FIXED + 1);
		memcpy(ents[n].name, t.val + LG_DIRENT_FIXED, t.len - LG_DIRENT_FIXED);
		ents[n].name[t.len - LG_DIRENT_FIXED] = '\0';
		n++;
	}
	lg_reader_pop(&a->rd);
	if (r < 0) {
		lg_dirents_free(ents, n);
		return broken(a, err, EPROTO, "malformed directory entry from guest");
	}
	*out = ents;
	*count = n;
	return 0;
}

int lg_agent_stat(struct lg_agent *a, const char *path, struct lg_stat *st, struct lg_err **err)
{
	cleanup_free char *what = xasprintf("stat %s", path);
	struct fields f;
	uint32_t id;
	size_t start;
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	start = begin_request(a, LG_MSG_STAT, path, &id);
	lg_frame_end(&a->out, start);
	r = roundtrip(a, id, what, &f, err);
	if (r < 0)
		return r;
	r = field_u32(&f, LG_TAG_FTYPE, 0, &st->ftype) | field_u32(&f, LG_TAG_MODE, 0, &st->mode) |
	    field_u64(&f, LG_TAG_SIZE, 0, &st->size) | field_u64(&f, LG_TAG_MTIME, 0, &st->mtime);
	lg_reader_pop(&a->rd);
	if (r != 0)
		return broken(a, err, EPROTO, "malformed STAT result from guest");
	return 0;
}

int lg_agent_mkdir(struct lg_agent *a, const char *path, uint32_t mode, bool parents,
		   struct lg_err **err)
{
	cleanup_free char *what = xasprintf("mkdir %s", path);
	uint32_t id;
	size_t start;
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	start = begin_request(a, LG_MSG_MKDIR, path, &id);
	lg_tlv_put_u32(&a->out, LG_TAG_MODE, mode);
	lg_tlv_put_u32(&a->out, LG_TAG_FLAGS, parents ? LG_MKDIR_PARENTS : 0);
	return simple_request(a, start, id, what, err);
}

int lg_agent_remove(struct lg_agent *a, const char *path, bool recursive, struct lg_err **err)
{
	cleanup_free char *what = xasprintf("remove %s", path);
	uint32_t id;
	size_t start;
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	start = begin_request(a, LG_MSG_REMOVE, path, &id);
	lg_tlv_put_u32(&a->out, LG_TAG_FLAGS, recursive ? LG_REMOVE_RECURSIVE : 0);
	return simple_request(a, start, id, what, err);
}

int lg_agent_shutdown(struct lg_agent *a, struct lg_err **err)
{
	uint32_t id;
	size_t start;
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	start = begin_request(a, LG_MSG_SHUTDOWN, NULL, &id);
	/* Shutdown runs on teardown paths: a guest that does not answer soon gets killed. */
	a->request_timeout_ms = SHUTDOWN_TIMEOUT_MS;
	r = simple_request(a, start, id, "shutdown", err);
	a->request_timeout_ms = REQUEST_TIMEOUT_MS;
	return r;
}

/* ---- exec ---- */

struct exec_state {
	struct lg_agent *a;
	const struct lg_exec_opts *o;
	uint32_t id;
	struct extra_in in[2]; /* [0]: the command's stdin, [1]: the caller's cancel fd */
	bool killed;
	size_t stdin_off; /* progress through stdin_data */
	bool stdin_done;
	uint32_t inflight; /* STDIN bytes sent and not yet returned by STDIN_ACK */
};

/* How much stdin the agent takes now: its credit, or (protocol 1) a frame's worth. */
static size_t stdin_credit(const struct exec_state *s)
{
	size_t n = LG_DATA_CHUNK;

	if (s->a->version >= 2 && LG_STDIN_WINDOW - s->inflight < n)
		n = LG_STDIN_WINDOW - s->inflight;
	return n;
}

static void stdin_sent(struct exec_state *s, const void *p, size_t n)
{
	lg_frame_data(&s->a->out, LG_MSG_STDIN, s->id, p, n);
	if (s->a->version >= 2)
		s->inflight += (uint32_t)n;
}

static void stdin_eof(struct exec_state *s)
{
	lg_frame_data(&s->a->out, LG_MSG_STDIN, s->id, NULL, 0);
	s->stdin_done = true;
}

static void queue_stdin(struct exec_state *s)
{
	size_t room = stdin_credit(s);

	if (s->stdin_done || room == 0)
		return;
	if (s->o->stdin_fd >= 0) {
		uint8_t buf[LG_DATA_CHUNK];
		ssize_t r = read(s->o->stdin_fd, buf, room);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		if (r <= 0) {
			/* EOF or a read error: either way the command's stdin ends. */
			stdin_eof(s);
			return;
		}
		stdin_sent(s, buf, (size_t)r);
		return;
	}
	while (s->stdin_off < s->o->stdin_len && room > 0 &&
	       lg_buf_pending(&s->a->out) < OUT_HIGH_WATER) {
		size_t n = s->o->stdin_len - s->stdin_off;
		if (n > room)
			n = room;
		stdin_sent(s, (const uint8_t *)s->o->stdin_data + s->stdin_off, n);
		s->stdin_off += n;
		room = stdin_credit(s);
	}
	if (s->stdin_off >= s->o->stdin_len)
		stdin_eof(s);
}

/*
 * Credit returned by the agent.  The guest is untrusted: an ACK from a
 * protocol-1 agent, of the wrong size, for nothing, or for more than is
 * outstanding breaks the channel (the sandbox is then unusable; the host
 * goes on).
 */
static int on_stdin_ack(struct exec_state *s, const struct lg_frame_hdr *h, const uint8_t *p,
			struct lg_err **err)
{
	uint32_t n = h->len == 4 ? lg_get_le32(p) : 0;

	if (s->a->version < 2)
		return broken(s->a, err, EPROTO, "STDIN_ACK from a protocol-1 guest");
	if (h->len != 4 || n == 0 || n > s->inflight) {
		char what[128];
		snprintf(what, sizeof(what),
			 "STDIN_ACK of %u bytes (payload %u bytes) while %u are outstanding", n,
			 h->len, s->inflight);
		return broken(s->a, err, EPROTO, what);
	}
	s->inflight -= n;
	return 0;
}

static int handle_exit(struct lg_agent *a, const struct lg_frame_hdr *h, const uint8_t *payload,
		       struct lg_exec_result *res, struct lg_err **err)
{
	struct fields f;
	uint32_t code, sig, timed_out, guest_errno;
	char msg[512];

	if (collect(payload, h->len, &f) < 0 || field_u32(&f, LG_TAG_EXIT_CODE, 0, &code) < 0 ||
	    field_u32(&f, LG_TAG_SIGNAL, 0, &sig) < 0 ||
	    field_u32(&f, LG_TAG_TIMED_OUT, 0, &timed_out) < 0 ||
	    field_u32(&f, LG_TAG_ERRNO, 0, &guest_errno) < 0 || code > 255 || sig > 64)
		return broken(a, err, EPROTO, "malformed EXIT from guest");
	if (guest_errno != 0) {
		field_msg(&f, msg, sizeof(msg));
		return lg_err_msg(err, GUEST_REFUSED, "cannot run the command in the guest: %s",
				  *msg ? msg : "error");
	}
	res->exit_code = (int)code;
	res->signal = (int)sig;
	res->timed_out = timed_out != 0;
	return 0;
}

/*
 * Debian's rule for user names (adduser's NAME_REGEX with the system
 * accounts' '_'), or a decimal uid.  Checked by lg_agent_exec too, so that
 * what reaches the guest's passwd lookup is a plain name, and the error is
 * the caller's.
 */
bool lg_exec_user_valid(const char *u)
{
	size_t n = strlen(u), i;

	if (n > 0 && n <= 10 && strspn(u, "0123456789") == n)
		return strtoull(u, NULL, 10) < UINT32_MAX; /* (uid_t)-1 is no uid */
	if (n == 0 || !((u[0] >= 'a' && u[0] <= 'z') || u[0] == '_'))
		return false;
	for (i = 1; i < n && i < 32; i++)
		if (!((u[i] >= 'a' && u[i] <= 'z') || (u[i] >= '0' && u[i] <= '9') || u[i] == '_' ||
		      u[i] == '-'))
			break;
	return i == n || (i == n - 1 && u[i] == '$');
}

int lg_agent_exec(struct lg_agent *a, const struct lg_exec_opts *o, struct lg_exec_result *res,
		  struct lg_err **err)
{
	struct exec_state s = {.a = a, .o = o};
	uint64_t deadline = 0;
	size_t start;
	int r;

	if ((r = check_usable(a, err)) < 0)
		return r;
	if (o->argv == NULL || o->argv[0] == NULL)
		return lg_err_set(err, EINVAL, "exec: empty command");
	if (o->user != NULL && !lg_exec_user_valid(o->user))
		return lg_err_msg(err, EINVAL,
				  "exec: bad user \"%.64s\": want a name ([a-z_][a-z0-9_-]*, at "
				  "most 32 characters) or a decimal uid",
				  o->user);
	/* An older agent skips the field it does not know: the command would run as root. */
	if (o->user != NULL && a->version < LG_PROTO_VERSION_USER)
		return lg_err_msg(err, EOPNOTSUPP,
				  "exec: the image's agent (protocol %u) cannot run commands as "
				  "another user; rebuild the image with: luminaguard image build",
				  a->version);
	memset(res, 0, sizeof(*res));
	/* stdin_data is a source in memory: fd -1, ready whenever wanted. */
	s.in[0].fd = o->stdin_fd;
	s.in[0].max_out = OUT_HIGH_WATER;
	s.in[1].fd = o->cancel_fd;
	s.in[1].want = o->cancel_fd >= 0;
	bool has_stdin = o->stdin_fd >= 0 || o->stdin_data != NULL;
	s.stdin_done = !has_stdin;

	start = begin_request(a, LG_MSG_EXEC, NULL, &s.id);
	for (size_t i = 0; o->argv[i] != NULL; i++)
		lg_tlv_put_str(&a->out, LG_TAG_ARGV, o->argv[i]);
	for (size_t i = 0; o->env != NULL && o->env[i] != NULL; i++)
		lg_tlv_put_str(&a->out, LG_TAG_ENV, o->env[i]);
	if (o->cwd != NULL)
		lg_tlv_put_str(&a->out, LG_TAG_CWD, o->cwd);
	if (o->user != NULL)
		lg_tlv_put_str(&a->out, LG_TAG_USER, o->user);
	lg_tlv_put_u32(&a->out, LG_TAG_TIMEOUT_MS, o->timeout_ms);
	lg_tlv_put_u32(&a->out, LG_TAG_FLAGS, has_stdin ? LG_EXEC_STDIN : 0);
	if (lg_frame_end(&a->out, start) < 0)
		return lg_err_set(err, E2BIG, "exec: command line and environment too large");
	if (o->timeout_ms != 0)
		deadline = lg_now_ms() + o->timeout_ms + EXEC_GRACE_MS;

	for (;;) {
		struct lg_frame_hdr h;
		const uint8_t *payload;

		/* No more stdin for a command we are killing. */
		s.in[0].want = !s.stdin_done && !s.killed && stdin_credit(&s) > 0;
		r = wait_event(a, deadline, s.in, &h, &payload, err);
		if (r < 0) {
			if (r == -ETIMEDOUT)
				return lg_err_set(err, ETIMEDOUT,
						  "the guest did not end the command at its "
						  "timeout");
			return r;
		}
		if (r == 2) {
			queue_stdin(&s);
			continue;
		}
		if (r == 3) {
			/*
			 * The caller gave up on the command: kill its process group
			 * in the guest and wait for the EXIT that follows, so the
			 * channel stays in step and the sandbox stays usable.
			 */
			size_t kstart = lg_frame_begin(&a->out, LG_MSG_KILL, s.id);
			lg_tlv_put_u32(&a->out, LG_TAG_SIGNAL, 9);
			lg_frame_end(&a->out, kstart);
			s.killed = true;
			s.in[1].want = false;
			continue;
		}
		if (h.id != s.id) {
			lg_reader_pop(&a->rd);
			continue;
		}
		switch (h.type) {
		case LG_MSG_STDOUT:
		case LG_MSG_STDERR:
			if (o->on_output != NULL && h.len > 0) {
				r = o->on_output(o->ctx,
						 h.type == LG_MSG_STDOUT ? LG_STREAM_STDOUT
									 : LG_STREAM_STDERR,
						 payload, h.len);
				if (r < 0) {
					lg_reader_pop(&a->rd);
					return lg_err_set(err, -r, "exec: output");
				}
			}
			lg_reader_pop(&a->rd);
			break;
		case LG_MSG_STDIN_ACK:
			r = on_stdin_ack(&s, &h, payload, err);
			lg_reader_pop(&a->rd);
			if (r < 0)
				return r;
			break;
		case LG_MSG_EXIT:
			r = handle_exit(a, &h, payload, res, err);
			lg_reader_pop(&a->rd);
			return r;
		case LG_MSG_RESULT: {
			if (s.killed) {
				/* The answer to our KILL; the EXIT is what we wait for. */
				lg_reader_pop(&a->rd);
				break;
			}
			/* The agent refused the exec outright (e.g. too many running). */
			struct fields f;
			char msg[512];
			collect(payload, h.len, &f);
			field_msg(&f, msg, sizeof(msg));
			lg_reader_pop(&a->rd);
			return lg_err_msg(err, GUEST_REFUSED, "exec: %s",
					  *msg ? msg : "refused by the guest");
		}
		default:
			lg_reader_pop(&a->rd);
			return broken(a, err, EPROTO, "unexpected message during exec");
		}
	}
}
