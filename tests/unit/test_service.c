/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox service against a fake VM layer (a unit test: no VMs): the
 * registry and its owners, admission counting pooled VMs, pool hits,
 * misses, refill and eviction, claims from 8 threads at once, the watcher
 * noticing a dead VMM, and the idle reaper.  The real VMs are covered by
 * tests/integration/test_serve.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "service/service.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * A fake VM: its "VMM" is the write end of a pipe; closing it is the VMM
 * dying.  The service sees only an opaque struct lg_sandbox pointer, which
 * it passes back to these ops.
 */
struct fake {
	int exit_pipe[2];
	struct lg_admission *adm;
	struct lg_admission_cost cost;
	char hostname[64];
	char image[64];
	uint64_t memory_mib;
	bool restored;
	bool net_port;	 /* started with the bare network port */
	bool net_set;	 /* lg_sandbox_set_net ran */
	char allow[64];	 /* the allowlist it got, at create or set_net */
	bool net_closed; /* set_net(NULL): the port closed */
};

static struct fake *fake_of(struct lg_sandbox *sb)
{
	return (struct fake *)sb;
}

static atomic_int live_vms, created_vms, adopt_calls, create_attempts;
static atomic_int fail_adopt;
static atomic_int snapshot_calls, stale_snapshots;
static atomic_int create_delay_ms;
/* The live fakes, to find a pooled one from outside. */
static pthread_mutex_t fakes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fake *fakes[256];

static int fake_create(const struct lg_sandbox_opts *o, struct lg_sandbox **out,
		       struct lg_err **err)
{
	struct fake *f;

	atomic_fetch_add(&create_attempts, 1);
	if (strcmp(o->image, "missing") == 0)
		return lg_err_set(err, ENOENT, "image missing: not found");
	if (o->snapshot != NULL && stale_snapshots)
		return lg_err_set(err, ESTALE, "snapshot %s: stale", o->snapshot);
	if (o->net != NULL && o->net_port)
		return lg_err_set(err, EINVAL, "net and net_port at once");
	f = xzalloc(sizeof(*f));
	f->net_port = o->net_port;
	if (o->net != NULL)
		snprintf(f->allow, sizeof(f->allow), "%s", o->net->allow);
	/* As lg_sandbox_create: a restore with neither closes its snapshot's port. */
	f->net_closed = o->snapshot != NULL && o->net == NULL && !o->net_port;
	f->restored = o->snapshot != NULL;
	if (o->hostname != NULL)
		snprintf(f->hostname, sizeof(f->hostname), "%s", o->hostname);
	f->cost = (struct lg_admission_cost){.vcpus = o->cpus, .memory_mib = o->memory_mib};
	if (o->admission != NULL && lg_admission_reserve(o->admission, &f->cost, err) < 0) {
		free(f);
		return -EAGAIN;
	}
	f->adm = o->admission;
	if (pipe2(f->exit_pipe, O_CLOEXEC) < 0)
		abort();
	snprintf(f->image, sizeof(f->image), "%s", o->image);
	f->memory_mib = o->memory_mib;
	if (create_delay_ms > 0)
		usleep((useconds_t)create_delay_ms * 1000u);
	atomic_fetch_add(&live_vms, 1);
	atomic_fetch_add(&created_vms, 1);
	pthread_mutex_lock(&fakes_lock);
	for (size_t i = 0; i < ARRAY_SIZE(fakes); i++)
		if (fakes[i] == NULL) {
			fakes[i] = f;
			break;
		}
	pthread_mutex_unlock(&fakes_lock);
	*out = (struct lg_sandbox *)f;
	return 0;
}

static void fake_destroy(struct lg_sandbox *sb)
{
	struct fake *f = fake_of(sb);

	if (sb == NULL)
		return;
	pthread_mutex_lock(&fakes_lock);
	for (size_t i = 0; i < ARRAY_SIZE(fakes); i++)
		if (fakes[i] == f)
			fakes[i] = NULL;
	pthread_mutex_unlock(&fakes_lock);
	close(f->exit_pipe[0]);
	if (f->exit_pipe[1] >= 0)
		close(f->exit_pipe[1]);
	if (f->adm != NULL)
		lg_admission_release(f->adm, &f->cost);
	atomic_fetch_sub(&live_vms, 1);
	free(f);
}

