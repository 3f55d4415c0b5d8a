/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox service (service.h): the registry, the warm pools and their
 * refill thread, and the watcher thread that notices a dead VMM and reaps
 * idle sandboxes.
 *
 * Locking: one mutex (s->lock) guards the registry, the pools and every
 * entry's fields; an entry's op_lock serializes the agent requests on its
 * VM and is never taken while s->lock is held.  No VM is created or
 * destroyed under s->lock: a boot takes seconds, and a destroy waits for
 * the VMM to end.
 *
 * Lifetimes: an entry's VM is destroyed only by a thread that holds no
 * reference in use — the destroyer after busy reached 0, or whoever drops
 * the last reference of a lost entry — so a command running in a VM never
 * has it freed under it.
 */
#include "service/service.h"

#include "host/snapshot.h"

#include "common/sync.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#define ENTRY_ID_LEN	 16 /* "sb-" + 12 hex + NUL */
#define WATCH_PERIOD_MS	 250
#define POOL_BACKOFF_MAX 30000u
#define POOL_GROWTH	 4u
#define POOL_DECAY_MS	 30000u
#define EVICT_HOLD_MS	 2000u

struct lg_entry {
	struct lg_entry *next;
	char id[ENTRY_ID_LEN];
	const void *owner;
	char *owner_name;
	struct lg_sandbox *sb;	 /* NULL once its VM is destroyed */
	pthread_mutex_t op_lock; /* one agent request at a time */
	uint64_t created_ms;	 /* CLOCK_REALTIME, for display */
	uint64_t created_mono;	 /* monotonic, for age */
	uint64_t last_used_ms;	 /* monotonic */
	unsigned idle_timeout_s;
	unsigned cpus;
	uint64_t memory_mib, disk_mib;
	char *image;
	enum lg_spawn_path path;
	uint64_t spawn_ms;
	pid_t pid;
	bool dirty;
	/*
	 * Why its VM is gone when it ended without a destroy, else NULL.  The
	 * entry stays listed as "lost" until destroyed: vanishing would let a
	 * green request do what only a destroy may.
	 */
	char *lost;
	int busy; /* references in use; the VM is not destroyed while > 0 */
	bool doomed;
	void *front;
	void (*on_close)(void *front);
	void (*on_free)(void *front);
	void (*on_lost)(void *front, const char *id, const char *why);
};

/*
 * A shape of VM (image, cpus, memory, layer) and its snapshot.  With
 * snapshots on, the first create of a shape boots and asks the refill
 * thread for a snapshot; later creates of it (and its pool's refills)
 * restore from it.  A snapshot's VM has the network port with nothing
 * behind it, so sandboxes with network restore too: their allowlist is
 * attached after the restore, as a pooled one's is when it is claimed.
 */
struct shape {
	struct shape *next;
	char image[64];
	unsigned cpus;
	uint64_t memory_mib, disk_mib;
	char *dir;	/* a valid snapshot directory, or NULL */
	bool wanted;	/* the refill thread should make it */
	unsigned fails; /* builds that failed: no more after SHAPE_MAX_FAILS */
};
#define SHAPE_MAX	16u
#define SHAPE_MAX_FAILS 2u

/* A booted sandbox waiting in a pool, in no registry. */
struct pooled {
	struct pooled *next;
	struct lg_sandbox *sb;
};

struct pool {
	struct lg_pool_spec spec;
	char key[96]; /* the metric label: IMAGE:CPUS:MIB */
	struct pooled *ready;
	unsigned n_ready, booting;
	struct shape *shape; /* its snapshot */
	/*
	 * How many it keeps ready now: spec.size, grown by one for each miss
	 * up to POOL_GROWTH x spec.size (a burst bigger than the pool should
	 * find the next one ready), and shrunk back one per o.pool_decay_ms
	 * without a miss.
	 */
	unsigned target;
	uint64_t last_miss_ms;
	unsigned failures; /* boots that failed in a row */
	uint64_t retry_at; /* monotonic ms: no refill before */
	bool disabled;	   /* its image cannot be adopted: never refilled */
	struct lg_metric_child *m_ready, *m_hits, *m_misses;
	uint64_t hits, misses;
};

struct lg_service {
	struct lg_service_opts o;
	const struct lg_service_vm_ops *vm;
	const char *default_image;
	pthread_mutex_t lock;
	pthread_cond_t idle;   /* an entry's busy count went down */
	pthread_cond_t refill; /* a pool needs a sandbox, or stop */
	struct lg_entry *entries;
	unsigned n_entries;
	unsigned max_entries;
	struct pool pools[LG_POOL_MAX];
	size_t n_pools;
	struct lg_admission *admission;
	/*
	 * Monotonic ms before which no pool refills: a create that evicted a
	 * pooled VM to fit the budget must get that room, not the refill
	 * thread racing it.
	 */
	uint64_t refill_hold_until;
	struct shape *shapes;
	unsigned n_shapes;
	struct lg_metrics *metrics;
	struct lg_metrics_standard m;
	pthread_t watcher, refiller;
	bool watcher_started, refiller_started;
	bool stopping;
	int wake[2]; /* the watcher's: the set of VMs changed, or stop */
};

/* ---- the real VMs ---- */

/* `true` as a claimer's command would run: through lg_sandbox_exec, with the image's defaults. */
static int real_warm(struct lg_sandbox *sb, struct lg_err **err)
{
	char *argv[] = {"true", NULL};
	struct lg_exec_opts o = {
	    .argv = argv, .timeout_ms = 30000, .stdin_fd = -1, .cancel_fd = -1};
	struct lg_exec_result res;

	return lg_sandbox_exec(sb, &o, &res, err);
}

static const struct lg_service_vm_ops real_vm_ops = {
    .set_net = lg_sandbox_set_net,
    .pid = lg_sandbox_pid,
    .create = lg_sandbox_create,
    .destroy = lg_sandbox_destroy,
    .kill = lg_sandbox_kill,
    .exit_fd = lg_sandbox_exit_fd,
    .adopt = lg_sandbox_adopt,
    .snapshot = lg_snapshot_ensure,
    .warm = real_warm,
};

/* ---- small helpers ---- */

const char *lg_spawn_path_name(enum lg_spawn_path p)
{
	switch (p) {
	case LG_PATH_POOL:
		return LG_SPAWN_PATH_POOL;
	case LG_PATH_RESTORE:
		return LG_SPAWN_PATH_RESTORE;
	case LG_PATH_BOOT:
		break;
	}
	return LG_SPAWN_PATH_BOOT;
}

static uint64_t realtime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct lg_metric_child *child1(struct lg_metric *f, const char *label)
{
	return lg_metric_child(f, (const char *const[]){label});
}

static void wake_watcher(struct lg_service *s)
{
	if (write(s->wake[1], "w", 1) < 0) {
		/* a full pipe already says it */
	}
}

