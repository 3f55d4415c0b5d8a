/* SPDX-License-Identifier: Apache-2.0 */
#include "host/sandbox.h"

#include "common/env.h"
#include "common/log.h"
#include "common/util.h"
#include "host/sandbox_internal.h"
#include "host/snapshot.h"
#include "image/image.h"
#include "net/netmux.h"
#include "proto/proto.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A VM booted (or restored) from an image, its agent, its network. */
struct lg_sandbox {
	const struct hv_backend *backend;
	struct vm *vm;
	struct lg_agent *agent;
	enum hv_accel accel;
	uint64_t boot_ms; /* spawn to ready: agent HELLO, or restored, PINGed and adopted */
	bool restored;	  /* from opts.snapshot, not booted */
	/*
	 * The host end of the net port: NULL without a port, or once
	 * lg_sandbox_set_net(NULL) closed it.
	 */
	struct lg_netmux *net;
	uint8_t net_state; /* sandbox.c's enum net_state */
	/* Its egress (and allowlist), once attached; freed after the mux. */
	struct lg_egress *egress;
	struct lg_admission *admission; /* holds .cost while non-NULL */
	struct lg_admission_cost cost;
	/* The image it booted; its "defaults" (env, workdir, user) apply to every exec. */
	struct lg_image *image;
};

#define SHUTDOWN_WAIT_MS 2000
/* A restored guest answers PING in milliseconds; one that does not was restored wrong. */
#define RESTORE_PING_TIMEOUT_MS 10000

#define STR_(x)	  #x
#define STR(x)	  STR_(x)
#define PROXY_URL "http://127.0.0.1:" STR(LG_NET_PROXY_PORT)

/*
 * What a command of a sandbox with egress gets under the image's
 * environment and its own: the guest's forwarder is the only way out.
 */
static const char *const proxy_env[] = {
    "http_proxy=" PROXY_URL,  "https_proxy=" PROXY_URL,	      "HTTP_PROXY=" PROXY_URL,
    "HTTPS_PROXY=" PROXY_URL, "no_proxy=localhost,127.0.0.1", "NO_PROXY=localhost,127.0.0.1",
};

/* struct lg_sandbox's net_state. */
enum net_state {
	NET_NONE,    /* no port: the VM has no way out, set_net cannot give it one */
	NET_PENDING, /* a port whose mux refuses every stream until set_net */
	NET_SET,     /* egress attached, or the port closed for good */
};

/* o's, else $LUMINAGUARD_BOOT_TIMEOUT as read at start, else its default. */
static int boot_timeout_ms(const struct lg_sandbox_opts *o)
{
	if (o->boot_timeout_ms > 0)
		return o->boot_timeout_ms;
	return lg_env()->boot_timeout_ms;
}

/* The last non-empty line of the console, for "the guest did not start" errors. */
static char *last_console_line(struct vm *vm)
{
	cleanup_free char *tail = vm->backend->console_tail(vm);
	char *end, *start;

	for (char *p = tail; *p; p++)
		if ((*p < 0x20 && *p != '\n') || *p == 0x7f)
			*p = ' ';
	end = tail + strlen(tail);
	while (end > tail && (end[-1] == '\n' || end[-1] == ' '))
		*--end = '\0';
	start = strrchr(tail, '\n');
	start = start ? start + 1 : tail;
	if (*start == '\0')
		return NULL;
	return xstrdup(start);
}