static int fake_kill(struct lg_sandbox *sb)
{
	struct fake *f = fake_of(sb);
	int fd = __atomic_exchange_n(&f->exit_pipe[1], -1, __ATOMIC_ACQ_REL);

	if (fd < 0)
		return -ESRCH;
	close(fd);
	return 0;
}

static int fake_exit_fd(const struct lg_sandbox *sb)
{
	return ((const struct fake *)sb)->exit_pipe[0];
}

static int fake_adopt(struct lg_sandbox *sb, const char *hostname, struct lg_err **err)
{
	struct fake *f = fake_of(sb);

	atomic_fetch_add(&adopt_calls, 1);
	if (fail_adopt)
		return lg_err_set(err, EPROTO, "the agent is too old to adopt");
	snprintf(f->hostname, sizeof(f->hostname), "%s", hostname);
	return 0;
}

static atomic_int warm_calls, fail_warm;

static int fake_warm(struct lg_sandbox *sb, struct lg_err **err)
{
	atomic_fetch_add(&warm_calls, 1);
	return fail_warm ? lg_err_set(err, EIO, "the guest did not run true") : 0;
}

static int fake_snapshot(const struct lg_sandbox_opts *o, char **dir, struct lg_err **err)
{
	atomic_fetch_add(&snapshot_calls, 1);
	if (strcmp(o->image, "nosnap") == 0)
		return lg_err_set(err, EIO, "cannot save");
	*dir = xasprintf("/fake/snapshots/%s-%u-%llu", o->image, o->cpus,
			 (unsigned long long)o->memory_mib);
	return 0;
}

static int fake_set_net(struct lg_sandbox *sb, const struct lg_sandbox_net *net,
			struct lg_err **err)
{
	struct fake *f = fake_of(sb);

	if (!f->net_port || f->net_set)
		return lg_err_set(err, EINVAL, "no bare network port to attach to");
	f->net_set = true;
	if (net == NULL)
		f->net_closed = true;
	else
		snprintf(f->allow, sizeof(f->allow), "%s", net->allow);
	return 0;
}

static const struct lg_service_vm_ops fake_ops = {
    .set_net = fake_set_net,
    .snapshot = fake_snapshot,
    .warm = fake_warm,
    .create = fake_create,
    .destroy = fake_destroy,
    .kill = fake_kill,
    .exit_fd = fake_exit_fd,
    .adopt = fake_adopt,
};

static bool snapshots_on;
static unsigned decay_ms; /* the services' pool_decay_ms (0: the default) */

static struct lg_service *service(unsigned max_vms, const char *const *pools, size_t n_pools,
				  unsigned idle_s)
{
	struct lg_pool_spec specs[LG_POOL_MAX];
	struct lg_service *s = NULL;
	struct lg_err *err = NULL;

	for (size_t i = 0; i < n_pools; i++)
		if (lg_pool_spec_parse(pools[i], &specs[i], &err) < 0)
			fail_msg("%s", err->msg);
	struct lg_service_opts o = {
	    .default_image = "img",
	    .limits = {.max_vms = max_vms, .max_vcpus = 256, .max_memory_mib = 1u << 20},
	    .idle_timeout_s = idle_s,
	    .pools = specs,
	    .n_pools = n_pools,
	    .vm_ops = &fake_ops,
	    .snapshots = snapshots_on,
	    .pool_decay_ms = decay_ms,
	};
	if (lg_service_new(&o, &s, &err) < 0)
		fail_msg("%s", err->msg);
	return s;
}

static struct lg_entry *create(struct lg_service *s, const char *image, uint64_t mem,
			       const void *owner, enum lg_spawn_path *path)
{
	struct lg_entry *e = NULL;
	struct lg_err *err = NULL;
	struct lg_create_req req = {.image = image,
				    .memory_mib = mem,
				    .owner = owner,
				    .owner_name = "test",
				    .cancel_fd = -1};

	if (lg_service_create(s, &req, &e, &err) < 0)
		fail_msg("create: %s", err->msg);
	if (path != NULL)
		*path = lg_entry_path(e);
	return e;
}