int lg_pool_spec_parse(const char *text, struct lg_pool_spec *out, struct lg_err **err)
{
	const char *eq = strrchr(text, '=');
	const char *colon;
	size_t ilen;
	char *end;
	unsigned long n;

	memset(out, 0, sizeof(*out));
	if (eq == NULL)
		return lg_err_msg(err, EINVAL, "--pool %s: expected IMAGE[:CPUS:MIB]=N", text);
	colon = memchr(text, ':', (size_t)(eq - text));
	ilen = (size_t)((colon != NULL ? colon : eq) - text);
	if (ilen == 0 || ilen >= sizeof(out->image))
		return lg_err_msg(err, EINVAL, "--pool %s: the image name must be 1..%zu bytes",
				  text, sizeof(out->image) - 1);
	memcpy(out->image, text, ilen);
	for (size_t i = 0; i < ilen; i++) {
		char c = out->image[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return lg_err_msg(err, EINVAL, "--pool %s: bad character in the image name",
					  text);
	}
	if (colon != NULL) {
		errno = 0;
		n = strtoul(colon + 1, &end, 10);
		if (errno != 0 || end == colon + 1 || *end != ':' || n == 0 || n > HV_MAX_CPUS)
			return lg_err_msg(err, EINVAL, "--pool %s: CPUS must be 1..%u, then :MIB",
					  text, HV_MAX_CPUS);
		out->cpus = (unsigned)n;
		const char *m = end + 1;
		errno = 0;
		unsigned long long mib = strtoull(m, &end, 10);
		if (errno != 0 || end == m || end != eq || mib < HV_MIN_MEMORY_MIB ||
		    mib > HV_MAX_MEMORY_MIB)
			return lg_err_msg(err, EINVAL, "--pool %s: MIB must be %u..%u", text,
					  HV_MIN_MEMORY_MIB, HV_MAX_MEMORY_MIB);
		out->memory_mib = mib;
	}
	errno = 0;
	n = strtoul(eq + 1, &end, 10);
	if (errno != 0 || end == eq + 1 || *end != '\0' || n == 0 || n > LG_POOL_MAX_SIZE)
		return lg_err_msg(err, EINVAL, "--pool %s: N must be 1..%u", text,
				  LG_POOL_MAX_SIZE);
	out->size = (unsigned)n;
	if (out->cpus == 0)
		out->cpus = 1;
	if (out->memory_mib == 0)
		out->memory_mib = LG_DEFAULT_MEMORY_MIB;
	return 0;
}

/* The options every VM of this shape boots with. */
static void vm_opts(const struct lg_service *s, const char *image, unsigned cpus,
		    uint64_t memory_mib, uint64_t disk_mib, struct lg_sandbox_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->image = image;
	o->backend = s->o.backend;
	o->accel = s->o.accel;
	o->cpus = cpus;
	o->memory_mib = memory_mib;
	o->disk_mib = disk_mib;
	o->cancel_fd = -1;
	o->console_fd = -1;
	o->jail = s->o.jail;
	o->admission = s->admission;
	/*
	 * Pooled, snapshot and restored VMs start with the network port and
	 * nothing behind it (every guest connection refused): whoever claims
	 * one attaches its own allowlist, or closes the port for good.
	 */
	o->net_port = true;
}

/* ---- pools ---- */

static struct pool *pool_for(struct lg_service *s, const char *image, unsigned cpus,
			     uint64_t memory_mib, uint64_t disk_mib)
{
	if (disk_mib != LG_DEFAULT_DISK_MIB)
		return NULL;
	for (size_t i = 0; i < s->n_pools; i++) {
		struct pool *p = &s->pools[i];
		if (strcmp(p->spec.image, image) == 0 && p->spec.cpus == cpus &&
		    p->spec.memory_mib == memory_mib)
			return p;
	}
	return NULL;
}

/* The pool that needs a sandbox most, or NULL; *wait_ms: when to look again.  Under lock. */
static struct pool *pool_to_fill(struct lg_service *s, uint64_t now, int *wait_ms)
{
	struct pool *best = NULL;

	*wait_ms = -1;
	if (now < s->refill_hold_until) {
		*wait_ms = (int)(s->refill_hold_until - now);
		return NULL;
	}
	for (size_t i = 0; i < s->n_pools; i++) {
		struct pool *p = &s->pools[i];
		if (p->disabled || p->n_ready + p->booting >= p->target)
			continue;
		if (p->retry_at > now) {
			int w = (int)(p->retry_at - now);
			if (*wait_ms < 0 || w < *wait_ms)
				*wait_ms = w;
			continue;
		}
		if (best == NULL || p->n_ready + p->booting < best->n_ready + best->booting)
			best = p;
	}
	return best;
}

static void pool_gauge(struct pool *p)
{
	lg_metric_gauge_set(p->m_ready, p->n_ready);
}

/* ---- shapes and their snapshots ---- */

/* The shape, made if new and there is room; NULL when snapshots are off or the table is full. */
static struct shape *shape_get_locked(struct lg_service *s, const char *image, unsigned cpus,
				      uint64_t memory_mib, uint64_t disk_mib)
{
	struct shape *sh;

	if (!s->o.snapshots || s->vm->snapshot == NULL)
		return NULL;
	for (sh = s->shapes; sh != NULL; sh = sh->next)
		if (strcmp(sh->image, image) == 0 && sh->cpus == cpus &&
		    sh->memory_mib == memory_mib && sh->disk_mib == disk_mib)
			return sh;
	/* Requests choose shapes: a bounded table keeps them from growing it. */
	if (s->n_shapes >= SHAPE_MAX || strlen(image) >= sizeof(sh->image))
		return NULL;
	sh = xzalloc(sizeof(*sh));
	snprintf(sh->image, sizeof(sh->image), "%s", image);
	sh->cpus = cpus;
	sh->memory_mib = memory_mib;
	sh->disk_mib = disk_mib;
	sh->next = s->shapes;
	s->shapes = sh;
	s->n_shapes++;
	return sh;
}

/* A copy of sh's snapshot directory, or NULL (then asks for one).  Under lock. */
static char *shape_snapshot_locked(struct lg_service *s, struct shape *sh)
{
	if (sh == NULL)
		return NULL;
	if (sh->dir != NULL)
		return xstrdup(sh->dir);
	if (!sh->wanted && sh->fails < SHAPE_MAX_FAILS) {
		sh->wanted = true;
		pthread_cond_signal(&s->refill);
	}
	return NULL;
}

/* A restore from sh's snapshot failed: forget it, so that it is made again. */
static void shape_stale(struct lg_service *s, struct shape *sh, const char *why)
{
	pthread_mutex_lock(&s->lock);
	if (sh->dir != NULL) {
		lg_warn("snapshot %s: %s; it is made again", sh->dir, why);
		free(sh->dir);
		sh->dir = NULL;
	}
	if (!sh->wanted) {
		sh->wanted = true;
		pthread_cond_signal(&s->refill);
	}
	pthread_mutex_unlock(&s->lock);
}

/* Makes sh's snapshot (on the refill thread; takes seconds: a boot and a save). */
static void shape_build(struct lg_service *s, struct shape *sh)
{
	struct lg_sandbox_opts o;
	struct lg_err *err = NULL;
	char *dir = NULL;
	uint64_t t0 = lg_now_ms();

	vm_opts(s, sh->image, sh->cpus, sh->memory_mib, sh->disk_mib, &o);
	int r = s->vm->snapshot(&o, &dir, &err);
	pthread_mutex_lock(&s->lock);
	sh->wanted = false;
	if (r < 0) {
		sh->fails++;
	} else {
		free(sh->dir);
		sh->dir = dir;
		sh->fails = 0;
	}
	pthread_mutex_unlock(&s->lock);
	if (r < 0) {
		lg_warn("snapshot of %s:%u:%llu: %s; its sandboxes boot", sh->image, sh->cpus,
			(unsigned long long)sh->memory_mib, err->msg);
		lg_err_free(&err);
	} else {
		lg_info("snapshot of %s:%u:%llu ready in %llu ms", sh->image, sh->cpus,
			(unsigned long long)sh->memory_mib, (unsigned long long)(lg_now_ms() - t0));
	}
}

/* Gives a VM started with the port its claimer's network (NULL: none); destroys it on failure. */
static int claim_net(struct lg_service *s, struct lg_sandbox *sb, const struct lg_sandbox_net *net,
		     struct lg_err **err)
{
	if (s->vm->set_net == NULL || s->vm->set_net(sb, net, err) == 0)
		return 0;
	lg_err_wrap(err, "attaching the sandbox's network");
	s->vm->destroy(sb);
	return -(*err)->errnum;
}

/*
 * Creates a VM of o's shape: a restore when its snapshot exists, else a
 * boot.  *path says which.  A stale snapshot is forgotten and the VM
 * boots.  For a pool (claim): the VM keeps the bare network port for its
 * claimer.  Else it starts with net (NULL: no network; a restored VM's
 * port, which its snapshot has, is then closed by the sandbox itself).
 */
static int spawn(struct lg_service *s, const struct lg_sandbox_opts *o, struct shape *sh,
		 const char *hostname, bool claim, const struct lg_sandbox_net *net,
		 struct lg_sandbox **out, enum lg_spawn_path *path, struct lg_err **err)
{
	cleanup_free char *snap = NULL;
	struct lg_sandbox_opts vo = *o;
	int r;

	if (sh != NULL) {
		pthread_mutex_lock(&s->lock);
		snap = shape_snapshot_locked(s, sh);
		pthread_mutex_unlock(&s->lock);
	}
	if (!claim) {
		vo.net_port = false;
		vo.net = net;
	}
	*path = LG_PATH_BOOT;
	if (snap != NULL) {
		/*
		 * Every restore starts as the same guest: the create adopts it
		 * (a fresh RNG seed, the clock, its hostname) before it returns.
		 * A boot keeps the image's hostname and sends no ADOPT, so that
		 * images with an older agent still boot.
		 */
		vo.snapshot = snap;
		vo.hostname = hostname;
		r = s->vm->create(&vo, out, err);
		if (r == 0) {
			*path = LG_PATH_RESTORE;
			return 0;
		}
		if (r != -ESTALE && r != -ENOENT)
			return r;
		shape_stale(s, sh, (*err)->msg);
		lg_err_free(err);
		vo.snapshot = NULL;
		vo.hostname = NULL;
	}
	return s->vm->create(&vo, out, err);
}

/* One VM for pool p, restored when its shape has a snapshot, else booted. */
static int pool_spawn(struct lg_service *s, struct pool *p, struct lg_sandbox **out,
		      enum lg_spawn_path *path, struct lg_err **err)
{
	struct lg_sandbox_opts o;
	uint64_t t0 = lg_now_ms();
	int r;

	vm_opts(s, p->spec.image, p->spec.cpus, p->spec.memory_mib, LG_DEFAULT_DISK_MIB, &o);
	r = spawn(s, &o, p->shape, NULL, true, NULL, out, path, err);
	if (r < 0)
		return r;
	lg_metric_observe(child1(s->m.spawn_seconds, lg_spawn_path_name(*path)),
			  (double)(lg_now_ms() - t0) / 1000.0);
	if (s->vm->warm != NULL && s->vm->warm(*out, err) < 0) {
		lg_err_wrap(err, "its first command");
		s->vm->destroy(*out);
		*out = NULL;
		return -EIO;
	}
	return 0;
}

/* A shape whose snapshot is wanted, or NULL.  Under lock. */
static struct shape *shape_to_build(struct lg_service *s)
{
	for (struct shape *sh = s->shapes; sh != NULL; sh = sh->next)
		if (sh->wanted)
			return sh;
	return NULL;
}

static void *refill_main(void *arg)
{
	struct lg_service *s = arg;

	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		int wait_ms;
		struct shape *sh = shape_to_build(s);
		struct pool *p;

		/* A pool's first refill waits for its snapshot: every later one is then a restore.
		 */
		if (sh != NULL) {
			pthread_mutex_unlock(&s->lock);
			shape_build(s, sh);
			pthread_mutex_lock(&s->lock);
			continue;
		}
		p = pool_to_fill(s, lg_now_ms(), &wait_ms);
		if (p == NULL) {
			if (wait_ms < 0) {
				pthread_cond_wait(&s->refill, &s->lock);
			} else {
				lg_cond_wait_ms(&s->refill, &s->lock, (unsigned)wait_ms);
			}
			continue;
		}
		p->booting++;
		pthread_mutex_unlock(&s->lock);

		struct lg_sandbox *sb = NULL;
		struct lg_err *err = NULL;
		enum lg_spawn_path path;
		int r = pool_spawn(s, p, &sb, &path, &err);

		pthread_mutex_lock(&s->lock);
		p->booting--;
		if (r < 0) {
			/*
			 * A missing image or a full budget would otherwise be
			 * retried in a hot loop: back off, doubling to 30 s.
			 */
			uint64_t back = 1000u << (p->failures < 5 ? p->failures : 5);
			p->failures++;
			p->retry_at =
			    lg_now_ms() + (back < POOL_BACKOFF_MAX ? back : POOL_BACKOFF_MAX);
			pthread_mutex_unlock(&s->lock);
			lg_warn("pool %s: cannot fill: %s (retry in %llu ms)", p->key, err->msg,
				(unsigned long long)back);
			lg_err_free(&err);
			pthread_mutex_lock(&s->lock);
			continue;
		}
		p->failures = 0;
		if (s->stopping || p->disabled) {
			bool stop = s->stopping;
			pthread_mutex_unlock(&s->lock);
			s->vm->destroy(sb);
			pthread_mutex_lock(&s->lock);
			if (!stop)
				continue;
			break;
		}
		struct pooled *pd = xzalloc(sizeof(*pd));
		pd->sb = sb;
		pd->next = p->ready;
		p->ready = pd;
		p->n_ready++;
		pool_gauge(p);
		lg_debug("pool %s: %u ready (%s)", p->key, p->n_ready, lg_spawn_path_name(path));
		pthread_mutex_unlock(&s->lock);
		wake_watcher(s);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Takes a ready sandbox out of p, or NULL.  Under lock. */
static struct lg_sandbox *pool_take(struct lg_service *s, struct pool *p)
{
	struct pooled *pd = p->ready;
	struct lg_sandbox *sb;

	if (pd == NULL)
		return NULL;
	p->ready = pd->next;
	p->n_ready--;
	sb = pd->sb;
	free(pd);
	pool_gauge(p);
	pthread_cond_signal(&s->refill);
	return sb;
}

/*
 * Frees one pooled sandbox of any pool, to make room in the budget for a
 * create that missed: a waiting VM is worth less than a request.  Returns
 * whether one was freed.
 */
static bool pool_evict_one(struct lg_service *s)
{
	struct lg_sandbox *sb = NULL;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n_pools && sb == NULL; i++)
		sb = pool_take(s, &s->pools[i]);
	if (sb != NULL)
		s->refill_hold_until = lg_now_ms() + EVICT_HOLD_MS;
	pthread_mutex_unlock(&s->lock);
	if (sb == NULL)
		return false;
	wake_watcher(s);
	s->vm->destroy(sb);
	return true;
}

json_t *lg_service_pools(struct lg_service *s)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n_pools; i++) {
		struct pool *p = &s->pools[i];
		json_array_append_new(
		    arr,
		    json_pack("{s:s, s:s, s:i, s:I, s:i, s:i, s:i, s:i, s:I, s:I, s:b, s:b}", "key",
			      p->key, "image", p->spec.image, "cpus", (int)p->spec.cpus,
			      "memory_mib", (json_int_t)p->spec.memory_mib, "target",
			      (int)p->target, "size", (int)p->spec.size, "ready", (int)p->n_ready,
			      "booting", (int)p->booting, "hits", (json_int_t)p->hits, "misses",
			      (json_int_t)p->misses, "snapshot",
			      p->shape != NULL && p->shape->dir != NULL, "disabled", p->disabled));
	}
	pthread_mutex_unlock(&s->lock);
	return arr;
}

