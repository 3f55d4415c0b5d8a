/* SPDX-License-Identifier: Apache-2.0 */
/*
 * seccomp for VMM processes: compiling an allowlist (seccomp_qemu.c) to BPF
 * with libseccomp, installing it in the jailed child, and reading the
 * kernel's audit records to say which syscall killed the VMM.
 *
 * Reading the audit records is security-relevant in its own right: the
 * name we print comes from /dev/kmsg, which holds text that other
 * processes influence (their comm and exe, and anything root writes to
 * /dev/kmsg).  A wrong name would send whoever debugs a kill after the
 * wrong syscall, or hide that the VMM tried something hostile.  So:
 *  - only records with facility 0 count: the kernel's own.  A write to
 *    /dev/kmsg cannot claim facility 0 (devkmsg_write turns it into
 *    LOG_USER);
 *  - the record must be exactly "audit: type=1326 audit(DIGITS.DIGITS:
 *    DIGITS): " followed by space-separated fields;
 *  - pid= is taken only from the fields the kernel writes before comm=
 *    (auid uid gid ses [subj] pid), all numbers or LSM labels, so no
 *    process name can come before it;
 *  - sig arch syscall compat ip code are taken from the last six fields,
 *    in that fixed order (audit_seccomp() writes them last), so whatever a
 *    comm= or exe= value contains -- even if a kernel stopped hex-encoding
 *    names with spaces -- cannot move them.
 */
#include "jail/seccomp.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define AUDIT_SECCOMP_TYPE "1326"
#define KMSG_RECORD_MAX	   16384 /* > CONSOLE_EXT_LOG_MAX (8 KiB): a read never fails with EINVAL */
#define WATCH_MAX_RECORDS  4096	 /* others' records must not grow our memory without bound */
#define KILL_WAIT_MS	   1000	 /* kauditd prints asynchronously, after the process died */
#define LOG_QUIET_MS	   150
#define LOG_WAIT_MAX_MS	   1000

const struct lg_sc_profile *lg_sc_profile_find(const char *vmm_kind)
{
	if (vmm_kind != NULL && strcmp(vmm_kind, lg_sc_profile_qemu.vmm_kind) == 0)
		return &lg_sc_profile_qemu;
	return NULL;
}

static int add_rule(scmp_filter_ctx ctx, const struct lg_sc_profile *p, const struct lg_sc_rule *r,
		    struct lg_err **err)
{
	int nr = seccomp_syscall_resolve_name(r->name);
	uint32_t action = r->err > 0 ? SCMP_ACT_ERRNO((uint32_t)r->err) : SCMP_ACT_ALLOW;
	int ret;

	if (nr == __NR_SCMP_ERROR)
		return lg_err_msg(err, EINVAL,
				  "seccomp profile %s: libseccomp does not know the syscall \"%s\" "
				  "(fix the profile or update libseccomp)",
				  p->vmm_kind, r->name);
	if (r->arg < -1 || r->arg > 5)
		return lg_err_msg(err, EINVAL, "seccomp profile %s: bad argument index %d for %s",
				  p->vmm_kind, r->arg, r->name);
	if (r->arg >= 0)
		ret = seccomp_rule_add(
		    ctx, action, nr, 1,
		    SCMP_CMP((unsigned)r->arg, SCMP_CMP_MASKED_EQ, r->mask, r->value));
	else
		ret = seccomp_rule_add(ctx, action, nr, 0);
	if (ret < 0)
		return lg_err_set(err, -ret, "seccomp profile %s: adding the rule for %s",
				  p->vmm_kind, r->name);
	return 0;
}

