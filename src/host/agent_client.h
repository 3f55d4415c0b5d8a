/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host side of the agent protocol (proto/proto.h): requests to lg-agent
 * in a guest and the checks on everything it sends back.  The guest is
 * untrusted; a frame that breaks the protocol ends the connection with an
 * error, it never crashes or hangs the host.
 */
#ifndef LG_HOST_AGENT_CLIENT_H
#define LG_HOST_AGENT_CLIENT_H

#include "common/err.h"
#include "proto/proto.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lg_agent;

/*
 * Return codes of every call below, beyond the ones each names:
 *   -EREMOTEIO   the guest refused or failed the request (a RESULT with an
 *                errno, or an EXEC that could not start); the message is
 *                the guest's, the channel is fine;
 *   -ECONNRESET  the channel ended: EOF, EPIPE or ECONNRESET, i.e. the agent
 *                ended the session or the VM is gone (it powered itself
 *                off, or QEMU died);
 *   -EPROTO      the guest broke the protocol; the channel is closed;
 *   -EPIPE       a call after the channel closed (either of the two above);
 *   -ETIMEDOUT   no answer in time; -EINTR: cancel_fd fired.
 */

/*
 * lg_agent_connect's code when the guest booted but could not set up the
 * image's root file system (HELLO with ERRNO and MESSAGE, protocol 3): the
 * message is "the guest could not set up its root file system: WHY".
 */
#define LG_AGENT_SETUP_ERRNO ENOMEDIUM

/*
 * Waits for the agent's HELLO on fd (borrowed, not closed) for at most
 * timeout_ms.  cancel_fd (or -1): when it becomes readable every wait in
 * this client gives up with -EINTR; the CLI points it at its signal pipe.
 */
int lg_agent_connect(int fd, int cancel_fd, int timeout_ms, struct lg_agent **out,
		     struct lg_err **err);
void lg_agent_free(struct lg_agent *a);
/* "lg-agent X.Y" as the guest said in HELLO. */
const char *lg_agent_name(const struct lg_agent *a);
/* The protocol version the agent speaks (HELLO's, or PING's after a restore). */
uint32_t lg_agent_version(const struct lg_agent *a);

/*
 * For a guest restored from a snapshot, which said HELLO long ago to the
 * process that made the snapshot: sends PING on fd (borrowed) and waits at
 * most timeout_ms for its RESULT, which must carry VERSION (protocol 4 or
 * later, LG_PROTO_VERSION_ADOPT).  A restore whose devices do not match
 * may "complete" and then hang: this is the check that it runs.
 */
int lg_agent_attach(int fd, int cancel_fd, int timeout_ms, struct lg_agent **out,
		    struct lg_err **err);

/*
 * ADOPT: makes a restored or pooled guest its claimer's before any command
 * runs: 64 fresh bytes of the host's getrandom credited to the guest's RNG
 * and reseeded into its CRNG at once, its clock set to the host's
 * CLOCK_REALTIME, its hostname (NULL: "lg-" and 8 random hex digits; else
 * lg_hostname_valid or -EINVAL) and a new /etc/machine-id where its root
 * is writable.  *flags (may be NULL): the RESULT's LG_ADOPT_* flags.
 * -EOPNOTSUPP with a one-line error naming `luminaguard image build` for
 * an agent older than protocol 4; -EPROTO (channel closed) for a reply
 * that is not exactly ERRNO, MESSAGE and FLAGS with known bits.
 */
int lg_agent_adopt(struct lg_agent *a, const char *hostname, uint32_t *flags, struct lg_err **err);

enum lg_stream { LG_STREAM_STDOUT = 1, LG_STREAM_STDERR = 2 };

struct lg_exec_opts {
	char *const *argv; /* NULL-terminated, at least one word */
	char *const *env;  /* "K=V", NULL-terminated, may be NULL */
	const char *cwd;   /* may be NULL: "/", or the user's home when user is set */
	/*
	 * NULL: the image's default, root.  Else a user name
	 * ([a-z_][a-z0-9_-]{0,31}, an optional trailing '$') or a decimal uid,
	 * resolved in the guest's /etc/passwd; anything else is -EINVAL here.
	 * Needs a protocol-3 agent (-EOPNOTSUPP otherwise: an older one would
	 * ignore the field and run the command as root).
	 */
	const char *user;
	uint32_t timeout_ms;	/* enforced in the guest; 0 = none */
	int stdin_fd;		/* copied to the command until EOF; -1 = /dev/null */
	const void *stdin_data; /* used when stdin_fd < 0 and this is non-NULL */
	size_t stdin_len;
	/*
	 * When this fd (or -1) becomes readable the command is killed (SIGKILL
	 * to its process group in the guest); the call still returns its EXIT.
	 */
	int cancel_fd;
	/* Output as it arrives.  A negative return aborts the exec. */
	int (*on_output)(void *ctx, enum lg_stream stream, const uint8_t *p, size_t n);
	void *ctx;
	/*
	 * The front end's request id (lg_request_id_ok), or NULL.  The agent
	 * client ignores it; the service (lg_entry_exec) hands it into the
	 * guest as the command's LUMINAGUARD_REQUEST_ID.
	 */
	const char *request_id;
};

struct lg_exec_result {
	int exit_code;	/* valid when signal == 0 */
	int signal;	/* killed by this signal, else 0 */
	bool timed_out; /* killed by the guest timeout */
};

/*
 * True for what lg_exec_opts.user may be: Debian's rule for user names
 * ([a-z_][a-z0-9_-]{0,31}, a trailing '$' allowed), or a decimal uid below
 * 2^32-1.  For front ends that check --user before anything boots.
 */
bool lg_exec_user_valid(const char *u);

/*
 * Runs a command and streams its output.  Returns 0 when the command ran
 * (whatever its exit code), <0 if it could not run or the channel broke.
 */
int lg_agent_exec(struct lg_agent *a, const struct lg_exec_opts *o, struct lg_exec_result *res,
		  struct lg_err **err);

int lg_agent_ping(struct lg_agent *a, struct lg_err **err);
/* Writes a whole file (split into frames as needed).  flags: LG_WRITE_MKDIRS. */
int lg_agent_write_file(struct lg_agent *a, const char *path, const void *data, size_t len,
			uint32_t mode, uint32_t flags, struct lg_err **err);
/* Reads a whole file of at most max bytes into *out (new buffer). */
int lg_agent_read_file(struct lg_agent *a, const char *path, size_t max, uint8_t **out,
		       size_t *out_len, struct lg_err **err);

struct lg_dirent {
	char *name;
	uint32_t ftype; /* enum lg_ftype */
	uint32_t mode;
	uint64_t size;
};
int lg_agent_list_dir(struct lg_agent *a, const char *path, struct lg_dirent **out, size_t *count,
		      struct lg_err **err);
void lg_dirents_free(struct lg_dirent *d, size_t count);

struct lg_stat {
	uint32_t ftype;
	uint32_t mode;
	uint64_t size;
	uint64_t mtime;
};
int lg_agent_stat(struct lg_agent *a, const char *path, struct lg_stat *st, struct lg_err **err);
int lg_agent_mkdir(struct lg_agent *a, const char *path, uint32_t mode, bool parents,
		   struct lg_err **err);
int lg_agent_remove(struct lg_agent *a, const char *path, bool recursive, struct lg_err **err);
/* Asks the guest to power off; returns once the agent acknowledged. */
int lg_agent_shutdown(struct lg_agent *a, struct lg_err **err);

#endif