/* ---- the registry ---- */

static struct lg_entry *find_locked(struct lg_service *s, const char *id, const void *owner)
{
	for (struct lg_entry *e = s->entries; e != NULL; e = e->next)
		if (!e->doomed && (owner == NULL || e->owner == owner) && strcmp(e->id, id) == 0)
			return e;
	return NULL;
}

static void unlink_locked(struct lg_service *s, struct lg_entry *e)
{
	for (struct lg_entry **pp = &s->entries; *pp != NULL; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			s->n_entries--;
			return;
		}
}

static void entry_free(struct lg_service *s, struct lg_entry *e)
{
	if (e->sb != NULL) {
		s->vm->destroy(e->sb);
		wake_watcher(s);
	}
	if (e->on_free != NULL)
		e->on_free(e->front);
	pthread_mutex_destroy(&e->op_lock);
	free(e->owner_name);
	free(e->image);
	free(e->lost);
	free(e);
}

/*
 * Frees an entry already unlinked and marked doomed.  A command running in
 * it is ended by killing its VM (the request then fails at once); threads
 * queued on op_lock see `doomed` and back off; then busy reaches 0.
 */
static void entry_destroy(struct lg_service *s, struct lg_entry *e)
{
	if (e->on_close != NULL)
		e->on_close(e->front);
	pthread_mutex_lock(&s->lock);
	if (e->busy > 0 && e->sb != NULL)
		s->vm->kill(e->sb);
	while (e->busy > 0)
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
	entry_free(s, e);
}