static int pool_field(struct lg_service *s, size_t i, const char *key)
{
	json_t *p = lg_service_pools(s);
	json_t *v0 = json_object_get(json_array_get(p, i), key);
	int v = json_is_boolean(v0) ? json_is_true(v0) : (int)json_integer_value(v0);
	json_decref(p);
	return v;
}

static void wait_pool_ready(struct lg_service *s, size_t i, int n)
{
	for (int t = 0; t < 500; t++) {
		if (pool_field(s, i, "ready") == n)
			return;
		usleep(10000);
	}
	fail_msg("pool %zu never had %d ready (has %d)", i, n, pool_field(s, i, "ready"));
}

static void test_pool_spec(void **state)
{
	struct lg_pool_spec p;
	struct lg_err *err = NULL;
	static const char *const bad[] = {
	    "default",
	    "=2",
	    "default=0",
	    "default=65",
	    "default=x",
	    "a:1=2",
	    "a:0:256=1",
	    "a:1:8=1",
	    "a:1:256:3=1",
	    "a b=1",
	    "a/../b=1",
	    "a:1:256=",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1",
	};

	assert_int_equal(lg_pool_spec_parse("default=2", &p, &err), 0);
	assert_string_equal(p.image, "default");
	assert_int_equal(p.cpus, 1);
	assert_int_equal(p.memory_mib, LG_DEFAULT_MEMORY_MIB);
	assert_int_equal(p.size, 2);
	assert_int_equal(lg_pool_spec_parse("py-3.11:2:512=8", &p, &err), 0);
	assert_string_equal(p.image, "py-3.11");
	assert_int_equal(p.cpus, 2);
	assert_int_equal(p.memory_mib, 512);
	assert_int_equal(p.size, 8);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(lg_pool_spec_parse(bad[i], &p, &err), -EINVAL);
		assert_non_null(err);
		assert_null(strchr(err->msg, '\n'));
		lg_err_free(&err);
	}
}

static void test_registry_and_owners(void **state)
{
	struct lg_service *s = service(8, NULL, 0, 0);
	int a, b;
	struct lg_entry *e1 = create(s, NULL, 0, &a, NULL);
	struct lg_entry *e2 = create(s, "other", 0, &b, NULL);
	char id1[32], id2[32];
	json_t *l;
	bool dirty, lost;

	snprintf(id1, sizeof(id1), "%s", lg_entry_id(e1));
	snprintf(id2, sizeof(id2), "%s", lg_entry_id(e2));
	assert_int_equal(strlen(id1), 15);
	assert_memory_equal(id1, "sb-", 3);
	assert_string_not_equal(id1, id2);
	assert_int_equal(lg_entry_path(e1), LG_PATH_BOOT);
	lg_service_put(s, e1);
	lg_service_put(s, e2);

	/* An owner sees its own; NULL (the API) sees all. */
	assert_null(lg_service_get(s, id1, &b));
	e1 = lg_service_get(s, id1, &a);
	assert_non_null(e1);
	lg_service_put(s, e1);
	e1 = lg_service_get(s, id1, NULL);
	assert_non_null(e1);
	lg_service_put(s, e1);
	l = lg_service_list(s, &a);
	assert_int_equal(json_array_size(l), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "image")),
			    "img");
	json_decref(l);
	l = lg_service_list(s, NULL);
	assert_int_equal(json_array_size(l), 2);
	json_decref(l);

	assert_int_equal(lg_service_facts(s, id1, &a, &dirty, &lost), 0);
	assert_false(dirty);
	assert_false(lost);
	assert_int_equal(lg_service_facts(s, id1, &b, &dirty, &lost), -1);
	assert_int_equal(lg_service_destroy(s, id1, &b), -ENOENT);
	assert_int_equal(lg_service_destroy(s, id1, &a), 0);
	assert_int_equal(lg_service_destroy(s, id1, &a), -ENOENT);
	assert_null(lg_service_describe(s, id1, NULL));
	lg_service_destroy_owned(s, &b);
	l = lg_service_list(s, NULL);
	assert_int_equal(json_array_size(l), 0);
	json_decref(l);
	lg_service_free(s);
	assert_int_equal(live_vms, 0);
}

