/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-VM cgroups, v1 and v2.
 *
 * The mount points come from mountinfo, never from a fixed path: a v1
 * hierarchy may be mounted anywhere and may carry several controllers
 * (cpu,cpuacct), and tests point us at a tree of plain directories.
 *
 * v1: one directory per hierarchy that carries memory, pids or cpu, each
 *     <mount>/luminaguard/<name>; the child joins every one of them.
 * v2: <mount>/luminaguard/<name>, after enabling the controllers in the
 *     subtree_control of the mount root and of "luminaguard".
 *
 * The limits are the point of the exercise: a VMM taken over by its guest
 * must not be able to starve the host of memory, processes or CPU.  So a
 * limit that was asked for and cannot be set is an error, never a warning.
 */
#include "jail/cgroup.h"

#include "common/log.h"
#include "common/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PARENT		"luminaguard"
#define CFS_PERIOD_US	100000u
#define MAX_NAME	64
#define DESTROY_WAIT_MS 1000

enum { CTL_MEMORY, CTL_PIDS, CTL_CPU, N_CTL };
static const char *const ctl_names[N_CTL] = {"memory", "pids", "cpu"};

struct lg_cgroup {
	enum lg_cgroup_version version;
	size_t ndirs;
	char *dirs[N_CTL];    /* <mount>/luminaguard/<name>, one per hierarchy */
	char *parents[N_CTL]; /* <mount>/luminaguard */
	int memory_dir;	      /* index into dirs of the memory controller, or -1 */
};

/* Mount points found in mountinfo. */
struct cg_mounts {
	char *v1[N_CTL]; /* per controller; NULL = not mounted */
	char *v2;
};

static void mounts_free(struct cg_mounts *m)
{
	for (int i = 0; i < N_CTL; i++)
		free(m->v1[i]);
	free(m->v2);
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static char *unescape(const char *s)
{
	char *out = xmalloc(strlen(s) + 1), *o = out;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return out;
}

static bool has_option(const char *opts, const char *want)
{
	size_t n = strlen(want);

	for (const char *p = opts; p && *p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		if (len == n && memcmp(p, want, n) == 0)
			return true;
		p = comma ? comma + 1 : NULL;
	}
	return false;
}

/*
 * Fills *m from mountinfo lines:
 *   ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
 * The first mount of each hierarchy wins (later ones are usually bind mounts).
 */
static int read_mounts(const char *mountinfo, struct cg_mounts *m, struct lg_err **err)
{
	cleanup_file FILE *f = NULL;
	cleanup_free char *line = NULL;
	size_t cap = 0;

	memset(m, 0, sizeof(*m));
	if (mountinfo == NULL)
		mountinfo = "/proc/self/mountinfo";
	f = fopen(mountinfo, "re");
	if (f == NULL)
		return lg_err_sys(err, "cannot read %s", mountinfo);
	while (getline(&line, &cap, f) > 0) {
		char *fields[6], *save = NULL, *tok, *fstype, *superopts;
		int n = 0;

		line[strcspn(line, "\n")] = '\0';
		for (tok = strtok_r(line, " ", &save); tok && n < 6;
		     tok = strtok_r(NULL, " ", &save))
			fields[n++] = tok;
		if (n < 6)
			continue;
		/* Skip the optional fields up to the "-" separator. */
		while (tok && strcmp(tok, "-") != 0)
			tok = strtok_r(NULL, " ", &save);
		if (tok == NULL)
			continue;
		fstype = strtok_r(NULL, " ", &save);
		(void)strtok_r(NULL, " ", &save); /* source */
		superopts = strtok_r(NULL, " ", &save);
		if (fstype == NULL)
			continue;
		if (strcmp(fstype, "cgroup2") == 0) {
			if (m->v2 == NULL)
				m->v2 = unescape(fields[4]);
		} else if (strcmp(fstype, "cgroup") == 0 && superopts) {
			for (int i = 0; i < N_CTL; i++)
				if (m->v1[i] == NULL && has_option(superopts, ctl_names[i]))
					m->v1[i] = unescape(fields[4]);
		}
	}
	return 0;
}

/*
 * v1 wins as soon as one of our controllers sits on a v1 hierarchy: on a
 * hybrid host the unified mount exists but carries no controllers.
 */
static enum lg_cgroup_version version_of(const struct cg_mounts *m)
{
	for (int i = 0; i < N_CTL; i++)
		if (m->v1[i])
			return LG_CGROUP_V1;
	return m->v2 ? LG_CGROUP_V2 : LG_CGROUP_NONE;
}

enum lg_cgroup_version lg_cgroup_detect(const char *mountinfo)
{
	struct cg_mounts m;
	enum lg_cgroup_version v;

	if (read_mounts(mountinfo, &m, NULL) < 0)
		return LG_CGROUP_NONE;
	v = version_of(&m);
	mounts_free(&m);
	return v;
}

/*
 * The name becomes a path component under the cgroup root: no separators,
 * no "..", nothing starting with a dot, nothing that could be mistaken
 * for an option by a shell user reading the tree.
 */
static int check_name(const char *name, struct lg_err **err)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n > MAX_NAME)
		return lg_err_msg(err, EINVAL, "cgroup name must be 1 to %d characters", MAX_NAME);
	if (name[0] == '.' || name[0] == '-' || strstr(name, ".."))
		return lg_err_msg(err, EINVAL,
				  "invalid cgroup name '%s': it must not start with '.' or '-' or "
				  "contain '..'",
				  name);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return lg_err_msg(
			    err, EINVAL,
			    "invalid cgroup name '%s': only letters, digits, '.', '_' "
			    "and '-' are allowed",
			    name);
	}
	return 0;
}

