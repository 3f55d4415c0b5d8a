/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host end of the net port.  One thread runs the relay (net/netstream.h)
 * over the port and every stream's socket; each NET_OPEN becomes a
 * socketpair whose other end is served by lg_egress_serve() on a worker
 * thread of its own, so a connection that waits for DNS, a slow connect or
 * a human's approval holds up nothing else.
 *
 * A mux may start without egress (a pooled or snapshot VM whose claimer's
 * allowlist is not known yet): each NET_OPEN is then refused with
 * NET_CLOSE until lg_netmux_set_egress() publishes one, once.
 *
 * The guest is untrusted: every rule of the relay is checked, and a guest
 * that breaks one loses its network (one warning, all streams closed, the
 * port closed) while the VM and the host go on.  Memory is bounded by the
 * windows and the stream limit; threads by NM_MAX_WORKERS.
 */
#include "net/netmux.h"

#include "common/log.h"
#include "common/util.h"
#include "net/netstream.h"
#include "proto/proto.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Egress threads still running, stream or not: a stream the guest has
 * closed may leave its thread finishing a connect for a while.  Bounded so
 * that a guest opening and closing streams in a loop cannot pile them up.
 */
#define NM_MAX_WORKERS (2 * NS_MAX_STREAMS)

struct nm_worker {
	pthread_t th;
	struct lg_egress *eg;
	int fd;
	atomic_bool done;
	struct nm_worker *next;
};

struct lg_netmux {
	struct ns ns;
	/* NULL: refuse every stream; set once, read by the mux thread. */
	_Atomic(struct lg_egress *) eg;
	int wake_fd; /* eventfd: lg_netmux_stop() */
	atomic_bool stop;
	pthread_t th;
	struct nm_worker *workers; /* only the mux thread touches it while it runs */
	unsigned nworkers;
};

static void *worker_main(void *arg)
{
	struct nm_worker *w = arg;

	lg_egress_serve(w->eg, w->fd); /* closes fd */
	atomic_store(&w->done, true);
	return NULL;
}

static void reap_workers(struct lg_netmux *m, bool all)
{
	struct nm_worker **pp = &m->workers;

	while (*pp != NULL) {
		struct nm_worker *w = *pp;

		if (!all && !atomic_load(&w->done)) {
			pp = &w->next;
			continue;
		}
		pthread_join(w->th, NULL);
		*pp = w->next;
		free(w);
		m->nworkers--;
	}
}

/* NET_OPEN: a socketpair, one end for the relay, one for an egress thread. */
static int on_open(void *ctx, uint32_t id)
{
	struct lg_netmux *m = ctx;
	struct lg_egress *eg = atomic_load(&m->eg);
	struct nm_worker *w;
	int sv[2];
	int r;

	if (eg == NULL) {
		lg_debug("net: stream %u refused: the sandbox has no network", id);
		return -1;
	}
	reap_workers(m, false);
	if (m->nworkers >= NM_MAX_WORKERS) {
		lg_debug("net: stream %u refused: %u connections still finishing", id, m->nworkers);
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		lg_warn("net: stream %u refused: socketpair: %s", id, strerror(errno));
		return -1;
	}
	w = xzalloc(sizeof(*w));
	w->eg = eg;
	w->fd = sv[1];
	atomic_init(&w->done, false);
	r = pthread_create(&w->th, NULL, worker_main, w);
	if (r != 0) {
		lg_warn("net: stream %u refused: cannot start a thread: %s", id, strerror(r));
		close(sv[0]);
		close(sv[1]);
		free(w);
		return -1;
	}
	w->next = m->workers;
	m->workers = w;
	m->nworkers++;
	return sv[0];
}

static void *mux_main(void *arg)
{
	struct lg_netmux *m = arg;
	struct pollfd pfd[2 + NS_MAX_STREAMS];
	uint64_t tags[2 + NS_MAX_STREAMS];

	while (m->ns.end == 0 && !atomic_load(&m->stop)) {
		int n = ns_poll_fill(&m->ns, pfd, tags);
		int wake = n;

		pfd[n] = (struct pollfd){.fd = m->wake_fd, .events = POLLIN};
		tags[n++] = NS_PORT - 1;
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			lg_warn("net: poll: %s; the sandbox's network is closed", strerror(errno));
			break;
		}
		if (pfd[wake].revents & POLLIN)
			continue; /* stop */
		ns_poll_handle(&m->ns, pfd, tags, wake);
		reap_workers(m, false);
	}
	if (m->ns.end == NS_END_PROTO)
		lg_warn("net: the guest broke the net port protocol (%s); its network is closed",
			m->ns.why);
	else if (m->ns.end != 0)
		lg_debug("net: %s", m->ns.why);
	/* Closing the relay's ends makes every egress thread see EOF and return. */
	ns_fini(&m->ns);
	return NULL;
}

int lg_netmux_start(int port_fd, struct lg_egress *eg, struct lg_netmux **out, struct lg_err **err)
{
	struct lg_netmux *m;
	sigset_t all, old;
	int r;

	m = xzalloc(sizeof(*m));
	atomic_init(&m->eg, eg);
	atomic_init(&m->stop, false);
	m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->wake_fd < 0) {
		r = lg_err_sys(err, "net: eventfd");
		close(port_fd);
		free(m);
		return r;
	}
	ns_init(&m->ns, port_fd);
	lg_set_cloexec(port_fd, true);
	m->ns.on_open = on_open;
	m->ns.ctx = m;
	/*
	 * The mux thread and the egress threads it starts take no signals:
	 * they stay with the main thread, and SIGPIPE cannot kill us from a
	 * socket whose guest side went away.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&m->th, NULL, mux_main, m);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		ns_fini(&m->ns);
		close(m->wake_fd);
		free(m);
		return lg_err_set(err, r, "net: cannot start the net port thread");
	}
	*out = m;
	return 0;
}

int lg_netmux_set_egress(struct lg_netmux *m, struct lg_egress *eg)
{
	struct lg_egress *none = NULL;

	if (eg == NULL)
		return -EINVAL;
	return atomic_compare_exchange_strong(&m->eg, &none, eg) ? 0 : -EBUSY;
}

void lg_netmux_stop(struct lg_netmux *m)
{
	uint64_t one = 1;

	if (m == NULL)
		return;
	atomic_store(&m->stop, true);
	if (write(m->wake_fd, &one, sizeof(one)) < 0)
		lg_debug("net: wake the net port thread: %s", strerror(errno));
	pthread_join(m->th, NULL);
	/* Every relay end is closed now: the egress threads end on their own. */
	reap_workers(m, true);
	close(m->wake_fd);
	free(m);
}