/* libseccomp 2.5 exports only to an fd: export to a memfd and read it back. */
static int export_bpf(scmp_filter_ctx ctx, struct sock_fprog *prog, struct lg_err **err)
{
	cleanup_close int fd = memfd_create("lg-seccomp-bpf", MFD_CLOEXEC);
	struct stat st;
	ssize_t n;
	int ret;

	if (fd < 0)
		return lg_err_sys(err, "seccomp: memfd_create for the BPF program");
	ret = seccomp_export_bpf(ctx, fd);
	if (ret < 0)
		return lg_err_set(err, -ret, "seccomp: exporting the BPF program");
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "seccomp: fstat of the BPF program");
	if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0 ||
	    st.st_size / sizeof(struct sock_filter) > BPF_MAXINSNS)
		return lg_err_msg(err, EINVAL,
				  "seccomp: the BPF program has a bad size (%lld bytes; the kernel "
				  "takes at most %d instructions)",
				  (long long)st.st_size, BPF_MAXINSNS);
	prog->filter = xmalloc((size_t)st.st_size);
	prog->len = (unsigned short)(st.st_size / sizeof(struct sock_filter));
	n = pread(fd, prog->filter, (size_t)st.st_size, 0);
	if (n != st.st_size) {
		lg_seccomp_prog_free(prog);
		return lg_err_set(err, n < 0 ? errno : EIO,
				  "seccomp: reading the BPF program back");
	}
	return 0;
}

int lg_seccomp_compile(const struct lg_sc_profile *p, enum lg_seccomp_level level,
		       struct sock_fprog *prog, struct lg_err **err)
{
	scmp_filter_ctx ctx;
	int ret;

	prog->len = 0;
	prog->filter = NULL;
	if (level == LG_SECCOMP_OFF)
		return 0;
	if (level != LG_SECCOMP_STRICT && level != LG_SECCOMP_LOG)
		return lg_err_msg(err, EINVAL, "seccomp: unknown level %d", (int)level);
	if (p == NULL)
		return lg_err_msg(err, EINVAL, "seccomp: no profile to compile");

	ctx = seccomp_init(level == LG_SECCOMP_STRICT ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG);
	if (ctx == NULL)
		return lg_err_msg(err, ENOMEM,
				  "seccomp: libseccomp cannot make a filter (does the kernel "
				  "support seccomp filters and SECCOMP_RET_KILL_PROCESS?)");
	/*
	 * A syscall of another ABI (int 0x80 / i386, x32) kills at every
	 * level, log included: it is the classic way around a filter written
	 * for x86_64 numbers, and QEMU never makes one.
	 */
	ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	/* No no_new_privs from libseccomp: we only export; the jail sets it. */
	if (ret == 0)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	/* A binary tree: ~7 comparisons per syscall instead of ~90. */
	if (ret == 0)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (ret < 0) {
		lg_err_set(err, -ret, "seccomp: setting filter attributes");
		goto out;
	}

	for (size_t i = 0; i < p->n_rules; i++) {
		ret = add_rule(ctx, p, &p->rules[i], err);
		if (ret < 0)
			goto out;
	}
	/*
	 * The jail installs the filter and then execs the VMM: execve must
	 * pass.  Afterwards QEMU's -sandbox spawn=deny forbids it.
	 */
	ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(execve), 0);
	if (ret < 0) {
		lg_err_set(err, -ret, "seccomp: adding the rule for execve");
		goto out;
	}
	ret = export_bpf(ctx, prog, err);
out:
	seccomp_release(ctx);
	return ret < 0 ? ret : 0;
}

/*
 * A deny rule on an int argument compares its low 32 bits only: the kernel
 * truncates socket()'s int family, so AF_VSOCK | 1 << 32 would slip past
 * a full 64-bit comparison and still make a vsock socket.
 */
/* clang-format off */
static const struct lg_sc_rule floor_rules[] = {
    {.name = "socket", .err = EPERM, .arg = 0, .mask = 0xffffffffULL, .value = AF_VSOCK},
    {.name = "socketpair", .err = EPERM, .arg = 0, .mask = 0xffffffffULL, .value = AF_VSOCK},
    {.name = "unshare", .err = EPERM, .arg = 0, .mask = CLONE_NEWUSER, .value = CLONE_NEWUSER},
    {.name = "clone", .err = EPERM, .arg = 0, .mask = CLONE_NEWUSER, .value = CLONE_NEWUSER},
    {.name = "clone3", .err = ENOSYS, .arg = -1},
    {.name = "mount", .err = EPERM, .arg = -1},
    {.name = "umount2", .err = EPERM, .arg = -1},
    {.name = "pivot_root", .err = EPERM, .arg = -1},
    {.name = "keyctl", .err = EPERM, .arg = -1},
    {.name = "add_key", .err = EPERM, .arg = -1},
    {.name = "request_key", .err = EPERM, .arg = -1},
};
/* The new mount API (Linux 5.2+, mount_setattr 5.12+): skipped where libseccomp predates them. */
static const struct lg_sc_rule floor_rules_newer[] = {
    {.name = "fsopen", .err = EPERM, .arg = -1},
    {.name = "fsconfig", .err = EPERM, .arg = -1},
    {.name = "fsmount", .err = EPERM, .arg = -1},
    {.name = "fspick", .err = EPERM, .arg = -1},
    {.name = "move_mount", .err = EPERM, .arg = -1},
    {.name = "open_tree", .err = EPERM, .arg = -1},
    {.name = "mount_setattr", .err = EPERM, .arg = -1},
};
/* clang-format on */