static void test_admission_counts_pool(void **state)
{
	const char *pools[] = {"img=2"};
	struct lg_service *s = service(3, pools, 1, 0);
	struct lg_entry *e1, *e2, *e3;
	struct lg_entry *x = NULL;
	struct lg_err *err = NULL;
	struct lg_create_req req = {.image = "other", .cancel_fd = -1};
	enum lg_spawn_path path;

	wait_pool_ready(s, 0, 2);
	/* Budget 3: two pooled and one of another image.  A fourth evicts a pooled one. */
	e1 = create(s, "other", 0, NULL, &path);
	assert_int_equal(path, LG_PATH_BOOT);
	e2 = create(s, "other", 0, NULL, &path);
	assert_int_equal(pool_field(s, 0, "ready"), 1); /* evicted for it */
	e3 = create(s, "other", 0, NULL, &path);
	assert_int_equal(pool_field(s, 0, "ready"), 0);
	/* Now all three are held by entries: over the budget, nothing to evict. */
	assert_int_equal(lg_service_create(s, &req, &x, &err), -EAGAIN);
	assert_null(x);
	assert_non_null(err);
	lg_err_free(&err);
	assert_int_equal(live_vms, 3);
	lg_service_put(s, e1);
	lg_service_put(s, e2);
	lg_service_put(s, e3);
	lg_service_free(s);
	assert_int_equal(live_vms, 0);
}

static void test_pool_hit_miss_refill(void **state)
{
	const char *pools[] = {"img=2", "img:2:512=1"};
	struct lg_service *s;
	enum lg_spawn_path path;
	struct lg_entry *e;
	char *metrics;

	warm_calls = 0; /* before the refill thread starts */
	s = service(16, pools, 2, 0);
	wait_pool_ready(s, 0, 2);
	wait_pool_ready(s, 1, 1);
	/* Each pooled VM ran a first command before it waited: the claimer's is not a cold one. */
	assert_int_equal(warm_calls, 3);
	adopt_calls = 0;
	e = create(s, NULL, 0, NULL, &path);
	assert_int_equal(path, LG_PATH_POOL);
	/* Adopted with its own id as hostname before anyone saw it. */
	assert_int_equal(adopt_calls, 1);
	assert_string_equal(fake_of(lg_entry_sandbox(e))->hostname, lg_entry_id(e));
	lg_service_put(s, e);
	assert_int_equal(pool_field(s, 0, "hits"), 1);
	wait_pool_ready(s, 0, 2); /* refilled in the background */

	/* Another shape: a miss of no pool, a boot. */
	e = create(s, NULL, 1024, NULL, &path);
	assert_int_equal(path, LG_PATH_BOOT);
	lg_service_put(s, e);
	assert_int_equal(pool_field(s, 0, "misses"), 0);

	/* Drain pool 0 faster than it refills: the third is a miss. */
	create_delay_ms = 300;
	struct lg_entry *a = create(s, "img", 0, NULL, NULL);
	struct lg_entry *b = create(s, "img", 0, NULL, NULL);
	struct lg_entry *c = create(s, "img", 0, NULL, &path);
	assert_int_equal(path, LG_PATH_BOOT);
	assert_int_equal(pool_field(s, 0, "misses"), 1);
	create_delay_ms = 0;
	/* A miss grows the pool by one, so that the next burst of this size finds it ready. */
	assert_int_equal(pool_field(s, 0, "target"), 3);
	wait_pool_ready(s, 0, 3);
	lg_service_put(s, a);
	lg_service_put(s, b);
	lg_service_put(s, c);

	metrics = lg_service_metrics_render(s);
	assert_non_null(strstr(metrics, "luminaguard_pool_hits_total{pool=\"img:1:256\"} 3"));
	assert_non_null(strstr(metrics, "luminaguard_pool_misses_total{pool=\"img:1:256\"} 1"));
	assert_non_null(strstr(metrics, "luminaguard_spawn_seconds_count{path=\"pool\"} 3"));
	assert_non_null(strstr(metrics, "luminaguard_sandboxes{state=\"ready\"} 5"));
	assert_non_null(strstr(metrics, "luminaguard_pool_ready{pool=\"img:1:256\"} 3"));
	free(metrics);
	lg_service_free(s);
	assert_int_equal(live_vms, 0);
}