int lg_sandbox_plan(const struct lg_sandbox_opts *o, struct lg_sandbox_plan *p, struct lg_err **err)
{
	const char *note = NULL;
	struct lg_image *img;
	struct vm_config *cfg = &p->cfg;
	int r;

	memset(p, 0, sizeof(*p));
	r = hv_backend_find(o->backend, &p->backend, err);
	if (r < 0)
		return r;
	r = p->backend->probe(err);
	if (r < 0)
		return r;
	r = hv_accel_resolve(o->accel, &p->accel, &note, err);
	if (r < 0)
		return r;
	if (note != NULL && o->on_note != NULL)
		o->on_note(note);
	r = lg_image_open(o->image != NULL ? o->image : "default", &p->image, err);
	if (r < 0)
		return r;
	img = p->image;
	cfg->cpus = o->cpus ? o->cpus : 1;
	cfg->memory_mib = o->memory_mib ? o->memory_mib : LG_DEFAULT_MEMORY_MIB;
	cfg->kernel = img->kernel;
	cfg->initrd = img->initrd;
	if (img->rootfs != NULL) {
		cfg->rootfs = img->rootfs;
		cfg->layer_mib = o->disk_mib ? o->disk_mib : LG_DEFAULT_DISK_MIB;
	}
	cfg->accel = p->accel;
	cfg->console_fd = o->console_fd;
	cfg->net_fd = -1;
	cfg->ram_fd = -1;
	cfg->jail = o->jail;
	r = hv_config_check(cfg, err);
	if (r < 0) {
		lg_sandbox_plan_free(p);
		return r;
	}
	return 0;
}

void lg_sandbox_plan_free(struct lg_sandbox_plan *p)
{
	lg_image_free(p->image);
	p->image = NULL;
}

int lg_sandbox_adopt(struct lg_sandbox *sb, const char *hostname, struct lg_err **err)
{
	int r = lg_agent_adopt(sb->agent, hostname, NULL, err);

	if (r == -EOPNOTSUPP) {
		lg_err_free(err);
		return lg_err_msg(
		    err, EOPNOTSUPP,
		    "image '%s' has a guest agent older than protocol %u, which cannot "
		    "be given a fresh RNG seed, clock and hostname (pools and "
		    "snapshots need it); rebuild it with: %s",
		    sb->image->name, LG_PROTO_VERSION_ADOPT, sb->image->rebuild);
	}
	return r;
}

/* The sandbox's own egress for net: its allowlist, and who asks and hears. */
static int egress_new(const struct lg_sandbox_net *net, struct lg_egress **out, struct lg_err **err)
{
	struct lg_allowlist *al;
	struct lg_egress *eg;

	if (net->allow == NULL || net->allow[0] == '\0')
		al = lg_allowlist_new();
	else if (lg_allowlist_parse(net->allow, &al, err) < 0)
		return lg_err_wrap(err, "network allowlist");
	eg = xmalloc(sizeof(*eg));
	lg_egress_init(eg, al);
	eg->ask = net->ask;
	eg->ask_ctx = net->ctx;
	eg->log = net->log;
	eg->log_ctx = net->ctx;
	*out = eg;
	return 0;
}

/* After the mux that served it stopped: no proxy thread uses it any more. */
static void egress_free(struct lg_egress *eg)
{
	struct lg_allowlist *al;

	if (eg == NULL)
		return;
	al = eg->allow;
	lg_egress_fini(eg);
	lg_allowlist_free(al);
	free(eg);
}

/*
 * Stops the mux and closes the host end of the port for good: the guest's
 * forwarder reads end-of-stream and exits, so 127.0.0.1:LG_NET_PROXY_PORT
 * refuses connections and no netmux parser stays exposed to the guest.
 */
static void net_close(struct lg_sandbox *sb)
{
	lg_netmux_stop(sb->net);
	sb->net = NULL;
	sb->net_state = NET_SET;
}

int lg_sandbox_set_net(struct lg_sandbox *sb, const struct lg_sandbox_net *net, struct lg_err **err)
{
	struct lg_egress *eg;
	int r;

	if (sb->net_state == NET_NONE)
		return lg_err_msg(err, EINVAL,
				  "the sandbox has no network port (it was started without one)");
	if (sb->net_state == NET_SET)
		return lg_err_msg(err, EINVAL, "the sandbox's network is set already");
	if (net == NULL) {
		net_close(sb);
		return 0;
	}
	r = egress_new(net, &eg, err);
	if (r < 0)
		return r;
	/* Cannot be taken: NET_PENDING means the mux has none, and only we set it. */
	if (lg_netmux_set_egress(sb->net, eg) < 0)
		abort();
	sb->egress = eg;
	sb->net_state = NET_SET;
	return 0;
}