int lg_seccomp_compile_floor(struct sock_fprog *prog, struct lg_err **err)
{
	static const struct lg_sc_profile floor = {
	    .vmm_kind = "jail floor", .rules = floor_rules, .n_rules = ARRAY_SIZE(floor_rules)};
	scmp_filter_ctx ctx;
	int ret;

	prog->len = 0;
	prog->filter = NULL;
	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (ctx == NULL)
		return lg_err_msg(err, ENOMEM, "seccomp: libseccomp cannot make the jail's filter");
	/* As in the allowlists: i386 and x32 numbers would walk around this filter. */
	ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (ret == 0)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (ret < 0) {
		lg_err_set(err, -ret, "seccomp: setting the jail filter's attributes");
		goto out;
	}
	for (size_t i = 0; i < floor.n_rules; i++) {
		ret = add_rule(ctx, &floor, &floor.rules[i], err);
		if (ret < 0)
			goto out;
	}
	for (size_t i = 0; i < ARRAY_SIZE(floor_rules_newer); i++) {
		if (seccomp_syscall_resolve_name(floor_rules_newer[i].name) == __NR_SCMP_ERROR)
			continue;
		ret = add_rule(ctx, &floor, &floor_rules_newer[i], err);
		if (ret < 0)
			goto out;
	}
	ret = export_bpf(ctx, prog, err);
out:
	seccomp_release(ctx);
	return ret < 0 ? ret : 0;
}

void lg_seccomp_prog_free(struct sock_fprog *prog)
{
	if (prog == NULL)
		return;
	free(prog->filter);
	prog->filter = NULL;
	prog->len = 0;
}

int lg_seccomp_install(const struct sock_fprog *prog)
{
	if (prog == NULL || prog->len == 0)
		return 0;
	/*
	 * no_new_privs is what lets an unprivileged process install a filter,
	 * and it stops a setuid exec from shedding it.  The jail sets it too;
	 * setting it twice is harmless.
	 */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) < 0)
		return -errno;
	return 0;
}

/* ---- audit records ---------------------------------------------------- */