static bool file_exists(const char *dir, const char *file)
{
	cleanup_free char *p = xasprintf("%s/%s", dir, file);

	return access(p, F_OK) == 0;
}

/*
 * Writes one interface file.  O_CREAT only matters in test trees of plain
 * directories: cgroupfs has no create operation, so on a real cgroup a
 * missing file still fails (EACCES) and we report it as missing.
 */
static int write_file(const char *dir, const char *file, const char *value, struct lg_err **err)
{
	cleanup_free char *p = xasprintf("%s/%s", dir, file);
	cleanup_close int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	ssize_t r;

	if (fd < 0) {
		if (errno == EACCES && access(p, F_OK) < 0)
			return lg_err_msg(err, ENOENT,
					  "cgroup file %s does not exist (controller not enabled?)",
					  p);
		return lg_err_sys(err, "cannot open %s", p);
	}
	r = lg_write_all(fd, value, strlen(value));
	if (r < 0)
		return lg_err_set(err, (int)-r, "cannot write '%s' to %s", value, p);
	return 0;
}

static char *read_file(const char *dir, const char *file)
{
	cleanup_free char *p = xasprintf("%s/%s", dir, file);
	cleanup_close int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	char *buf;
	ssize_t n;

	if (fd < 0)
		return NULL;
	buf = xmalloc(65536);
	n = lg_read_all(fd, buf, 65535);
	if (n < 0) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	return buf;
}

