/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent protocol: how the host and lg-agent (PID 1 in the guest) talk
 * over one byte stream (a virtio-serial port).  docs/agent-protocol.md is the
 * description for humans; this header is the one source of the numbers.
 *
 * A frame is a 12-byte header followed by `len` bytes of payload:
 *
 *     u32 len    payload length, at most LG_FRAME_MAX_PAYLOAD
 *     u16 type   enum lg_msg
 *     u16 flags  reserved, must be 0
 *     u32 id     request id; every frame that belongs to a request carries it
 *
 * All integers are little-endian.  Request payloads and results are a flat
 * sequence of TLV fields (u16 tag, u32 len, value); data frames (STDIN,
 * STDOUT, STDERR) carry raw bytes.  Both sides treat the other as untrusted:
 * a frame with a bad length, type or field is a protocol error and ends the
 * connection, never a crash or a hang.
 */
#ifndef LG_PROTO_PROTO_H
#define LG_PROTO_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * 2: per-exec stdin credit (LG_MSG_STDIN_ACK).  A host also accepts
 * LG_PROTO_VERSION_MIN, an agent that grants no credit: it then sends stdin
 * bounded only by its own queue, as version 1 did.
 * 3: EXEC's USER, and HELLO's ERRNO and MESSAGE (the guest could not set up
 * its root file system).  An older agent skips a USER it does not know and
 * would run the command as root, so a host sends USER only to an agent of
 * version 3 or later and refuses the exec otherwise.
 * 4: ADOPT (a restored or pooled guest made the claimer's: RNG seed, clock,
 * hostname, machine-id), and PING's RESULT carries VERSION and AGENT (a
 * restored guest sent its HELLO long ago, to another host process).  An
 * older agent's frame reader takes the unknown type for a broken stream
 * and ends the session, so a host sends ADOPT only to version 4 or later.
 */
#define LG_PROTO_VERSION     4u
#define LG_PROTO_VERSION_MIN 1u
#define LG_FRAME_HDR_SIZE    12u
#define LG_FRAME_MAX_PAYLOAD (1u << 20)	   /* 1 MiB: bounds every buffer on both sides */
#define LG_DATA_CHUNK	     (64u * 1024u) /* data frames are split to this size */
#define LG_TLV_HDR_SIZE	     6u
/* The first version whose agent honours EXEC's USER. */
#define LG_PROTO_VERSION_USER 3u
/* The first version whose agent knows ADOPT (and answers PING with its VERSION). */
#define LG_PROTO_VERSION_ADOPT 4u
/* ADOPT's SEED: at least 32 bytes (256 bits for the CRNG), at most 512. */
#define LG_ADOPT_SEED_MIN 32u
#define LG_ADOPT_SEED_MAX 512u
/* A machine-id: 32 lowercase hex digits (systemd's machine-id(5)). */
#define LG_MACHINE_ID_LEN 32u
/* A hostname: one RFC 1123 label, 1..63 of [A-Za-z0-9-], no '-' at either end. */
#define LG_HOSTNAME_MAX 63u
/*
 * Per exec, at most this many STDIN bytes may be sent and not yet returned
 * by STDIN_ACK: the agent buffers no more than this for a command that is
 * slow to read, and never stops reading the port for stdin, so KILL and
 * every other request always get through (docs/agent-protocol.md).
 */
#define LG_STDIN_WINDOW (256u * 1024u)

/* The virtio-serial port name the guest agent looks for. */
#define LG_AGENT_PORT_NAME "org.luminaguard.agent.0"
/* The second port, present when the sandbox has or may get egress (net/netmux.h). */
#define LG_NET_PORT_NAME "org.luminaguard.net.0"
/* Where the in-guest proxy listens (guest loopback). */
#define LG_NET_PROXY_PORT 3128