static int register_entry(struct lg_service *s, struct lg_entry *e, struct lg_err **err)
{
	pthread_mutex_lock(&s->lock);
	if (s->stopping || s->n_entries >= s->max_entries) {
		bool stopping = s->stopping;
		pthread_mutex_unlock(&s->lock);
		return lg_err_msg(err, stopping ? ESHUTDOWN : EAGAIN,
				  stopping ? "the service is shutting down"
					   : "the limit of %u sandboxes is reached (lost ones "
					     "included); destroy one first",
				  s->max_entries);
	}
	e->next = s->entries;
	s->entries = e;
	s->n_entries++;
	pthread_mutex_unlock(&s->lock);
	wake_watcher(s);
	return 0;
}

int lg_service_create(struct lg_service *s, const struct lg_create_req *req, struct lg_entry **out,
		      struct lg_err **err)
{
	const char *image = req->image != NULL ? req->image : s->default_image;
	unsigned cpus = req->cpus != 0 ? req->cpus : 1;
	uint64_t memory = req->memory_mib != 0 ? req->memory_mib : LG_DEFAULT_MEMORY_MIB;
	uint64_t disk = req->disk_mib != 0 ? req->disk_mib : LG_DEFAULT_DISK_MIB;
	const char *rid = req->request_id != NULL ? req->request_id : "-";
	struct lg_entry *e;
	struct lg_sandbox *sb = NULL;
	struct pool *p;
	uint64_t t0 = lg_now_ms();
	enum lg_spawn_path path = LG_PATH_BOOT;
	int r;

	e = xzalloc(sizeof(*e));
	memcpy(e->id, "sb-", 3);
	lg_random_hex(e->id + 3, 6);
	e->owner = req->owner;
	e->owner_name = xstrdup(req->owner_name != NULL ? req->owner_name : "api");
	e->image = xstrdup(image);
	e->cpus = cpus;
	e->memory_mib = memory;
	e->disk_mib = disk;
	e->idle_timeout_s = req->idle_timeout_s == LG_IDLE_NEVER ? 0
			    : req->idle_timeout_s != 0		 ? req->idle_timeout_s
								 : s->o.idle_timeout_s;
	e->front = req->front;
	e->on_close = req->on_close;
	e->on_free = req->on_free;
	e->on_lost = req->on_lost;
	pthread_mutex_init(&e->op_lock, NULL);

	/* A bad allowlist is the request's fault: found before a pooled VM is spent on it. */
	bool bad_net = false;
	if (req->net != NULL && req->net->allow != NULL) {
		struct lg_allowlist *al = NULL;
		r = lg_allowlist_parse(req->net->allow, &al, err);
		lg_allowlist_free(al);
		if (r < 0) {
			lg_err_wrap(err, "network allowlist");
			bad_net = true;
		}
	}