/* The value of "KEY N" in a flat-keyed file (memory.events, oom_control). */
static bool keyed_value(const char *text, const char *key, uint64_t *out)
{
	size_t kl = strlen(key);

	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');

		if (strncmp(p, key, kl) == 0 && p[kl] == ' ') {
			*out = strtoull(p + kl + 1, NULL, 10);
			return true;
		}
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

static int make_dir(const char *path, bool exist_ok, struct lg_err **err)
{
	if (mkdir(path, 0755) == 0)
		return 0;
	if (errno == EEXIST && exist_ok)
		return 0;
	if (errno == EEXIST)
		return lg_err_msg(err, EEXIST,
				  "cgroup %s already exists: another VM has this name, or a "
				  "crashed run left it (rmdir it)",
				  path);
	if (errno == EACCES || errno == EPERM || errno == EROFS)
		return lg_err_msg(err, errno,
				  "cannot create cgroup %s: %s (cgroups need root or a delegated, "
				  "writable cgroup)",
				  path, strerror(errno));
	return lg_err_sys(err, "cannot create cgroup %s", path);
}

static bool word_in(const char *list, const char *word)
{
	size_t wl = strlen(word);

	for (const char *p = list; p && *p;) {
		size_t len = strcspn(p, " \n");

		if (len == wl && strncmp(p, word, len) == 0)
			return true;
		p += len;
		p += strspn(p, " \n");
	}
	return false;
}

/*
 * v2: turns on our controllers for the children of dir.  All in one write
 * first (the usual case); if the kernel refuses, one at a time, so that a
 * controller nobody asked a limit of may stay off (the kernel refuses cpu
 * while realtime tasks run in a non-root cgroup, for instance).
 */
static int enable_v2(const char *dir, const bool need[N_CTL], struct lg_err **err)
{
	cleanup_free char *cur = read_file(dir, "cgroup.subtree_control");
	char all[64] = "";

	for (int i = 0; i < N_CTL; i++)
		if (!word_in(cur, ctl_names[i]))
			snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s+%s",
				 all[0] ? " " : "", ctl_names[i]);
	if (all[0] == '\0' || write_file(dir, "cgroup.subtree_control", all, NULL) == 0)
		return 0;
	for (int i = 0; i < N_CTL; i++) {
		cleanup_free char *tok = xasprintf("+%s", ctl_names[i]);
		struct lg_err *e = NULL;

		if (word_in(cur, ctl_names[i]) ||
		    write_file(dir, "cgroup.subtree_control", tok, &e) == 0)
			continue;
		if (!need[i]) {
			lg_debug("cgroup: %s controller unavailable in %s: %s", ctl_names[i], dir,
				 e->msg);
			lg_err_free(&e);
			continue;
		}
		*err = e;
		if (e->errnum == EBUSY)
			return lg_err_wrap(err,
					   "cannot enable the %s controller (the cgroup has "
					   "processes of its own; run luminaguard in a delegated "
					   "cgroup, e.g. systemd-run -p Delegate=yes)",
					   ctl_names[i]);
		return lg_err_wrap(err, "cannot enable the %s controller", ctl_names[i]);
	}
	return 0;
}

static int set_limits_v1(struct lg_cgroup *cg, const struct cg_mounts *m,
			 const struct lg_cgroup_limits *l, struct lg_err **err)
{
	char buf[64];

	for (size_t d = 0; d < cg->ndirs; d++) {
		const char *dir = cg->dirs[d];
		/* Which controllers this hierarchy carries. */
		cleanup_free char *mnt = xstrdup(dir);

		*strrchr(mnt, '/') = '\0';
		*strrchr(mnt, '/') = '\0';
		if (m->v1[CTL_MEMORY] && strcmp(m->v1[CTL_MEMORY], mnt) == 0 && l->memory_bytes) {
			snprintf(buf, sizeof(buf), "%" PRIu64, l->memory_bytes);
			if (write_file(dir, "memory.limit_in_bytes", buf, err) < 0)
				return -1;
			/*
			 * With swap accounting, memory+swap gets the same bound, so
			 * that swapping out cannot take a guest past its limit.
			 * Without it (swapaccount=0) the file is absent.
			 */
			if (file_exists(mnt, "memory.memsw.limit_in_bytes") &&
			    write_file(dir, "memory.memsw.limit_in_bytes", buf, err) < 0)
				return -1;
		}
		if (m->v1[CTL_PIDS] && strcmp(m->v1[CTL_PIDS], mnt) == 0 && l->pids_max) {
			snprintf(buf, sizeof(buf), "%u", l->pids_max);
			if (write_file(dir, "pids.max", buf, err) < 0)
				return -1;
		}
		if (m->v1[CTL_CPU] && strcmp(m->v1[CTL_CPU], mnt) == 0 && l->cpus) {
			snprintf(buf, sizeof(buf), "%u", CFS_PERIOD_US);
			if (write_file(dir, "cpu.cfs_period_us", buf, err) < 0)
				return -1;
			snprintf(buf, sizeof(buf), "%" PRIu64, (uint64_t)l->cpus * CFS_PERIOD_US);
			if (write_file(dir, "cpu.cfs_quota_us", buf, err) < 0)
				return -1;
		}
	}
	return 0;
}