enum lg_msg {
	LG_MSG_HELLO = 1,      /* g->h, id 0: VERSION, AGENT, [ERRNO, MESSAGE] */
	LG_MSG_PING = 2,       /* h->g -> RESULT */
	LG_MSG_EXEC = 3,       /* h->g: ARGV*, ENV*, CWD, TIMEOUT_MS, FLAGS, USER -> ..., EXIT */
	LG_MSG_STDIN = 4,      /* h->g: raw bytes for the exec `id`; empty = EOF */
	LG_MSG_STDOUT = 5,     /* g->h: raw bytes */
	LG_MSG_STDERR = 6,     /* g->h: raw bytes */
	LG_MSG_EXIT = 7,       /* g->h: EXIT_CODE | SIGNAL, TIMED_OUT, ERRNO, MESSAGE */
	LG_MSG_KILL = 8,       /* h->g: SIGNAL; signals the process group of exec `id` */
	LG_MSG_FILE_WRITE = 9, /* h->g: PATH, MODE, OFFSET, DATA, FLAGS -> RESULT */
	LG_MSG_FILE_READ = 10, /* h->g: PATH, OFFSET, LENGTH -> RESULT: DATA, SIZE, FLAGS(EOF) */
	LG_MSG_LIST_DIR = 11,  /* h->g: PATH -> RESULT: DIRENT* */
	LG_MSG_STAT = 12,      /* h->g: PATH -> RESULT: FTYPE, MODE, SIZE, MTIME */
	LG_MSG_MKDIR = 13,     /* h->g: PATH, MODE, FLAGS(PARENTS) -> RESULT */
	LG_MSG_REMOVE = 14,    /* h->g: PATH, FLAGS(RECURSIVE) -> RESULT */
	LG_MSG_SHUTDOWN = 15,  /* h->g -> RESULT, then the guest powers off */
	LG_MSG_RESULT = 16,    /* g->h: ERRNO (0 = success), MESSAGE, op-specific fields */
	/* Net port only (LG_NET_PORT_NAME); id = stream id, chosen by the guest. */
	LG_MSG_NET_OPEN = 17,  /* g->h: a guest program connected to the proxy port */
	LG_MSG_NET_DATA = 18,  /* both: raw bytes of the stream */
	LG_MSG_NET_EOF = 19,   /* both: no more bytes this way (half close) */
	LG_MSG_NET_CLOSE = 20, /* both: the stream is gone (reset or both EOFs done) */
	LG_MSG_NET_ACK = 21,   /* both: payload u32 = bytes consumed, returns send credit */
	/* Agent port again (protocol 2). */
	LG_MSG_STDIN_ACK = 22, /* g->h: payload u32 = STDIN bytes taken, returns send credit */
	/* Protocol 4. */
	LG_MSG_ADOPT = 23, /* h->g: SEED, REALTIME_NS, HOSTNAME, MACHINE_ID -> RESULT: FLAGS */
	LG_MSG_MAX_ = 23,
};

enum lg_tag {
	LG_TAG_VERSION = 1,    /* u32 */
	LG_TAG_AGENT = 2,      /* string: agent name and version */
	LG_TAG_ARGV = 3,       /* string, repeated in order */
	LG_TAG_ENV = 4,	       /* string "KEY=VALUE", repeated */
	LG_TAG_CWD = 5,	       /* string */
	LG_TAG_TIMEOUT_MS = 6, /* u32, 0 = none */
	LG_TAG_FLAGS = 7,      /* u32, meaning per message */
	LG_TAG_EXIT_CODE = 8,  /* u32 (0..255) */
	LG_TAG_SIGNAL = 9,     /* u32 */
	LG_TAG_TIMED_OUT = 10, /* u32 0/1 */
	LG_TAG_ERRNO = 11,     /* u32, Linux errno numbers */
	LG_TAG_MESSAGE = 12,   /* string */
	LG_TAG_PATH = 13,      /* string */
	LG_TAG_MODE = 14,      /* u32 */
	LG_TAG_OFFSET = 15,    /* u64 */
	LG_TAG_LENGTH = 16,    /* u32 */
	LG_TAG_DATA = 17,      /* bytes */
	LG_TAG_SIZE = 18,      /* u64 */
	LG_TAG_FTYPE = 19,     /* u32: enum lg_ftype */
	LG_TAG_MTIME = 20,     /* u64 seconds since the epoch */
	LG_TAG_DIRENT = 21,    /* bytes: u32 ftype, u32 mode, u64 size, name (rest) */
	LG_TAG_USER = 22,      /* string: a user name or a decimal uid (protocol 3) */
	/* ADOPT's fields (protocol 4). */
	LG_TAG_SEED = 23,	 /* bytes: LG_ADOPT_SEED_MIN..LG_ADOPT_SEED_MAX from getrandom */
	LG_TAG_REALTIME_NS = 24, /* u64: the host's CLOCK_REALTIME in ns since the epoch */
	LG_TAG_HOSTNAME = 25,	 /* string: lg_hostname_valid() */
	LG_TAG_MACHINE_ID = 26,	 /* string: lg_machine_id_valid() */
	LG_TAG_MAX_ = 26,
};