static bool parse_dec(const char *s, size_t n, long long min, long long max, long long *out)
{
	long long v = 0;
	bool neg = false;
	size_t i = 0;

	if (n > 0 && s[0] == '-') {
		neg = true;
		i = 1;
	}
	if (i == n || n - i > 18)
		return false;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (neg)
		v = -v;
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

static bool parse_hex(const char *s, size_t n, unsigned long long *out)
{
	unsigned long long v = 0;

	if (n >= 2 && s[0] == '0' && s[1] == 'x') {
		s += 2;
		n -= 2;
	}
	if (n == 0 || n > 16)
		return false;
	for (size_t i = 0; i < n; i++) {
		int d;

		if (s[i] >= '0' && s[i] <= '9')
			d = s[i] - '0';
		else if (s[i] >= 'a' && s[i] <= 'f')
			d = s[i] - 'a' + 10;
		else if (s[i] >= 'A' && s[i] <= 'F')
			d = s[i] - 'A' + 10;
		else
			return false;
		v = v << 4 | (unsigned)d;
	}
	*out = v;
	return true;
}

struct tok {
	const char *s;
	size_t n;
};

/* The value of token t if it is "KEY=VALUE", else NULL. */
static const char *tok_val(const struct tok *t, const char *key, size_t *vn)
{
	size_t kn = strlen(key);

	if (t->n <= kn || memcmp(t->s, key, kn) != 0 || t->s[kn] != '=')
		return NULL;
	*vn = t->n - kn - 1;
	return t->s + kn + 1;
}

#define MAX_TOKENS 64

int lg_seccomp_record_parse(const char *rec, size_t len, struct lg_sc_record *out)
{
	static const char prefix[] = "audit: type=" AUDIT_SECCOMP_TYPE " audit(";
	static const char *const tail[] = {"sig", "arch", "syscall", "compat", "ip", "code"};
	const char *end = rec + len, *semi, *msg, *p;
	struct tok toks[MAX_TOKENS];
	size_t ntok = 0, comm_at = MAX_TOKENS, vn;
	unsigned long long arch, code;
	long long pri, pid = -1, nr;
	const char *v;

	/* Header "PRI,SEQ,TS,FLAGS[,...];" and facility 0 = the kernel. */
	semi = memchr(rec, ';', len);
	if (semi == NULL)
		return -EINVAL;
	p = memchr(rec, ',', (size_t)(semi - rec));
	if (p == NULL || !parse_dec(rec, (size_t)(p - rec), 0, 1023, &pri) || (pri >> 3) != 0)
		return -EINVAL;
	msg = semi + 1;
	/* The message ends at the first newline (kmsg escapes any in the text). */
	p = memchr(msg, '\n', (size_t)(end - msg));
	if (p != NULL)
		end = p;
	if ((size_t)(end - msg) < sizeof(prefix) - 1 ||
	    memcmp(msg, prefix, sizeof(prefix) - 1) != 0)
		return -EINVAL;
	/* "audit(SECONDS.MILLIS:SERIAL): " */
	p = msg + sizeof(prefix) - 1;
	while (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == ':'))
		p++;
	if (end - p < 3 || memcmp(p, "): ", 3) != 0)
		return -EINVAL;
	p += 3;

	/* Fields, separated by single spaces. */
	while (p < end) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *te = sp != NULL ? sp : end;

		if (te == p)
			return -EINVAL; /* empty field: not what the kernel writes */
		if (ntok == MAX_TOKENS)
			return -EINVAL;
		toks[ntok].s = p;
		toks[ntok].n = (size_t)(te - p);
		ntok++;
		p = sp != NULL ? sp + 1 : end;
	}

	/* pid: exactly one, among the fields before the first comm=. */
	for (size_t i = 0; i < ntok; i++) {
		if (tok_val(&toks[i], "comm", &vn) != NULL) {
			comm_at = i;
			break;
		}
		if ((v = tok_val(&toks[i], "pid", &vn)) != NULL) {
			if (pid != -1 || !parse_dec(v, vn, 1, 0x7fffffff, &pid))
				return -EINVAL;
		}
	}
	if (pid == -1 || comm_at == MAX_TOKENS)
		return -EINVAL;

	/* The last six fields, in the kernel's fixed order, after comm=. */
	if (ntok < comm_at + 1 + ARRAY_SIZE(tail))
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(tail); i++) {
		if (tok_val(&toks[ntok - ARRAY_SIZE(tail) + i], tail[i], &vn) == NULL)
			return -EINVAL;
	}
	v = tok_val(&toks[ntok - 5], "arch", &vn);
	if (!parse_hex(v, vn, &arch) || arch > 0xffffffffULL)
		return -EINVAL;
	v = tok_val(&toks[ntok - 4], "syscall", &vn);
	if (!parse_dec(v, vn, 0, 0x7fffffff, &nr))
		return -EINVAL;
	v = tok_val(&toks[ntok - 1], "code", &vn);
	if (vn < 3 || v[0] != '0' || v[1] != 'x' || !parse_hex(v, vn, &code) ||
	    code > 0xffffffffULL)
		return -EINVAL;

	out->pid = (pid_t)pid;
	out->arch = (uint32_t)arch;
	out->nr = (int)nr;
	out->action = (uint32_t)code & SECCOMP_RET_ACTION_FULL;
	return 0;
}

struct lg_seccomp_watch {
	int fd;
	struct lg_sc_record *recs;
	size_t n;
};

struct lg_seccomp_watch *lg_seccomp_watch_open(void)
{
	struct lg_seccomp_watch *w;
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	/* Only records from now on: an old kill of a reused pid must not count. */
	if (lseek(fd, 0, SEEK_END) < 0) {
		close(fd);
		return NULL;
	}
	w = xzalloc(sizeof(*w));
	w->fd = fd;
	w->recs = xmalloc(WATCH_MAX_RECORDS * sizeof(*w->recs));
	return w;
}