/* How a sandbox starts: a boot, a boot into a snapshot's RAM file, a restore. */
enum start_mode { START_BOOT, START_SHARED_RAM, START_RESTORE };

static int sandbox_start(const struct lg_sandbox_opts *o, enum start_mode mode,
			 const char *ram_file, struct lg_sandbox **out, struct lg_err **err)
{
	struct lg_sandbox_plan plan;
	struct lg_snapshot_files snap = LG_SNAPSHOT_FILES_INIT;
	struct lg_image *img;
	struct lg_sandbox *sb;
	struct vm_config cfg;
	int net[2] = {-1, -1}; /* [0] stays here (the mux), [1] goes to the VMM */
	struct lg_egress *eg;
	bool port;
	uint64_t t0;
	int r;

	if (mode == START_SHARED_RAM && o->net != NULL)
		return lg_err_msg(err, EINVAL,
				  "a snapshot's VM boots with its network port and no egress");
	if (o->hostname != NULL && !lg_hostname_valid(o->hostname, strlen(o->hostname)))
		return lg_err_msg(
		    err, EINVAL,
		    "hostname '%.80s': want 1..%u letters, digits or '-', not starting "
		    "or ending with '-'",
		    o->hostname, LG_HOSTNAME_MAX);
	sb = xzalloc(sizeof(*sb));
	/* A bad allowlist is found before anything boots. */
	if (o->net != NULL) {
		r = egress_new(o->net, &sb->egress, err);
		if (r < 0)
			goto fail;
	}
	eg = sb->egress;
	/*
	 * A snapshot's VM always has the port (its device layout is part of
	 * the saved state), so every VM made from one has it too.
	 */
	port = eg != NULL || o->net_port || mode != START_BOOT;
	r = lg_sandbox_plan(o, &plan, err);
	if (r < 0)
		goto fail;
	sb->backend = plan.backend;
	sb->accel = plan.accel;
	sb->image = plan.image;
	img = sb->image;
	cfg = plan.cfg;
	if (mode == START_SHARED_RAM) {
		cfg.ram_file = ram_file;
		cfg.ram_shared = true;
	} else if (mode == START_RESTORE) {
		/* Checked before anything starts: a stale or damaged snapshot never half-loads. */
		r = lg_snapshot_open(o->snapshot, &plan, &snap, err);
		if (r < 0)
			goto fail;
		cfg.ram_fd = snap.ram_fd; /* a sealed memfd of its RAM, never the file */
		cfg.incoming = true;
	}
	if (o->admission != NULL) {
		/* A restore costs what a boot does: its RAM may all become private. */
		struct lg_admission_cost c = {
		    .vcpus = cfg.cpus, .memory_mib = hv_guest_ram_mib(&cfg) + HV_VMM_OVERHEAD_MIB};
		r = lg_admission_reserve(o->admission, &c, err);
		if (r < 0)
			goto fail;
		sb->admission = o->admission;
		sb->cost = c;
	}
	/*
	 * Without network the VM gets no port at all, so there is nothing in
	 * the guest that could reach out.  With it, the port is a socketpair:
	 * the guest's connections can only ever arrive at the mux and the
	 * proxy on this side, never at a host network interface.
	 */
	if (port) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, net) < 0) {
			r = lg_err_sys(err, "cannot create the guest's network channel");
			goto fail;
		}
		cfg.net_fd = net[1];
	}

	t0 = lg_now_ms();
	r = sb->backend->spawn(&cfg, &sb->vm, err);
	/* The VMM has its own copy now (or failed): ours would keep the port open. */
	if (net[1] >= 0) {
		close(net[1]);
		net[1] = -1;
	}
	if (r < 0)
		goto fail;
	if (net[0] >= 0) {
		/* eg NULL: every stream is refused until set_net. */
		r = lg_netmux_start(net[0], eg, &sb->net, err);
		net[0] = -1; /* the mux owns it, also on failure */
		if (r < 0) {
			lg_err_wrap(err, "cannot start the guest's network");
			goto fail;
		}
		sb->net_state = eg != NULL ? NET_SET : NET_PENDING;
	}
	if (mode == START_RESTORE) {
		uint64_t t_spawned = lg_now_ms(), t_loaded = 0, t_attached = 0;

		r = sb->backend->load_state(sb->vm, snap.state_fd, boot_timeout_ms(o), err);
		if (r == 0) {
			t_loaded = lg_now_ms();
			r = lg_agent_attach(sb->backend->agent_fd(sb->vm), o->cancel_fd,
					    RESTORE_PING_TIMEOUT_MS, &sb->agent, err);
			t_attached = lg_now_ms();
		}
		if (r < 0) {
			if (r != -EINTR)
				lg_err_wrap(err, "restoring snapshot %s", o->snapshot);
			goto fail;
		}
		/* Before anything else runs in it: its own RNG, clock and names. */
		r = lg_sandbox_adopt(sb, o->hostname, err);
		if (r < 0)
			goto fail;
		/* Asked for no network: the snapshot's port closes for good. */
		if (eg == NULL && !o->net_port) {
			net_close(sb);
			sb->net_state = NET_NONE;
		}
		sb->restored = true;
		lg_debug(
		    "restore: VMM up %llu ms, state loaded %llu ms, PING %llu ms, ADOPT %llu ms",
		    (unsigned long long)(t_spawned - t0),
		    (unsigned long long)(t_loaded - t_spawned),
		    (unsigned long long)(t_attached - t_loaded),
		    (unsigned long long)(lg_now_ms() - t_attached));
	} else {
		r = lg_agent_connect(sb->backend->agent_fd(sb->vm), o->cancel_fd,
				     boot_timeout_ms(o), &sb->agent, err);
		if (r < 0) {
			if (r == -LG_AGENT_SETUP_ERRNO && img->rootfs != NULL) {
				/* The guest booted but could not mount the image's root disk. */
				cleanup_free char *why = xstrdup((*err)->msg);

				lg_err_free(err);
				lg_err_msg(
				    err, LG_AGENT_SETUP_ERRNO,
				    "image '%s': %s; check it with: luminaguard image verify "
				    "%s; rebuild it with: %s",
				    img->name, why, img->name, img->rebuild);
			} else if (r != -EINTR) {
				cleanup_free char *line = last_console_line(sb->vm);
				lg_err_wrap(err, "the guest did not start%s%s%s",
					    line ? " (console: " : "", line ? line : "",
					    line ? ")" : "");
			}
			goto fail;
		}
		if (o->hostname != NULL) {
			r = lg_sandbox_adopt(sb, o->hostname, err);
			if (r < 0)
				goto fail;
		}
	}
	sb->boot_ms = lg_now_ms() - t0;
	lg_debug("sandbox up in %llu ms (%s, %s, accel %s, agent %s)",
		 (unsigned long long)sb->boot_ms, sb->restored ? "restored" : "booted",
		 sb->backend->name, hv_accel_name(sb->accel), lg_agent_name(sb->agent));
	lg_snapshot_files_close(&snap);
	*out = sb;
	return 0;