/* LG_TAG_FLAGS values. */
#define LG_EXEC_STDIN	    (1u << 0) /* host will send STDIN frames; else stdin is /dev/null */
#define LG_WRITE_TRUNC	    (1u << 0)
#define LG_WRITE_APPEND	    (1u << 1)
#define LG_WRITE_MKDIRS	    (1u << 2)
#define LG_READ_EOF	    (1u << 0)
#define LG_MKDIR_PARENTS    (1u << 0)
#define LG_REMOVE_RECURSIVE (1u << 0)
/* ADOPT's RESULT FLAGS: what the guest did beyond seed, clock and hostname. */
#define LG_ADOPT_MACHINE_ID_WRITTEN (1u << 0) /* /etc/machine-id (else its root is read-only) */
/* Not the guest's PID 1 (lg-agent --fd in a test on a host): checked, nothing changed. */
#define LG_ADOPT_DRY_RUN   (1u << 1)
#define LG_ADOPT_FLAGS_ALL (LG_ADOPT_MACHINE_ID_WRITTEN | LG_ADOPT_DRY_RUN)

enum lg_ftype {
	LG_FTYPE_OTHER = 0,
	LG_FTYPE_FILE = 1,
	LG_FTYPE_DIR = 2,
	LG_FTYPE_SYMLINK = 3,
};

#define LG_DIRENT_FIXED 16u /* bytes before the name in a DIRENT value */

struct lg_frame_hdr {
	uint32_t len;
	uint16_t type;
	uint16_t flags;
	uint32_t id;
};

const char *lg_msg_name(uint16_t type);

/* One RFC 1123 label: 1..LG_HOSTNAME_MAX of [A-Za-z0-9-], not starting or ending with '-'. */
bool lg_hostname_valid(const char *s, size_t len);
/* Exactly LG_MACHINE_ID_LEN lowercase hex digits, not all zero. */
bool lg_machine_id_valid(const char *s, size_t len);

/* Little-endian field access, byte by byte: no alignment assumptions. */
void lg_put_le16(uint8_t *p, uint16_t v);
void lg_put_le32(uint8_t *p, uint32_t v);
void lg_put_le64(uint8_t *p, uint64_t v);
uint16_t lg_get_le16(const uint8_t *p);
uint32_t lg_get_le32(const uint8_t *p);
uint64_t lg_get_le64(const uint8_t *p);

void lg_frame_hdr_encode(uint8_t out[LG_FRAME_HDR_SIZE], const struct lg_frame_hdr *h);

/*
 * Decodes and validates a header from exactly LG_FRAME_HDR_SIZE bytes.
 * Returns 0, -EMSGSIZE for a payload over the limit, -EPROTO for an unknown
 * type or non-zero flags.
 */
int lg_frame_hdr_decode(const uint8_t in[LG_FRAME_HDR_SIZE], struct lg_frame_hdr *h);

/* ---- growable byte buffer (for building frames and queueing output) ---- */

struct lg_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t off; /* consumed prefix, for use as a queue */
};