struct claimer {
	struct lg_service *s;
	pthread_barrier_t *go;
	struct lg_entry *e;
	struct lg_sandbox *sb;
	enum lg_spawn_path path;
};

static void *claim_main(void *arg)
{
	struct claimer *c = arg;
	struct lg_err *err = NULL;
	struct lg_create_req req = {.cancel_fd = -1};

	pthread_barrier_wait(c->go);
	if (lg_service_create(c->s, &req, &c->e, &err) < 0) {
		lg_err_free(&err);
		return NULL;
	}
	c->sb = lg_entry_sandbox(c->e);
	c->path = lg_entry_path(c->e);
	lg_service_put(c->s, c->e);
	return NULL;
}

/* Eight clients at once against a pool of 8: eight hits, no VM handed out twice. */
static void test_concurrent_claims(void **state)
{
	const char *pools[] = {"img=8"};
	struct lg_service *s = service(32, pools, 1, 0);
	struct claimer c[8];
	pthread_t t[8];
	pthread_barrier_t go;

	wait_pool_ready(s, 0, 8);
	pthread_barrier_init(&go, NULL, 8);
	for (int i = 0; i < 8; i++) {
		c[i] = (struct claimer){.s = s, .go = &go};
		pthread_create(&t[i], NULL, claim_main, &c[i]);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&go);
	for (int i = 0; i < 8; i++) {
		assert_non_null(c[i].e);
		assert_int_equal(c[i].path, LG_PATH_POOL);
		for (int j = 0; j < i; j++) {
			assert_ptr_not_equal(c[i].sb, c[j].sb);
			assert_string_not_equal(lg_entry_id(c[i].e), lg_entry_id(c[j].e));
		}
	}
	assert_int_equal(pool_field(s, 0, "hits"), 8);
	lg_service_free(s);
	assert_int_equal(live_vms, 0);
}

static json_t *wait_state(struct lg_service *s, const char *id, const char *state)
{
	for (int t = 0; t < 200; t++) {
		json_t *d = lg_service_describe(s, id, NULL);
		if (d != NULL && strcmp(json_string_value(json_object_get(d, "state")), state) == 0)
			return d;
		json_decref(d);
		usleep(5000);
	}
	fail_msg("%s never became %s", id, state);
	return NULL;
}

/* A VMM that dies under an entry is noticed within a second; the entry stays, lost. */
static void test_watcher_marks_lost(void **state)
{
	const char *pools[] = {"img=1"};
	struct lg_service *s = service(8, pools, 1, 0);
	struct lg_entry *e = create(s, "other", 0, NULL, NULL);
	char id[32];
	uint64_t t0;
	json_t *d;
	char *m;

	snprintf(id, sizeof(id), "%s", lg_entry_id(e));
	lg_service_put(s, e);
	t0 = lg_now_ms();
	assert_int_equal(lg_service_kill(s, id, NULL), 0);
	d = wait_state(s, id, "lost");
	assert_true(lg_now_ms() - t0 < 1000);
	assert_non_null(json_string_value(json_object_get(d, "lost_reason")));
	json_decref(d);
	/* Its VM is gone; the entry answers with the reason until destroyed. */
	e = lg_service_get(s, id, NULL);
	assert_non_null(e);
	assert_null(lg_entry_sandbox(e));
	lg_service_put(s, e);
	assert_int_equal(live_vms, 1); /* the pooled one */

	m = lg_service_metrics_render(s);
	assert_non_null(strstr(m, "luminaguard_sandboxes{state=\"lost\"} 1"));
	assert_non_null(strstr(m, "luminaguard_vmm_exits_total{reason=\"unknown\"} 1"));
	free(m);
	assert_int_equal(lg_service_destroy(s, id, NULL), 0);

	/* A pooled VM that dies is dropped and replaced . */
	wait_pool_ready(s, 0, 1);
	int before = created_vms;
	pthread_mutex_lock(&fakes_lock);
	for (size_t i = 0; i < ARRAY_SIZE(fakes); i++)
		if (fakes[i] != NULL)
			fake_kill(
			    (struct lg_sandbox *)fakes[i]); /* the only live one: the pooled VM */
	pthread_mutex_unlock(&fakes_lock);
	for (int t = 0; t < 200 && created_vms == before; t++)
		usleep(5000);
	assert_int_equal(created_vms, before + 1);
	wait_pool_ready(s, 0, 1);
	assert_int_equal(live_vms, 1);
	lg_service_free(s);
	assert_int_equal(live_vms, 0);
}