static int set_limits_v2(struct lg_cgroup *cg, const struct lg_cgroup_limits *l,
			 struct lg_err **err)
{
	const char *dir = cg->dirs[0];
	char buf[64];

	if (l->memory_bytes) {
		snprintf(buf, sizeof(buf), "%" PRIu64, l->memory_bytes);
		if (write_file(dir, "memory.max", buf, err) < 0)
			return -1;
		/*
		 * memory.max does not count swap; no swap at all keeps the
		 * guest's memory in RAM and the limit meaningful.  The file is
		 * absent without swap accounting; checked on the parent, which
		 * has the same files.
		 */
		if (file_exists(cg->parents[0], "memory.swap.max") &&
		    write_file(dir, "memory.swap.max", "0", err) < 0)
			return -1;
	}
	if (l->pids_max) {
		snprintf(buf, sizeof(buf), "%u", l->pids_max);
		if (write_file(dir, "pids.max", buf, err) < 0)
			return -1;
	}
	if (l->cpus) {
		snprintf(buf, sizeof(buf), "%" PRIu64 " %u", (uint64_t)l->cpus * CFS_PERIOD_US,
			 CFS_PERIOD_US);
		if (write_file(dir, "cpu.max", buf, err) < 0)
			return -1;
	}
	return 0;
}

/*
 * Removes what a luminaguard that died by SIGKILL left: empty cgroups
 * named vm-<pid>-<n> whose <pid> is no longer alive.  A live pid (even a
 * reused one) or a cgroup with processes in it is left alone: sweeping is
 * only ever allowed to remove what nobody can be using.
 */
static int sweep_dir(const char *parent)
{
	DIR *d = opendir(parent);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (strncmp(e->d_name, "vm-", 3) != 0)
			continue;
		pid = strtol(e->d_name + 3, &end, 10);
		if (end == e->d_name + 3 || *end != '-' || pid <= 0)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		cleanup_free char *dir = xasprintf("%s/%s", parent, e->d_name);
		cleanup_free char *procs = read_file(dir, "cgroup.procs");
		if (procs == NULL || procs[strspn(procs, " \n")] != '\0')
			continue;
		if (rmdir(dir) == 0) {
			lg_debug("cgroup: removed %s, left by a luminaguard that died", dir);
			n++;
		}
	}
	closedir(d);
	/* The shared parent stays: another process may be about to create in it. */
	return n;
}

int lg_cgroup_sweep_stale(const char *mountinfo)
{
	struct cg_mounts m;
	int n = 0;

	if (read_mounts(mountinfo, &m, NULL) < 0)
		return 0;
	if (m.v2 != NULL) {
		cleanup_free char *parent = xasprintf("%s/" PARENT, m.v2);
		n += sweep_dir(parent);
	}
	for (int i = 0; i < N_CTL; i++) {
		/* Co-mounted controllers share a directory: the second sweep finds nothing. */
		if (m.v1[i] != NULL) {
			cleanup_free char *parent = xasprintf("%s/" PARENT, m.v1[i]);
			n += sweep_dir(parent);
		}
	}
	mounts_free(&m);
	return n;
}