	pthread_mutex_lock(&s->lock);
	bool full = !bad_net && s->n_entries >= s->max_entries;
	p = !bad_net ? pool_for(s, image, cpus, memory, disk) : NULL;
	if (!full && p != NULL) {
		sb = pool_take(s, p);
		if (sb != NULL) {
			p->hits++;
			lg_metric_inc(p->m_hits);
		} else {
			p->misses++;
			lg_metric_inc(p->m_misses);
			p->last_miss_ms = lg_now_ms();
			if (p->target < p->spec.size * POOL_GROWTH &&
			    p->target < LG_POOL_MAX_SIZE) {
				p->target++;
				pthread_cond_signal(&s->refill);
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (bad_net)
		goto fail;
	if (full) {
		r = lg_err_msg(err, EAGAIN,
			       "the limit of %u sandboxes is reached (lost ones included); destroy "
			       "one first",
			       s->max_entries);
		goto fail;
	}

	if (sb != NULL) {
		/*
		 * Pooled VMs all booted alike: the claimer's own hostname,
		 * clock and a fresh RNG seed are applied now, before anyone
		 * can run a command in it.
		 */
		struct lg_err *aerr = NULL;
		path = LG_PATH_POOL;
		wake_watcher(s);
		if (s->vm->adopt != NULL && s->vm->adopt(sb, e->id, &aerr) < 0) {
			lg_warn("[%s] pool %s: a pooled sandbox cannot be adopted (%s): pool "
				"disabled; rebuild the image with `luminaguard image build`",
				rid, p->key, aerr->msg);
			lg_err_free(&aerr);
			s->vm->destroy(sb);
			sb = NULL;
			/* Its other VMs run the same agent: none of them can be handed out. */
			pthread_mutex_lock(&s->lock);
			p->disabled = true;
			struct lg_sandbox *rest;
			while ((rest = pool_take(s, p)) != NULL) {
				pthread_mutex_unlock(&s->lock);
				s->vm->destroy(rest);
				pthread_mutex_lock(&s->lock);
			}
			pthread_mutex_unlock(&s->lock);
			wake_watcher(s);
			path = LG_PATH_BOOT;
		} else {
			/* Its network, attached only now: the pool could not know it. */
			r = claim_net(s, sb, req->net, err);
			if (r < 0) {
				lg_warn("[%s] pool %s: %s; booting instead", rid, p->key,
					(*err)->msg);
				lg_err_free(err);
				sb = NULL;
				path = LG_PATH_BOOT;
			}
		}
	}
	if (sb == NULL) {
		struct lg_sandbox_opts o;
		struct shape *sh = NULL;

		vm_opts(s, image, cpus, memory, disk, &o);
		o.cancel_fd = req->cancel_fd;
		pthread_mutex_lock(&s->lock);
		sh = shape_get_locked(s, image, cpus, memory, disk);
		pthread_mutex_unlock(&s->lock);
		r = spawn(s, &o, sh, e->id, false, req->net, &sb, &path, err);
		/* The budget is full, but waiting VMs hold some of it: free one and retry. */
		if (r == -EAGAIN && pool_evict_one(s)) {
			lg_err_free(err);
			r = spawn(s, &o, sh, e->id, false, req->net, &sb, &path, err);
		}
		if (r < 0)
			goto fail;
	}
	e->sb = sb;
	e->path = path;
	e->spawn_ms = lg_now_ms() - t0;
	e->pid = s->vm->pid != NULL ? s->vm->pid(sb) : 0;
	e->created_ms = realtime_ms();
	e->created_mono = e->last_used_ms = lg_now_ms();
	lg_metric_observe(child1(s->m.spawn_seconds, lg_spawn_path_name(path)),
			  (double)e->spawn_ms / 1000.0);
	e->busy = 1;
	pthread_mutex_lock(&e->op_lock);
	r = register_entry(s, e, err);
	if (r < 0) {
		pthread_mutex_unlock(&e->op_lock);
		e->busy = 0;
		if (e->on_close != NULL)
			e->on_close(e->front);
		entry_free(s, e);
		return r;
	}
	lg_info("[%s] sandbox %s: %s %s in %llu ms (%s)", rid, e->id, e->image,
		lg_spawn_path_name(path), (unsigned long long)e->spawn_ms, e->owner_name);
	*out = e;
	return 0;
fail:
	if (e->on_close != NULL)
		e->on_close(e->front);
	if (e->on_free != NULL)
		e->on_free(e->front);
	pthread_mutex_destroy(&e->op_lock);
	free(e->owner_name);
	free(e->image);
	free(e);
	return r;
}

struct lg_entry *lg_service_get(struct lg_service *s, const char *id, const void *owner)
{
	struct lg_entry *e;

	pthread_mutex_lock(&s->lock);
	e = find_locked(s, id, owner);
	if (e != NULL)
		e->busy++;
	pthread_mutex_unlock(&s->lock);
	if (e == NULL)
		return NULL;
	pthread_mutex_lock(&e->op_lock);
	/* Destroyed while we queued for it: let the destroyer have it. */
	pthread_mutex_lock(&s->lock);
	bool doomed = e->doomed;
	pthread_mutex_unlock(&s->lock);
	if (doomed) {
		lg_service_put(s, e);
		return NULL;
	}
	return e;
}

void lg_service_put(struct lg_service *s, struct lg_entry *e)
{
	struct lg_sandbox *gone = NULL;

	pthread_mutex_unlock(&e->op_lock);
	pthread_mutex_lock(&s->lock);
	e->busy--;
	e->last_used_ms = lg_now_ms();
	/* The watcher marked it lost while we used it: its VM is ours to end now. */
	if (e->busy == 0 && e->lost != NULL && !e->doomed && e->sb != NULL) {
		gone = e->sb;
		e->sb = NULL;
	}
	pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	if (gone != NULL) {
		s->vm->destroy(gone);
		wake_watcher(s);
	}
}

const char *lg_entry_id(const struct lg_entry *e)
{
	return e->id;
}

struct lg_sandbox *lg_entry_sandbox(struct lg_entry *e)
{
	/*
	 * e->sb only becomes NULL under op_lock (held by the caller) or when
	 * busy is 0; e->lost can be set by the watcher at any time, and then
	 * no new request may start.
	 */
	bool lost = __atomic_load_n(&e->lost, __ATOMIC_ACQUIRE) != NULL;
	return lost ? NULL : e->sb;
}

void *lg_entry_front(struct lg_entry *e)
{
	return e->front;
}

enum lg_spawn_path lg_entry_path(const struct lg_entry *e)
{
	return e->path;
}

uint64_t lg_entry_spawn_ms(const struct lg_entry *e)
{
	return e->spawn_ms;
}

void lg_entry_mark_dirty(struct lg_service *s, struct lg_entry *e)
{
	pthread_mutex_lock(&s->lock);
	e->dirty = true;
	pthread_mutex_unlock(&s->lock);
}

/* Sets the reason (first wins) and counts the exit.  Under lock; false if already lost. */
static bool set_lost_locked(struct lg_service *s, struct lg_entry *e, const char *why,
			    const char *reason)
{
	if (e->lost != NULL)
		return false;
	__atomic_store_n(&e->lost, xstrdup(why), __ATOMIC_RELEASE);
	lg_metric_inc(child1(s->m.vmm_exits, reason));
	return true;
}

void lg_entry_mark_lost(struct lg_service *s, struct lg_entry *e, const char *why)
{
	struct lg_sandbox *gone;

	pthread_mutex_lock(&s->lock);
	bool first = set_lost_locked(s, e, why, "lost");
	/* The caller holds e, and with it the only reference in use. */
	gone = e->busy == 1 ? e->sb : NULL;
	if (gone != NULL)
		e->sb = NULL;
	pthread_mutex_unlock(&s->lock);
	if (first) {
		lg_warn("sandbox %s is lost: %s", e->id, why);
		if (e->on_lost != NULL)
			e->on_lost(e->front, e->id, why);
	}
	if (gone != NULL) {
		s->vm->destroy(gone);
		wake_watcher(s);
	}
}

char *lg_entry_lost(struct lg_service *s, struct lg_entry *e)
{
	char *why;

	pthread_mutex_lock(&s->lock);
	why = e->lost != NULL ? xstrdup(e->lost) : NULL;
	pthread_mutex_unlock(&s->lock);
	return why;
}

int lg_entry_exec(struct lg_service *s, struct lg_entry *e, const struct lg_exec_opts *o,
		  struct lg_exec_result *res, struct lg_err **err)
{
	struct lg_sandbox *sb = lg_entry_sandbox(e);
	uint64_t t0 = lg_now_ms();
	int r;

	if (sb == NULL) {
		cleanup_free char *why = lg_entry_lost(s, e);
		return lg_err_msg(err, EPIPE, "sandbox %s is lost: %s", e->id,
				  why != NULL ? why : "its VM is gone");
	}
	lg_entry_mark_dirty(s, e);
	/*
	 * The front end's request id goes into the guest with the command, so
	 * that what it logs can be tied to the request the service logged.
	 * Last: a later entry wins in the agent, and this one is the truth.
	 */
	struct lg_exec_opts eo = *o;
	cleanup_free char **env = NULL;
	cleanup_free char *rid_var = NULL;
	if (o->request_id != NULL && o->request_id[0] != '\0') {
		size_t n = 0;
		while (o->env != NULL && o->env[n] != NULL)
			n++;
		env = xmalloc((n + 2) * sizeof(*env));
		if (n > 0)
			memcpy(env, o->env, n * sizeof(*env));
		rid_var = xasprintf("LUMINAGUARD_REQUEST_ID=%s", o->request_id);
		env[n] = rid_var;
		env[n + 1] = NULL;
		eo.env = env;
	}
	r = lg_sandbox_exec(sb, &eo, res, err);
	lg_metric_observe(lg_metric_child(s->m.exec_seconds, NULL),
			  (double)(lg_now_ms() - t0) / 1000.0);
	/*
	 * A failed request whose agent no longer answers means the VM is gone
	 * (powered off, crashed, killed): the entry is lost, with the reason.
	 */
	if (r < 0 && r != -ECANCELED && lg_agent_ping(lg_sandbox_agent(sb), NULL) < 0) {
		cleanup_free char *why = xasprintf(
		    "its guest stopped answering (it powered itself off, crashed or hung): %s",
		    (*err)->msg);
		lg_entry_mark_lost(s, e, why);
	}
	return r;
}

int lg_service_facts(struct lg_service *s, const char *id, const void *owner, bool *dirty,
		     bool *lost)
{
	struct lg_entry *e;

	pthread_mutex_lock(&s->lock);
	e = find_locked(s, id, owner);
	if (e != NULL) {
		*dirty = e->dirty;
		*lost = e->lost != NULL;
	}
	pthread_mutex_unlock(&s->lock);
	return e != NULL ? 0 : -1;
}

int lg_service_destroy(struct lg_service *s, const char *id, const void *owner)
{
	struct lg_entry *e;

	pthread_mutex_lock(&s->lock);
	e = find_locked(s, id, owner);
	if (e != NULL) {
		e->doomed = true;
		unlink_locked(s, e);
	}
	pthread_mutex_unlock(&s->lock);
	if (e == NULL)
		return -ENOENT;
	entry_destroy(s, e);
	return 0;
}

void lg_service_destroy_owned(struct lg_service *s, const void *owner)
{
	for (;;) {
		struct lg_entry *e = NULL;

		pthread_mutex_lock(&s->lock);
		for (struct lg_entry *it = s->entries; it != NULL; it = it->next)
			if (!it->doomed && (owner == NULL || it->owner == owner)) {
				e = it;
				break;
			}
		if (e != NULL) {
			e->doomed = true;
			unlink_locked(s, e);
		}
		pthread_mutex_unlock(&s->lock);
		if (e == NULL)
			return;
		entry_destroy(s, e);
	}
}

void lg_service_kill_busy(struct lg_service *s, const void *owner)
{
	pthread_mutex_lock(&s->lock);
	for (struct lg_entry *e = s->entries; e != NULL; e = e->next)
		if (e->owner == owner && e->busy > 0 && e->sb != NULL)
			s->vm->kill(e->sb);
	pthread_mutex_unlock(&s->lock);
}

int lg_service_kill(struct lg_service *s, const char *id, const void *owner)
{
	struct lg_entry *e;
	int r = -ENOENT;

	pthread_mutex_lock(&s->lock);
	e = find_locked(s, id, owner);
	if (e != NULL)
		r = e->sb != NULL ? s->vm->kill(e->sb) : -ESRCH;
	pthread_mutex_unlock(&s->lock);
	return r;
}

static json_t *describe_locked(const struct lg_entry *e, uint64_t now)
{
	json_t *o = json_pack(
	    "{s:s, s:s, s:s, s:i, s:I, s:I, s:s, s:I, s:I, s:I, s:b, s:s, s:I, s:i}", "id", e->id,
	    "state",
	    e->lost != NULL ? "lost"
	    : e->busy > 0   ? "busy"
			    : "ready",
	    "image", e->image, "cpus", (int)e->cpus, "memory_mib", (json_int_t)e->memory_mib,
	    "disk_mib", (json_int_t)e->disk_mib, "owner", e->owner_name, "created_ms",
	    (json_int_t)e->created_ms, "age_s", (json_int_t)((now - e->created_mono) / 1000),
	    "idle_s", (json_int_t)((now - e->last_used_ms) / 1000), "dirty", e->dirty, "spawn_path",
	    lg_spawn_path_name(e->path), "spawn_ms", (json_int_t)e->spawn_ms, "pid",
	    (int)(e->sb != NULL ? e->pid : 0));
	if (e->lost != NULL)
		json_object_set_new(o, "lost_reason", json_string(e->lost));
	return o;
}

json_t *lg_service_list(struct lg_service *s, const void *owner)
{
	json_t *arr = json_array();
	uint64_t now;

	pthread_mutex_lock(&s->lock);
	now = lg_now_ms(); /* under the lock: no entry is newer than it */
	for (struct lg_entry *e = s->entries; e != NULL; e = e->next)
		if (!e->doomed && (owner == NULL || e->owner == owner))
			json_array_append_new(arr, describe_locked(e, now));
	pthread_mutex_unlock(&s->lock);
	return arr;
}

json_t *lg_service_describe(struct lg_service *s, const char *id, const void *owner)
{
	struct lg_entry *e;
	json_t *o = NULL;

	pthread_mutex_lock(&s->lock);
	e = find_locked(s, id, owner);
	if (e != NULL)
		o = describe_locked(e, lg_now_ms());
	pthread_mutex_unlock(&s->lock);
	return o;
}

/* ---- the watcher: dead VMMs and idle entries ---- */

/*
 * Why a VMM ended, from its pidfd without reaping it (WNOWAIT: the backend
 * reaps it in destroy).  *label is the vmm_exits reason.
 */
static char *exit_reason(int pidfd, const char **label)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (syscall(SYS_waitid, P_PIDFD, pidfd, &si, WEXITED | WNOHANG | WNOWAIT, NULL) < 0 ||
	    si.si_pid == 0) {
		*label = "unknown";
		return xstrdup("its VMM exited");
	}
	if (si.si_code == CLD_EXITED) {
		*label = "exit";
		return xasprintf("its VMM exited with status %d (the guest powered off or the "
				 "VMM failed)",
				 si.si_status);
	}
	switch (si.si_status) {
	case SIGKILL:
		*label = "killed";
		return xstrdup("its VMM was killed by SIGKILL (the OOM killer, a memory limit, "
			       "or a kill -9)");
	case SIGSYS:
		*label = "seccomp";
		return xstrdup("its VMM was killed by seccomp (SIGSYS: a system call outside its "
			       "filter)");
	default:
		*label = "crash";
		return xasprintf("its VMM died of signal %d (%s)", si.si_status,
				 strsignal(si.si_status));
	}
}

struct watch {
	int fd;
	char id[ENTRY_ID_LEN]; /* an entry's, or "" for a pooled VM */
	struct lg_sandbox *pooled;
};

/* Drops a pooled VM whose VMM died; the refill thread replaces it. */
static void pool_drop_dead(struct lg_service *s, struct lg_sandbox *dead)
{
	bool found = false;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n_pools && !found; i++) {
		struct pool *p = &s->pools[i];
		for (struct pooled **pp = &p->ready; *pp != NULL; pp = &(*pp)->next) {
			struct pooled *pd = *pp;
			if (pd->sb != dead)
				continue;
			/* Still ours, so its exit fd is still open: check it really ended. */
			struct pollfd pf = {.fd = s->vm->exit_fd(dead), .events = POLLIN};
			if (poll(&pf, 1, 0) <= 0)
				break;
			*pp = pd->next;
			p->n_ready--;
			pool_gauge(p);
			free(pd);
			found = true;
			pthread_cond_signal(&s->refill);
			const char *label;
			cleanup_free char *why = exit_reason(pf.fd, &label);
			lg_metric_inc(child1(s->m.vmm_exits, label));
			lg_warn("pool %s: a pooled sandbox died: %s", p->key, why);
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (found)
		s->vm->destroy(dead);
}

static void entry_dead(struct lg_service *s, const char *id, int fd)
{
	struct lg_sandbox *gone = NULL;
	struct lg_entry *e;
	char *why = NULL;

	pthread_mutex_lock(&s->lock);
	e = find_locked(s, id, NULL);
	/* Found and with its VM: the fd is that VM's and still open. */
	if (e != NULL && e->sb != NULL && e->lost == NULL && s->vm->exit_fd(e->sb) == fd) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 0) > 0) {
			const char *label;
			why = exit_reason(fd, &label);
			set_lost_locked(s, e, why, label);
			/* Held while the front end hears of it, as a request would hold it. */
			e->busy++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (why == NULL)
		return;
	lg_warn("sandbox %s is lost: %s", e->id, why);
	if (e->on_lost != NULL)
		e->on_lost(e->front, e->id, why);
	free(why);
	pthread_mutex_lock(&s->lock);
	e->busy--;
	if (e->busy == 0 && !e->doomed && e->sb != NULL) {
		gone = e->sb;
		e->sb = NULL;
	}
	pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	if (gone != NULL)
		s->vm->destroy(gone);
}

/* A pool grown by a burst shrinks back, one VM per o.pool_decay_ms without a miss. */
static void pool_decay(struct lg_service *s)
{
	for (size_t i = 0; i < s->n_pools; i++) {
		struct pool *p = &s->pools[i];
		struct lg_sandbox *extra = NULL;

		pthread_mutex_lock(&s->lock);
		uint64_t now = lg_now_ms();
		if (p->target > p->spec.size && now - p->last_miss_ms >= s->o.pool_decay_ms) {
			p->target--;
			p->last_miss_ms = now;
			if (p->n_ready > p->target)
				extra = pool_take(s, p);
		}
		pthread_mutex_unlock(&s->lock);
		if (extra != NULL)
			s->vm->destroy(extra);
	}
}

static void reap_idle(struct lg_service *s)
{
	for (;;) {
		struct lg_entry *victim = NULL;

		pthread_mutex_lock(&s->lock);
		/*
		 * Read under the lock, after the previous victim's destroy: an
		 * entry created meanwhile has a later last_used_ms than a clock
		 * read before it, and the subtraction would wrap.
		 */
		uint64_t now = lg_now_ms();
		for (struct lg_entry *e = s->entries; e != NULL; e = e->next) {
			if (e->doomed || e->busy > 0 || e->idle_timeout_s == 0)
				continue;
			if (now >= e->last_used_ms &&
			    now - e->last_used_ms >= (uint64_t)e->idle_timeout_s * 1000u) {
				victim = e;
				victim->doomed = true;
				unlink_locked(s, victim);
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (victim == NULL)
			return;
		lg_info("sandbox %s idle for %u s: destroyed", victim->id, victim->idle_timeout_s);
		entry_destroy(s, victim);
	}
}

static void *watch_main(void *arg)
{
	struct lg_service *s = arg;
	struct watch *w = NULL;
	struct pollfd *pf = NULL;
	size_t cap = 0;
	uint64_t last_reap = lg_now_ms();

	for (;;) {
		size_t n = 0;

		pthread_mutex_lock(&s->lock);
		if (s->stopping) {
			pthread_mutex_unlock(&s->lock);
			break;
		}
		size_t want = 1 + s->n_entries;
		for (size_t i = 0; i < s->n_pools; i++)
			want += s->pools[i].n_ready;
		if (want > cap) {
			cap = want * 2;
			w = xrealloc(w, cap * sizeof(*w));
			pf = xrealloc(pf, cap * sizeof(*pf));
		}
		w[n++] = (struct watch){.fd = s->wake[0]};
		for (struct lg_entry *e = s->entries; e != NULL; e = e->next) {
			int fd;
			if (e->doomed || e->sb == NULL || e->lost != NULL ||
			    (fd = s->vm->exit_fd(e->sb)) < 0)
				continue;
			w[n] = (struct watch){.fd = fd};
			memcpy(w[n].id, e->id, sizeof(e->id));
			n++;
		}
		for (size_t i = 0; i < s->n_pools; i++)
			for (struct pooled *pd = s->pools[i].ready; pd != NULL; pd = pd->next) {
				int fd = s->vm->exit_fd(pd->sb);
				if (fd >= 0)
					w[n++] = (struct watch){.fd = fd, .pooled = pd->sb};
			}
		pthread_mutex_unlock(&s->lock);

		/*
		 * An fd in this set may be closed by a destroy while we poll:
		 * poll keeps the file it started with, and every hit is checked
		 * again under the lock against the live entry before acting.
		 */
		for (size_t i = 0; i < n; i++)
			pf[i] = (struct pollfd){.fd = w[i].fd, .events = POLLIN};
		int r = poll(pf, n, WATCH_PERIOD_MS);
		if (r > 0) {
			if (pf[0].revents != 0) {
				char buf[64];
				while (read(s->wake[0], buf, sizeof(buf)) > 0) {
				}
			}
			for (size_t i = 1; i < n; i++) {
				if (pf[i].revents == 0)
					continue;
				if (w[i].pooled != NULL)
					pool_drop_dead(s, w[i].pooled);
				else
					entry_dead(s, w[i].id, w[i].fd);
			}
		}
		if (lg_now_ms() - last_reap >= 1000) {
			last_reap = lg_now_ms();
			reap_idle(s);
			pool_decay(s);
		}
	}
	free(w);
	free(pf);
	return NULL;
}

/* ---- metrics ---- */

struct lg_metrics *lg_service_metrics(struct lg_service *s)
{
	return s->metrics;
}

const struct lg_metrics_standard *lg_service_std(struct lg_service *s)
{
	return &s->m;
}

/*
 * The sandboxes gauge is counted when scraped, from the one list that
 * knows each entry's state, so it can never drift from it.
 */
char *lg_service_metrics_render(struct lg_service *s)
{
	unsigned ready = 0, busy = 0, lost = 0, pooled = 0;

	pthread_mutex_lock(&s->lock);
	for (struct lg_entry *e = s->entries; e != NULL; e = e->next) {
		if (e->doomed)
			continue;
		if (e->lost != NULL)
			lost++;
		else if (e->busy > 0)
			busy++;
		else
			ready++;
	}
	for (size_t i = 0; i < s->n_pools; i++)
		pooled += s->pools[i].n_ready;
	pthread_mutex_unlock(&s->lock);
	lg_metric_gauge_set(child1(s->m.sandboxes, "ready"), ready);
	lg_metric_gauge_set(child1(s->m.sandboxes, "busy"), busy);
	lg_metric_gauge_set(child1(s->m.sandboxes, "lost"), lost);
	lg_metric_gauge_set(child1(s->m.sandboxes, "pooled"), pooled);
	return lg_metrics_render(s->metrics);
}

/* ---- life ---- */

int lg_service_new(const struct lg_service_opts *o, struct lg_service **out, struct lg_err **err)
{
	struct lg_service *s;
	struct lg_admission_usage u;

	if (o->n_pools > LG_POOL_MAX)
		return lg_err_msg(err, EINVAL, "at most %u pools", LG_POOL_MAX);
	s = xzalloc(sizeof(*s));
	s->o = *o;
	if (s->o.pool_decay_ms == 0)
		s->o.pool_decay_ms = POOL_DECAY_MS;
	s->o.pools = NULL;
	s->vm = o->vm_ops != NULL ? o->vm_ops : &real_vm_ops;
	s->default_image = o->default_image != NULL ? o->default_image : "default";
	s->wake[0] = s->wake[1] = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->idle, NULL);
	lg_cond_init_mono(&s->refill);
	s->admission = lg_admission_new(&o->limits);
	lg_admission_usage(s->admission, &u);
	s->max_entries = u.limit.max_vms;
	s->metrics = lg_metrics_new();
	if (lg_metrics_register_standard(s->metrics, &s->m, err) < 0)
		goto fail;
	for (size_t i = 0; i < o->n_pools; i++) {
		struct pool *p = &s->pools[i];
		p->spec = o->pools[i];
		if (p->spec.cpus == 0)
			p->spec.cpus = 1;
		if (p->spec.memory_mib == 0)
			p->spec.memory_mib = LG_DEFAULT_MEMORY_MIB;
		for (size_t j = 0; j < i; j++)
			if (pool_for(s, p->spec.image, p->spec.cpus, p->spec.memory_mib,
				     LG_DEFAULT_DISK_MIB) == &s->pools[j]) {
				lg_err_msg(err, EINVAL, "--pool %s given twice", p->spec.image);
				goto fail;
			}
		snprintf(p->key, sizeof(p->key), "%s:%u:%llu", p->spec.image, p->spec.cpus,
			 (unsigned long long)p->spec.memory_mib);
		p->m_ready = child1(s->m.pool_ready, p->key);
		p->m_hits = child1(s->m.pool_hits, p->key);
		p->m_misses = child1(s->m.pool_misses, p->key);
		p->target = p->spec.size;
		p->shape = shape_get_locked(s, p->spec.image, p->spec.cpus, p->spec.memory_mib,
					    LG_DEFAULT_DISK_MIB);
		/* Made before the pool's first VM, so that its refills restore. */
		if (p->shape != NULL)
			p->shape->wanted = true;
		s->n_pools++;
	}
	if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		lg_err_sys(err, "pipe");
		goto fail;
	}
	if (pthread_create(&s->watcher, NULL, watch_main, s) != 0) {
		lg_err_msg(err, EAGAIN, "cannot start the watcher thread");
		goto fail;
	}
	s->watcher_started = true;
	/* It fills the pools and makes the snapshots that creates ask for. */
	if (s->n_pools > 0 || (s->o.snapshots && s->vm->snapshot != NULL)) {
		if (pthread_create(&s->refiller, NULL, refill_main, s) != 0) {
			lg_err_msg(err, EAGAIN, "cannot start the pool thread");
			goto fail;
		}
		s->refiller_started = true;
	}
	*out = s;
	return 0;
fail:
	lg_service_free(s);
	return -EINVAL;
}

void lg_service_free(struct lg_service *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_cond_broadcast(&s->refill);
	pthread_mutex_unlock(&s->lock);
	if (s->wake[1] >= 0)
		wake_watcher(s);
	/* The refill thread may be in a boot: it ends when that does. */
	if (s->refiller_started)
		pthread_join(s->refiller, NULL);
	if (s->watcher_started)
		pthread_join(s->watcher, NULL);
	lg_service_destroy_owned(s, NULL);
	for (size_t i = 0; i < s->n_pools; i++) {
		struct pool *p = &s->pools[i];
		struct lg_sandbox *sb;
		while ((sb = pool_take(s, p)) != NULL)
			s->vm->destroy(sb);
	}
	while (s->shapes != NULL) {
		struct shape *sh = s->shapes;
		s->shapes = sh->next;
		free(sh->dir);
		free(sh);
	}
	if (s->wake[0] >= 0) {
		close(s->wake[0]);
		close(s->wake[1]);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->idle);
	pthread_cond_destroy(&s->refill);
	lg_admission_free(s->admission); /* every VM is destroyed by now */
	lg_metrics_free(s->metrics);
	free(s);
}