/* A kill while a request holds the entry: the VM is freed only when the holder lets go. */
static void test_lost_while_busy(void **state)
{
	struct lg_service *s = service(8, NULL, 0, 0);
	struct lg_entry *e = create(s, NULL, 0, NULL, NULL);
	char id[32];
	json_t *d;

	snprintf(id, sizeof(id), "%s", lg_entry_id(e));
	struct lg_sandbox *sb = lg_entry_sandbox(e);
	fake_kill(sb);
	d = wait_state(s, id, "lost");
	json_decref(d);
	assert_null(lg_entry_sandbox(e));
	assert_int_equal(live_vms, 1); /* still held */
	lg_service_put(s, e);
	assert_int_equal(live_vms, 0);
	lg_service_free(s);
}

static void test_idle_reaper(void **state)
{
	struct lg_service *s = service(8, NULL, 0, 1);
	struct lg_entry *e = create(s, NULL, 0, NULL, NULL);
	char id[32];

	snprintf(id, sizeof(id), "%s", lg_entry_id(e));
	lg_service_put(s, e);
	for (int t = 0; t < 300 && live_vms > 0; t++)
		usleep(10000);
	assert_int_equal(live_vms, 0);
	assert_null(lg_service_describe(s, id, NULL));
	lg_service_free(s);
}

static void test_adopt_failure_disables_pool(void **state)
{
	const char *pools[] = {"img=1"};
	struct lg_service *s = service(8, pools, 1, 0);
	enum lg_spawn_path path;
	struct lg_entry *e;

	wait_pool_ready(s, 0, 1);
	fail_adopt = 1;
	e = create(s, NULL, 0, NULL, &path);
	fail_adopt = 0;
	/* The create still succeeds, by booting; the pool stops. */
	assert_int_equal(path, LG_PATH_BOOT);
	assert_int_equal(pool_field(s, 0, "disabled"), 1);
	lg_service_put(s, e);
	usleep(100000);
	assert_int_equal(pool_field(s, 0, "ready"), 0);
	lg_service_free(s);
	assert_int_equal(live_vms, 0);
}

/* A pooled VM whose first command fails is not handed out: destroyed, and the pool backs off. */
static void test_warm_failure(void **state)
{
	const char *pools[] = {"img=1"};
	struct lg_service *s;

	fail_warm = 1;
	s = service(8, pools, 1, 0);
	usleep(300000);
	assert_int_equal(pool_field(s, 0, "ready"), 0);
	assert_int_equal(live_vms, 0);
	fail_warm = 0;
	lg_service_free(s);
}

static void test_missing_image_pool_backs_off(void **state)
{
	const char *pools[] = {"missing=2"};
	int before = create_attempts;
	struct lg_service *s = service(8, pools, 1, 0);

	usleep(300000);
	/* One attempt, then a back-off: no hot loop, and the service still serves. */
	assert_int_equal(create_attempts, before + 1);
	struct lg_entry *e = create(s, NULL, 0, NULL, NULL);
	lg_service_put(s, e);
	lg_service_free(s);
	assert_int_equal(live_vms, 0);
}

/* A create with network (allowlist allow); NULL with *errnum when it fails. */
static struct lg_entry *create_net_allow(struct lg_service *s, const char *image, const char *allow,
					 enum lg_spawn_path *path, int *errnum)
{
	struct lg_entry *e = NULL;
	struct lg_err *err = NULL;
	const struct lg_sandbox_net net = {.allow = allow};
	struct lg_create_req req = {.image = image, .net = &net, .cancel_fd = -1};
	int r = lg_service_create(s, &req, &e, &err);

	*errnum = -r;
	if (r < 0) {
		lg_err_free(&err);
		return NULL;
	}
	*path = lg_entry_path(e);
	return e;
}