int lg_cgroup_create(const char *mountinfo, const char *name, const struct lg_cgroup_limits *l,
		     struct lg_cgroup **out, struct lg_err **err)
{
	static const struct lg_cgroup_limits none = {0};
	struct cg_mounts m;
	struct lg_cgroup *cg;
	size_t made = 0;
	bool need[N_CTL];

	*out = NULL;
	if (l == NULL)
		l = &none;
	if (check_name(name, err) < 0)
		return -1;
	if (read_mounts(mountinfo, &m, err) < 0)
		return lg_err_wrap(err, "cgroups");
	need[CTL_MEMORY] = l->memory_bytes != 0;
	need[CTL_PIDS] = l->pids_max != 0;
	need[CTL_CPU] = l->cpus != 0;

	cg = xzalloc(sizeof(*cg));
	cg->memory_dir = -1;
	cg->version = version_of(&m);
	switch (cg->version) {
	case LG_CGROUP_NONE:
		lg_err_msg(err, ENOENT,
			   "no cgroup filesystem is mounted (see /proc/self/mountinfo)");
		goto fail;
	case LG_CGROUP_V1:
		for (int i = 0; i < N_CTL; i++) {
			if (m.v1[i] == NULL) {
				if (need[i]) {
					lg_err_msg(err, ENOENT,
						   "the cgroup v1 %s controller is not mounted",
						   ctl_names[i]);
					goto fail;
				}
				continue;
			}
			cleanup_free char *parent = xasprintf("%s/" PARENT, m.v1[i]);
			size_t k;

			/* Co-mounted controllers (cpu,cpuacct) share one directory. */
			for (k = 0; k < cg->ndirs; k++)
				if (strcmp(cg->parents[k], parent) == 0)
					break;
			if (k == cg->ndirs) {
				cg->parents[k] = steal_pointer(&parent);
				cg->dirs[k] = xasprintf("%s/" PARENT "/%s", m.v1[i], name);
				cg->ndirs++;
			}
			if (i == CTL_MEMORY)
				cg->memory_dir = (int)k;
		}
		break;
	case LG_CGROUP_V2: {
		cleanup_free char *avail = read_file(m.v2, "cgroup.controllers");

		for (int i = 0; i < N_CTL; i++) {
			if (need[i] && !word_in(avail, ctl_names[i])) {
				lg_err_msg(err, ENOENT,
					   "the cgroup v2 %s controller is not available in %s "
					   "(see cgroup.controllers)",
					   ctl_names[i], m.v2);
				goto fail;
			}
		}
		cg->parents[0] = xasprintf("%s/" PARENT, m.v2);
		cg->dirs[0] = xasprintf("%s/" PARENT "/%s", m.v2, name);
		cg->ndirs = 1;
		cg->memory_dir = 0;
		if (enable_v2(m.v2, need, err) < 0)
			goto fail;
		break;
	}
	}

	for (made = 0; made < cg->ndirs; made++) {
		sweep_dir(cg->parents[made]);
		if (make_dir(cg->parents[made], true, err) < 0)
			goto fail;
		if (cg->version == LG_CGROUP_V2 && enable_v2(cg->parents[made], need, err) < 0)
			goto fail;
		if (make_dir(cg->dirs[made], false, err) < 0)
			goto fail;
	}
	if ((cg->version == LG_CGROUP_V1 ? set_limits_v1(cg, &m, l, err)
					 : set_limits_v2(cg, l, err)) < 0)
		goto fail;
	mounts_free(&m);
	*out = cg;
	return 0;

fail:
	/*
	 * Only the directories this call made: an existing <name> is not ours.
	 * The shared parent goes too if nobody else uses it.
	 */
	if (made < cg->ndirs)
		(void)rmdir(cg->parents[made]);
	cg->ndirs = made;
	lg_cgroup_destroy(cg);
	mounts_free(&m);
	return lg_err_code(err ? *err : NULL);
}