/* Reads every new record; returns how many seccomp records were added. */
static size_t watch_drain(struct lg_seccomp_watch *w)
{
	char *buf = xmalloc(KMSG_RECORD_MAX);
	size_t added = 0;

	for (;;) {
		struct lg_sc_record r;
		ssize_t n = read(w->fd, buf, KMSG_RECORD_MAX);

		if (n < 0 && (errno == EINTR || errno == EPIPE))
			continue; /* EPIPE: older records were overwritten; go on */
		if (n <= 0)
			break; /* EAGAIN: nothing more now */
		if (lg_seccomp_record_parse(buf, (size_t)n, &r) < 0)
			continue;
		if (w->n == WATCH_MAX_RECORDS) {
			/* Keep the newer half: ours come last. */
			memmove(w->recs, w->recs + WATCH_MAX_RECORDS / 2,
				(WATCH_MAX_RECORDS / 2) * sizeof(*w->recs));
			w->n = WATCH_MAX_RECORDS / 2;
		}
		w->recs[w->n++] = r;
		added++;
	}
	free(buf);
	return added;
}

static bool wait_readable(int fd, int ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int r;

	do
		r = poll(&pfd, 1, ms);
	while (r < 0 && errno == EINTR);
	return r > 0;
}

static bool is_kill(uint32_t action)
{
	return action == SECCOMP_RET_KILL_PROCESS || action == SECCOMP_RET_KILL_THREAD;
}

static char *syscall_name(const struct lg_sc_record *r)
{
	char *name = seccomp_syscall_resolve_num_arch(r->arch, r->nr);

	if (name == NULL)
		return xasprintf("#%d", r->nr);
	return name;
}

static const struct lg_sc_record *find_kill(const struct lg_seccomp_watch *w, pid_t pid)
{
	for (size_t i = w->n; i > 0; i--) {
		if (w->recs[i - 1].pid == pid && is_kill(w->recs[i - 1].action))
			return &w->recs[i - 1];
	}
	return NULL;
}

char *lg_seccomp_watch_killer(struct lg_seccomp_watch *w, pid_t pid)
{
	const struct lg_sc_record *r;
	uint64_t deadline;

	if (w == NULL)
		return NULL;
	watch_drain(w);
	deadline = lg_now_ms() + KILL_WAIT_MS;
	/* kauditd prints the record on its own time, possibly after the reap. */
	while ((r = find_kill(w, pid)) == NULL) {
		uint64_t now = lg_now_ms();

		if (now >= deadline || !wait_readable(w->fd, (int)(deadline - now)))
			return NULL;
		watch_drain(w);
	}
	return syscall_name(r);
}

char *lg_seccomp_watch_logged(struct lg_seccomp_watch *w, pid_t pid)
{
	uint64_t deadline;
	char *out = NULL;
	size_t outlen = 0;

	if (w == NULL)
		return NULL;
	/* Read until the kernel has been quiet for a while (bounded). */
	watch_drain(w);
	deadline = lg_now_ms() + LOG_WAIT_MAX_MS;
	while (lg_now_ms() < deadline && wait_readable(w->fd, LOG_QUIET_MS))
		watch_drain(w);

	for (size_t i = 0; i < w->n; i++) {
		const struct lg_sc_record *r = &w->recs[i];
		bool seen = false;
		char *name;

		if (r->pid != pid || r->action != SECCOMP_RET_LOG)
			continue;
		for (size_t j = 0; j < i && !seen; j++)
			seen = w->recs[j].pid == pid && w->recs[j].action == SECCOMP_RET_LOG &&
			       w->recs[j].arch == r->arch && w->recs[j].nr == r->nr;
		if (seen)
			continue;
		name = syscall_name(r);
		if (out == NULL) {
			out = name;
			outlen = strlen(out);
		} else {
			size_t nl = strlen(name);

			out = xrealloc(out, outlen + 2 + nl + 1);
			memcpy(out + outlen, ", ", 2);
			memcpy(out + outlen + 2, name, nl + 1);
			outlen += 2 + nl;
			free(name);
		}
	}
	return out;
}

void lg_seccomp_watch_close(struct lg_seccomp_watch *w)
{
	if (w == NULL)
		return;
	close(w->fd);
	free(w->recs);
	free(w);
}