fail:
	if (net[0] >= 0)
		close(net[0]);
	if (net[1] >= 0)
		close(net[1]);
	lg_snapshot_files_close(&snap);
	lg_sandbox_destroy(sb);
	return r;
}

int lg_sandbox_create(const struct lg_sandbox_opts *o, struct lg_sandbox **out, struct lg_err **err)
{
	return sandbox_start(o, o->snapshot != NULL ? START_RESTORE : START_BOOT, NULL, out, err);
}

int lg_sandbox_create_shared_ram(const struct lg_sandbox_opts *o, const char *ram_file,
				 struct lg_sandbox **out, struct lg_err **err)
{
	if (o->snapshot != NULL)
		return lg_err_set(err, EINVAL, "a snapshot's VM cannot itself be restored");
	return sandbox_start(o, START_SHARED_RAM, ram_file, out, err);
}

void lg_sandbox_destroy(struct lg_sandbox *sb)
{
	if (sb == NULL)
		return;
	if (sb->vm != NULL) {
		/*
		 * A clean poweroff first: the guest syncs and QEMU exits by itself.
		 * If the agent is gone or slow, the backend's destroy kills it.
		 */
		if (sb->agent != NULL && lg_agent_shutdown(sb->agent, NULL) == 0)
			sb->backend->wait(sb->vm, SHUTDOWN_WAIT_MS);
		sb->backend->destroy(sb->vm);
	}
	/*
	 * After the VMM: its end of the port is closed now, so the mux sees
	 * end-of-stream; stopping it ends every relayed connection.
	 */
	lg_netmux_stop(sb->net);
	/* Only now: no proxy thread is left to use it. */
	egress_free(sb->egress);
	lg_agent_free(sb->agent);
	lg_image_free(sb->image);
	/* Only now: the VMM that used the budget is gone. */
	if (sb->admission != NULL)
		lg_admission_release(sb->admission, &sb->cost);
	free(sb);
}