void lg_buf_free(struct lg_buf *b);
void lg_buf_reserve(struct lg_buf *b, size_t extra);
void lg_buf_append(struct lg_buf *b, const void *p, size_t n);
/* Drops n consumed bytes from the front; compacts when worthwhile. */
void lg_buf_consume(struct lg_buf *b, size_t n);
static inline size_t lg_buf_pending(const struct lg_buf *b)
{
	return b->len - b->off;
}
static inline const uint8_t *lg_buf_head(const struct lg_buf *b)
{
	return b->data + b->off;
}

/*
 * Frame building: lg_frame_begin() appends a header with len 0 and returns
 * its offset; TLV puts append fields; lg_frame_end() patches the length.
 * Returns -EMSGSIZE from lg_frame_end() if the payload outgrew the limit.
 */
size_t lg_frame_begin(struct lg_buf *b, uint16_t type, uint32_t id);
int lg_frame_end(struct lg_buf *b, size_t start);
/* A whole data frame (STDIN/STDOUT/STDERR) with raw payload n <= LG_FRAME_MAX_PAYLOAD. */
void lg_frame_data(struct lg_buf *b, uint16_t type, uint32_t id, const void *p, size_t n);

void lg_tlv_put(struct lg_buf *b, uint16_t tag, const void *p, size_t n);
void lg_tlv_put_u32(struct lg_buf *b, uint16_t tag, uint32_t v);
void lg_tlv_put_u64(struct lg_buf *b, uint16_t tag, uint64_t v);
void lg_tlv_put_str(struct lg_buf *b, uint16_t tag, const char *s);

/* ---- TLV reading ---- */

struct lg_tlv_iter {
	const uint8_t *p;
	const uint8_t *end;
};

struct lg_tlv {
	uint16_t tag;
	uint32_t len;
	const uint8_t *val;
};

void lg_tlv_iter_init(struct lg_tlv_iter *it, const uint8_t *payload, size_t len);
/*
 * 1: *out holds the next field; 0: end of payload; -EPROTO: malformed.
 * Tags above LG_TAG_MAX_ are returned too (a newer peer's fields): callers
 * skip tags they do not know.
 */
int lg_tlv_next(struct lg_tlv_iter *it, struct lg_tlv *out);
/* Typed accessors: -EPROTO if the length does not match the type. */
int lg_tlv_u32(const struct lg_tlv *t, uint32_t *out);
int lg_tlv_u64(const struct lg_tlv *t, uint64_t *out);
/*
 * Copies a string field into a new NUL-terminated allocation.  -EPROTO if
 * the value contains a NUL byte (no silent truncation of paths or argv).
 */
int lg_tlv_strdup(const struct lg_tlv *t, char **out);

/* ---- incremental frame reader over a byte stream ---- */

struct lg_reader {
	uint8_t *buf; /* holds at most one header + LG_FRAME_MAX_PAYLOAD */
	size_t len;
	size_t cap;
};

void lg_reader_init(struct lg_reader *r);
void lg_reader_free(struct lg_reader *r);
/*
 * Where and how much to read() next: never more than the current frame
 * needs, so the reader's memory stays bounded by one frame.
 */
uint8_t *lg_reader_space(struct lg_reader *r, size_t *room);
void lg_reader_commit(struct lg_reader *r, size_t n);
/*
 * 1: a whole frame is ready (*h and *payload valid until the next call to
 * lg_reader_space/lg_reader_pop); 0: need more bytes; <0: protocol error.
 */
int lg_reader_peek(struct lg_reader *r, struct lg_frame_hdr *h, const uint8_t **payload);
/* Discards the frame returned by the last successful peek. */
void lg_reader_pop(struct lg_reader *r);

/*
 * Feeds bytes through a reader, calling fn for every whole frame; used by
 * the fuzzer and tests.  Stops at the first error or non-zero return of fn.
 */
int lg_reader_feed(struct lg_reader *r, const uint8_t *p, size_t n,
		   int (*fn)(void *ctx, const struct lg_frame_hdr *h, const uint8_t *payload),
		   void *ctx);

#endif