size_t lg_cgroup_procs_fds(const struct lg_cgroup *cg, int *fds, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; cg && i < cg->ndirs && n < max; i++) {
		cleanup_free char *p = xasprintf("%s/cgroup.procs", cg->dirs[i]);
		int fd = open(p, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);

		if (fd < 0) {
			lg_warn("cgroup: cannot open %s: %s", p, strerror(errno));
			continue;
		}
		fds[n++] = fd;
	}
	return n;
}

bool lg_cgroup_oom_killed(const struct lg_cgroup *cg)
{
	cleanup_free char *text = NULL;
	uint64_t v = 0;

	if (cg == NULL || cg->memory_dir < 0)
		return false;
	if (cg->version == LG_CGROUP_V2) {
		text = read_file(cg->dirs[cg->memory_dir], "memory.events");
		return text && keyed_value(text, "oom_kill", &v) && v > 0;
	}
	text = read_file(cg->dirs[cg->memory_dir], "memory.oom_control");
	if (text && keyed_value(text, "oom_kill", &v))
		return v > 0;
	/*
	 * Before Linux 4.13 oom_control has no oom_kill count; hitting the
	 * limit is the best sign left (it may also mean reclaim succeeded).
	 */
	free(text);
	text = read_file(cg->dirs[cg->memory_dir], "memory.failcnt");
	return text && strtoull(text, NULL, 10) > 0;
}

/*
 * SIGKILLs every process listed in dir/cgroup.procs; returns how many.
 * A listed process may exit and its pid be reused before the kill; the
 * window is tiny, and for the jail this is only a backstop: the VMM is
 * pid 1 of its PID namespace, so its end already killed the rest.
 * cgroup.kill (v2) has no such window.
 */
static int kill_procs(const char *dir)
{
	cleanup_free char *text = read_file(dir, "cgroup.procs");
	int n = 0;

	for (char *p = text; p && *p;) {
		char *end;
		long pid = strtol(p, &end, 10);

		if (end == p)
			break;
		/* pid 0 or 1 would mean something is badly wrong; never signal them. */
		if (pid > 1 && kill((pid_t)pid, SIGKILL) == 0)
			n++;
		p = end + strspn(end, "\n ");
	}
	return n;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void remove_dir(const char *dir, enum lg_cgroup_version v)
{
	uint64_t deadline = lg_now_ms() + DESTROY_WAIT_MS;
	bool have_kill = v == LG_CGROUP_V2 && file_exists(dir, "cgroup.kill");

	for (;;) {
		/*
		 * cgroup.kill (v2, Linux 5.14) kills atomically, forks included;
		 * otherwise kill what is listed and go round again for whatever
		 * a dying fork loop managed to create meanwhile.
		 */
		if (have_kill) {
			struct lg_err *e = NULL;

			if (write_file(dir, "cgroup.kill", "1", &e) < 0) {
				lg_debug("%s", e->msg);
				lg_err_free(&e);
			}
		} else {
			kill_procs(dir);
		}
		if (rmdir(dir) == 0 || errno == ENOENT)
			return;
		if (errno != EBUSY || lg_now_ms() >= deadline) {
			lg_warn("cgroup: cannot remove %s: %s", dir, strerror(errno));
			return;
		}
		sleep_ms(10);
	}
}

void lg_cgroup_destroy(struct lg_cgroup *cg)
{
	if (cg == NULL)
		return;
	for (size_t i = 0; i < cg->ndirs; i++) {
		remove_dir(cg->dirs[i], cg->version);
		/* Shared by all VMs: busy or not empty means another VM uses it. */
		if (rmdir(cg->parents[i]) < 0 && errno != EBUSY && errno != ENOTEMPTY &&
		    errno != ENOENT)
			lg_debug("cgroup: cannot remove %s: %s", cg->parents[i], strerror(errno));
	}
	for (size_t i = 0; i < N_CTL; i++) {
		free(cg->dirs[i]);
		free(cg->parents[i]);
	}
	free(cg);
}