static struct lg_entry *create_net(struct lg_service *s, const char *image,
				   enum lg_spawn_path *path)
{
	int errnum;
	struct lg_entry *e = create_net_allow(s, image, "example.org:443", path, &errnum);

	if (e == NULL)
		fail_msg("create with network: errno %d", errnum);
	return e;
}

/*
 * With snapshots: a pool's VMs are restored from its shape's snapshot; a
 * miss boots once and asks for a snapshot, then restores with its own
 * hostname; a stale snapshot falls back to a boot and is made again; a
 * sandbox with network never restores.
 */
static void test_snapshots(void **state)
{
	const char *pools[] = {"img=2"};
	struct lg_service *s;
	struct lg_entry *e;
	enum lg_spawn_path path;
	int calls0 = snapshot_calls;

	snapshots_on = true;
	s = service(16, pools, 1, 0);
	wait_pool_ready(s, 0, 2);
	assert_int_equal(snapshot_calls, calls0 + 1);
	assert_int_equal(pool_field(s, 0, "snapshot"), 1);
	e = create(s, NULL, 0, NULL, &path);
	assert_int_equal(path, LG_PATH_POOL);
	assert_true(fake_of(lg_entry_sandbox(e))->restored);
	lg_service_put(s, e);

	/* Another shape: boots, and its snapshot is made in the background. */
	e = create(s, "other", 0, NULL, &path);
	assert_int_equal(path, LG_PATH_BOOT);
	lg_service_put(s, e);
	for (int t = 0; t < 200 && snapshot_calls < calls0 + 2; t++)
		usleep(5000);
	assert_int_equal(snapshot_calls, calls0 + 2);
	usleep(20000);
	e = create(s, "other", 0, NULL, &path);
	assert_int_equal(path, LG_PATH_RESTORE);
	assert_string_equal(fake_of(lg_entry_sandbox(e))->hostname, lg_entry_id(e));
	lg_service_put(s, e);

	/* Stale: this create boots; the next one restores from a snapshot made again. */
	stale_snapshots = 1;
	e = create(s, "other", 0, NULL, &path);
	stale_snapshots = 0;
	assert_int_equal(path, LG_PATH_BOOT);
	lg_service_put(s, e);
	for (int t = 0; t < 200 && snapshot_calls < calls0 + 3; t++)
		usleep(5000);
	usleep(20000);
	e = create(s, "other", 0, NULL, &path);
	assert_int_equal(path, LG_PATH_RESTORE);
	lg_service_put(s, e);

	/* Network: restored too, with its allowlist from the start (not a bare port). */
	e = create_net(s, "other", &path);
	assert_int_equal(path, LG_PATH_RESTORE);
	assert_false(fake_of(lg_entry_sandbox(e))->net_port);
	assert_false(fake_of(lg_entry_sandbox(e))->net_closed);
	assert_string_equal(fake_of(lg_entry_sandbox(e))->allow, "example.org:443");
	lg_service_put(s, e);
	/* Without network, a restored VM's port is closed before it is handed out. */
	e = create(s, "other", 0, NULL, &path);
	assert_int_equal(path, LG_PATH_RESTORE);
	assert_false(fake_of(lg_entry_sandbox(e))->net_port);
	assert_true(fake_of(lg_entry_sandbox(e))->net_closed);
	lg_service_put(s, e);

	/* A shape whose snapshot cannot be made keeps booting, and stops asking. */
	for (int i = 0; i < 4; i++) {
		e = create(s, "nosnap", 0, NULL, &path);
		assert_int_equal(path, LG_PATH_BOOT);
		lg_service_put(s, e);
		usleep(50000);
	}
	lg_service_free(s);
	snapshots_on = false;
	assert_int_equal(live_vms, 0);
}