int lg_sandbox_kill(struct lg_sandbox *sb)
{
	if (sb == NULL || sb->vm == NULL)
		return -ESRCH;
	return sb->backend->kill(sb->vm);
}

int lg_sandbox_exec(struct lg_sandbox *sb, const struct lg_exec_opts *o, struct lg_exec_result *res,
		    struct lg_err **err)
{
	const struct lg_image *img = sb->image;
	struct lg_exec_opts eo = *o;
	cleanup_free char **env = NULL;
	size_t p = sb->egress != NULL ? ARRAY_SIZE(proxy_env) : 0, n = 0, m = 0;

	while (img->env[n] != NULL)
		n++;
	if (p + n > 0) {
		while (o->env != NULL && o->env[m] != NULL)
			m++;
		/*
		 * The agent applies ENV in order, a later KEY replacing an
		 * earlier one: the proxy, then the image's, then the caller's.
		 */
		env = xmalloc((p + n + m + 1) * sizeof(*env));
		for (size_t i = 0; i < p; i++)
			env[i] = (char *)proxy_env[i];
		memcpy(env + p, img->env, n * sizeof(*env));
		if (m > 0)
			memcpy(env + p + n, o->env, m * sizeof(*env));
		env[p + n + m] = NULL;
		eo.env = env;
	}
	if (eo.cwd == NULL)
		eo.cwd = img->workdir;
	if (eo.user == NULL)
		eo.user = img->user;
	return lg_agent_exec(sb->agent, &eo, res, err);
}

pid_t lg_sandbox_pid(const struct lg_sandbox *sb)
{
	return sb->vm != NULL ? sb->vm->pid : 0;
}

int lg_sandbox_exit_fd(const struct lg_sandbox *sb)
{
	if (sb->vm == NULL || sb->backend->exit_fd == NULL)
		return -1;
	return sb->backend->exit_fd(sb->vm);
}

uint64_t lg_sandbox_boot_ms(const struct lg_sandbox *sb)
{
	return sb->boot_ms;
}

bool lg_sandbox_restored(const struct lg_sandbox *sb)
{
	return sb->restored;
}

bool lg_sandbox_has_net(const struct lg_sandbox *sb)
{
	return sb->egress != NULL;
}

enum hv_accel lg_sandbox_accel(const struct lg_sandbox *sb)
{
	return sb->accel;
}

const char *lg_sandbox_image_name(const struct lg_sandbox *sb)
{
	return sb->image->name;
}

struct lg_agent *lg_sandbox_agent(struct lg_sandbox *sb)
{
	return sb->agent;
}

int lg_sandbox_save_state(struct lg_sandbox *sb, int fd, struct lg_err **err)
{
	int r;

	if (sb->backend->save_state == NULL)
		return lg_err_msg(err, EOPNOTSUPP, "the %s backend has no snapshots",
				  sb->backend->name);
	r = sb->backend->save_state(sb->vm, fd, err);
	/* Paused for good: a poweroff through the agent would only time out. */
	lg_agent_free(sb->agent);
	sb->agent = NULL;
	return r;
}