/* Without any pool, a miss still gets its shape's snapshot made for the next create. */
static void test_snapshots_without_pool(void **state)
{
	struct lg_service *s;
	struct lg_entry *e;
	enum lg_spawn_path path = LG_PATH_BOOT;

	snapshots_on = true;
	s = service(8, NULL, 0, 0);
	e = create(s, NULL, 0, NULL, &path);
	assert_int_equal(path, LG_PATH_BOOT);
	lg_service_put(s, e);
	for (int t = 0; t < 200 && path != LG_PATH_RESTORE; t++) {
		usleep(10000);
		e = create(s, NULL, 0, NULL, &path);
		char id[32];
		snprintf(id, sizeof(id), "%s", lg_entry_id(e));
		lg_service_put(s, e);
		assert_int_equal(lg_service_destroy(s, id, NULL), 0);
	}
	assert_int_equal(path, LG_PATH_RESTORE);
	lg_service_free(s);
	snapshots_on = false;
	assert_int_equal(live_vms, 0);
}

/*
 * Network at claim time: a pooled VM waits with the bare port; a claim with
 * network attaches the claimer's allowlist, one without closes the port; a
 * bad allowlist fails before a pooled VM is spent.  Then a pool grown by a
 * burst of misses shrinks back to its size once misses stop.
 */
static void test_pool_net_and_decay(void **state)
{
	const char *pools[] = {"img=1"};
	struct lg_service *s;
	struct lg_entry *e, *burst[3];
	enum lg_spawn_path path;
	int errnum = 0;

	decay_ms = 150;
	s = service(16, pools, 1, 0);
	wait_pool_ready(s, 0, 1);
	e = create_net(s, NULL, &path);
	assert_int_equal(path, LG_PATH_POOL);
	assert_true(fake_of(lg_entry_sandbox(e))->net_port);
	assert_true(fake_of(lg_entry_sandbox(e))->net_set);
	assert_false(fake_of(lg_entry_sandbox(e))->net_closed);
	assert_string_equal(fake_of(lg_entry_sandbox(e))->allow, "example.org:443");
	lg_service_put(s, e);

	wait_pool_ready(s, 0, 1);
	e = create(s, NULL, 0, NULL, &path);
	assert_int_equal(path, LG_PATH_POOL);
	assert_true(fake_of(lg_entry_sandbox(e))->net_closed);
	lg_service_put(s, e);

	wait_pool_ready(s, 0, 1);
	int hits = pool_field(s, 0, "hits"), misses = pool_field(s, 0, "misses");
	assert_null(create_net_allow(s, NULL, "no such:thing:at all", &path, &errnum));
	assert_int_equal(errnum, EINVAL);
	assert_int_equal(pool_field(s, 0, "ready"), 1);
	assert_int_equal(pool_field(s, 0, "hits"), hits);
	assert_int_equal(pool_field(s, 0, "misses"), misses);

	/* A burst: a hit, then at least one miss (the refill may win one), each growing the pool. */
	create_delay_ms = 200; /* so that the refill cannot win the second create */
	for (int i = 0; i < 3; i++)
		burst[i] = create(s, NULL, 0, NULL, NULL);
	create_delay_ms = 0;
	assert_true(pool_field(s, 0, "target") >= 2);
	for (int i = 0; i < 3; i++)
		lg_service_put(s, burst[i]);
	for (int t = 0; t < 300 && pool_field(s, 0, "target") > 1; t++)
		usleep(10000);
	assert_int_equal(pool_field(s, 0, "target"), 1);
	for (int t = 0; t < 300 && pool_field(s, 0, "ready") > 1; t++)
		usleep(10000);
	assert_int_equal(pool_field(s, 0, "ready"), 1);
	lg_service_free(s);
	decay_ms = 0;
	assert_int_equal(live_vms, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pool_spec),
	    cmocka_unit_test(test_registry_and_owners),
	    cmocka_unit_test(test_admission_counts_pool),
	    cmocka_unit_test(test_pool_hit_miss_refill),
	    cmocka_unit_test(test_concurrent_claims),
	    cmocka_unit_test(test_watcher_marks_lost),
	    cmocka_unit_test(test_lost_while_busy),
	    cmocka_unit_test(test_idle_reaper),
	    cmocka_unit_test(test_adopt_failure_disables_pool),
	    cmocka_unit_test(test_missing_image_pool_backs_off),
	    cmocka_unit_test(test_warm_failure),
	    cmocka_unit_test(test_snapshots),
	    cmocka_unit_test(test_snapshots_without_pool),
	    cmocka_unit_test(test_pool_net_and_decay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
