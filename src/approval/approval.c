/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The approval broker.  One mutex guards the broker and every request it
 * filed; each request has its own condition variable, on CLOCK_MONOTONIC so
 * that setting the wall clock can neither hurry nor stall a timeout.
 *
 * Invariants, all under b->mu:
 *  - a request is on the pending list iff its state is APPROVAL_PENDING,
 *    and the list holds one reference to it;
 *  - its state leaves PENDING exactly once (the first decision wins), and the
 *    decision is written to the audit log before any waiter can see it, so
 *    the log never shows an outcome before the decision that allowed it;
 *  - each request holds a reference to its broker, so approval_put() after
 *    approval_broker_free() is safe (the broker's memory goes with the last
 *    request).
 */
#include "approval/approval.h"

#include "audit/audit.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define DEFAULT_TIMEOUT_S 300
/*
 * A misbehaving agent could file red actions in a loop; each waits up to
 * the timeout, so without a bound the broker's memory (and the human's
 * list) would grow without limit.  Beyond it, requests are denied at once.
 */
#define MAX_PENDING 1024
#define ID_HEX	    12

struct approval {
	struct approval_broker *b;
	unsigned refs;
	char id[3 + ID_HEX + 1];
	json_t *card;
	json_t *action;	   /* the whole action, for `approvals show`; may be NULL */
	unsigned channels; /* who may decide it, fixed when filed */
	enum approval_state state;
	char *decider;
	char *reason;
	time_t created_wall; /* for people: `approvals list` shows the age */
	uint64_t deadline_ms;
	pthread_cond_t cond;
	struct approval *prev, *next; /* pending list */
};

struct approval_broker {
	pthread_mutex_t mu;
	unsigned refs; /* the owner's, plus one per live request */
	unsigned timeout_s;
	struct audit_log *audit;
	struct approval *head;
	size_t npending;
	unsigned channels[APPROVAL_RISKS];
};

const char *const approval_risk_names[APPROVAL_RISKS] = {"low", "medium", "high", "critical"};

static const struct {
	enum approval_channel ch;
	const char *name;
} channel_names[] = {
    {APPROVAL_CH_ELICITATION, "elicitation"},
    {APPROVAL_CH_CLI, "cli"},
    {APPROVAL_CH_TTY, "tty"},
};

const char *approval_channel_name(enum approval_channel ch)
{
	for (size_t i = 0; i < ARRAY_SIZE(channel_names); i++)
		if (channel_names[i].ch == ch)
			return channel_names[i].name;
	return "unknown";
}

char *approval_channels_text(unsigned mask)
{
	char buf[64] = "";

	for (size_t i = 0; i < ARRAY_SIZE(channel_names); i++)
		if (mask & channel_names[i].ch)
			snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s",
				 buf[0] != '\0' ? ", " : "", channel_names[i].name);
	return xstrdup(buf[0] != '\0' ? buf : "none");
}

int approval_decide_opt_parse(const char *spec, unsigned masks[APPROVAL_RISKS], struct lg_err **err)
{
	const char *eq = strchr(spec, '=');
	cleanup_free char *list = NULL;
	char *save = NULL;
	unsigned mask = 0;
	int risk = -1;

	if (eq == NULL)
		return lg_err_msg(err, EINVAL,
				  "--decide `%s`: expected RISK=CHANNEL[,CHANNEL...], e.g. "
				  "critical=cli,tty",
				  spec);
	if ((size_t)(eq - spec) == 3 && strncmp(spec, "all", 3) == 0)
		risk = APPROVAL_RISKS;
	for (int i = 0; i < APPROVAL_RISKS && risk < 0; i++)
		if (strlen(approval_risk_names[i]) == (size_t)(eq - spec) &&
		    strncmp(spec, approval_risk_names[i], (size_t)(eq - spec)) == 0)
			risk = i;
	if (risk < 0)
		return lg_err_msg(
		    err, EINVAL, "--decide `%s`: unknown risk (low, medium, high, critical or all)",
		    spec);
	list = xstrdup(eq + 1);
	for (char *t = strtok_r(list, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		unsigned bit = 0;

		for (size_t i = 0; i < ARRAY_SIZE(channel_names); i++)
			if (strcmp(t, channel_names[i].name) == 0)
				bit = channel_names[i].ch;
		if (bit == 0)
			return lg_err_msg(err, EINVAL,
					  "--decide `%s`: unknown channel `%s` (elicitation, cli "
					  "or tty)",
					  spec, t);
		mask |= bit;
	}
	/* No channel at all would make every such request a certain timeout: say so. */
	if (mask == 0)
		return lg_err_msg(err, EINVAL, "--decide `%s`: name at least one channel", spec);
	for (int i = 0; i < APPROVAL_RISKS; i++)
		if (risk == APPROVAL_RISKS || risk == i)
			masks[i] = mask;
	return 0;
}

/* A card's risk; a missing or unknown one is treated as the highest. */
static int card_risk(const json_t *card)
{
	const char *r = json_string_value(json_object_get(card, "risk"));

	for (int i = 0; r != NULL && i < APPROVAL_RISKS; i++)
		if (strcmp(r, approval_risk_names[i]) == 0)
			return i;
	return APPROVAL_RISKS - 1;
}

const char *approval_state_name(enum approval_state s)
{
	switch (s) {
	case APPROVAL_PENDING:
		return "pending";
	case APPROVAL_APPROVED:
		return "approved";
	case APPROVAL_DENIED:
		return "denied";
	case APPROVAL_TIMED_OUT:
		return "timeout";
	case APPROVAL_CANCELLED:
		return "cancelled";
	}
	return "unknown";
}

struct approval_broker *approval_broker_new(unsigned timeout_s, struct audit_log *audit)
{
	struct approval_broker *b = xzalloc(sizeof(*b));

	pthread_mutex_init(&b->mu, NULL);
	b->refs = 1;
	b->timeout_s = timeout_s != 0 ? timeout_s : DEFAULT_TIMEOUT_S;
	b->audit = audit;
	for (int i = 0; i < APPROVAL_RISKS; i++)
		b->channels[i] = APPROVAL_CH_ALL;
	return b;
}

void approval_broker_set_channels(struct approval_broker *b, const unsigned masks[APPROVAL_RISKS])
{
	pthread_mutex_lock(&b->mu);
	for (int i = 0; i < APPROVAL_RISKS; i++)
		b->channels[i] = masks[i] & APPROVAL_CH_ALL;
	pthread_mutex_unlock(&b->mu);
}

unsigned approval_broker_timeout(const struct approval_broker *b)
{
	return b->timeout_s;
}

static void broker_destroy(struct approval_broker *b)
{
	pthread_mutex_destroy(&b->mu);
	free(b);
}

/* Called with b->mu held. */
static void audit_locked(struct approval_broker *b, json_t *event, struct lg_err **err)
{
	struct lg_err *e = NULL;

	if (b->audit == NULL) {
		json_decref(event);
		return;
	}
	if (event == NULL)
		lg_err_msg(&e, EINVAL, "cannot encode the audit entry");
	else
		audit_append(b->audit, event, &e);
	if (e != NULL) {
		if (err != NULL) {
			*err = steal_pointer(&e);
		} else {
			lg_error("audit: %s", e->msg);
			lg_err_free(&e);
		}
	}
	json_decref(event);
}

static void list_remove_locked(struct approval_broker *b, struct approval *a)
{
	if (a->prev != NULL)
		a->prev->next = a->next;
	else
		b->head = a->next;
	if (a->next != NULL)
		a->next->prev = a->prev;
	a->prev = a->next = NULL;
	b->npending--;
}

/* Drops one reference; frees a (and maybe its broker) at zero.  b->mu held. */
static bool put_locked(struct approval *a)
{
	struct approval_broker *b = a->b;

	if (--a->refs > 0)
		return false;
	pthread_cond_destroy(&a->cond);
	json_decref(a->card);
	json_decref(a->action);
	free(a->decider);
	free(a->reason);
	free(a);
	return --b->refs == 0;
}

/*
 * ch is 0 for the broker's own endings (timeout, cancel, too many).  An
 * elicitation answer is recorded as what it is: the client's report.
 */
static json_t *decision_event(const struct approval *a, enum approval_state s, unsigned ch,
			      const char *decider, const char *reason)
{
	json_t *e =
	    json_pack("{s:s, s:s, s:s, s:s, s:s?}", "type", "decision", "approval", a->id,
		      "decision", approval_state_name(s), "decider", decider, "reason", reason);

	if (e != NULL && ch != 0)
		json_object_set_new(e, "channel", json_string(approval_channel_name(ch)));
	if (e != NULL && ch == APPROVAL_CH_ELICITATION)
		json_object_set_new(e, "note",
				    json_string("the MCP client's report of its user's answer"));
	return e;
}

/*
 * Moves a pending request to its final state, records the decision, wakes
 * every waiter and drops the list's reference.  b->mu held; a is PENDING.
 *
 * Approving is the one decision that must not happen unrecorded: if the
 * audit write fails, the request stays pending and -EIO comes back (it will
 * time out, which is a deny).  Every other decision is a "no" and stands
 * even if it cannot be recorded (the failure is logged): refusing to deny
 * would be worse.
 */
static int finish_locked(struct approval *a, enum approval_state s, unsigned ch,
			 const char *decider, const char *reason, struct lg_err **err)
{
	struct approval_broker *b = a->b;
	struct lg_err *aerr = NULL;

	audit_locked(b, decision_event(a, s, ch, decider, reason),
		     s == APPROVAL_APPROVED ? &aerr : NULL);
	if (aerr != NULL) {
		lg_err_wrap(&aerr, "cannot record the approval of %s, so it is not granted", a->id);
		if (err != NULL) {
			*err = steal_pointer(&aerr);
		} else {
			lg_error("%s", aerr->msg);
			lg_err_free(&aerr);
		}
		return -EIO;
	}
	a->state = s;
	a->decider = xstrdup(decider);
	a->reason = reason != NULL ? xstrdup(reason) : NULL;
	list_remove_locked(b, a);
	pthread_cond_broadcast(&a->cond);
	/*
	 * Never the broker's last reference: every caller holds another one
	 * (the owner's, or that of a request it holds).
	 */
	put_locked(a);
	return 0;
}

/* Times out every pending request past its deadline, waiter or not.  b->mu held. */
static void expire_locked(struct approval_broker *b, uint64_t now)
{
	struct approval *a = b->head;

	while (a != NULL) {
		struct approval *next = a->next;

		if (now >= a->deadline_ms)
			finish_locked(a, APPROVAL_TIMED_OUT, 0, "timeout", NULL, NULL);
		a = next;
	}
}

static void random_id(char out[3 + ID_HEX + 1])
{
	unsigned char raw[ID_HEX / 2];
	size_t got = 0;

	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		/*
		 * Ids are bearer names for a decision over the control socket;
		 * without the kernel's randomness there is no safe fallback.
		 */
		if (n < 0) {
			lg_error("getrandom: %s", strerror(errno));
			abort();
		}
		got += (size_t)n;
	}
	memcpy(out, "ap-", 3);
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 3 + 2 * i, 3, "%02x", raw[i]);
}

static struct approval *find_locked(struct approval_broker *b, const char *id)
{
	for (struct approval *a = b->head; a != NULL; a = a->next)
		if (strcmp(a->id, id) == 0)
			return a;
	return NULL;
}

struct approval *approval_file(struct approval_broker *b, const json_t *card)
{
	return approval_file_full(b, card, NULL);
}

struct approval *approval_file_full(struct approval_broker *b, const json_t *card,
				    const json_t *action)
{
	struct approval *a = xzalloc(sizeof(*a));
	pthread_condattr_t attr;
	struct lg_err *aerr = NULL;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&a->cond, &attr);
	pthread_condattr_destroy(&attr);
	/* A deep copy: the card is read from other threads (list, audit). */
	a->card = card != NULL && json_is_object(card) ? json_deep_copy(card) : json_object();
	if (a->card == NULL)
		abort();
	a->action = action != NULL ? json_deep_copy(action) : NULL;
	a->state = APPROVAL_PENDING;
	a->created_wall = time(NULL);
	a->b = b;
	a->refs = 2; /* the caller's and the pending list's */

	pthread_mutex_lock(&b->mu);
	b->refs++;
	do
		random_id(a->id);
	while (find_locked(b, a->id) != NULL);
	a->deadline_ms = lg_now_ms() + (uint64_t)b->timeout_s * 1000;
	expire_locked(b, lg_now_ms());
	/*
	 * Who may decide is fixed now and written on the card, so every channel
	 * shows it and the audit log's request entry records it.
	 */
	a->channels = b->channels[card_risk(a->card)];
	{
		char *txt = approval_channels_text(a->channels);
		json_object_set_new(a->card, "channels", json_string(txt));
		free(txt);
	}

	/*
	 * The request is recorded before anyone can learn its id, so a
	 * decision can never precede its request in the log.  A request that
	 * cannot be recorded is denied: nothing unrecorded may be approved.
	 */
	audit_locked(b,
		     json_pack("{s:s, s:s, s:O}", "type", "approval_request", "approval", a->id,
			       "card", a->card),
		     &aerr);

	a->next = b->head;
	if (b->head != NULL)
		b->head->prev = a;
	b->head = a;
	b->npending++;
	if (aerr != NULL) {
		lg_error("approval %s: %s; denied", a->id, aerr->msg);
		lg_err_free(&aerr);
		finish_locked(a, APPROVAL_DENIED, 0, "broker", "the audit log cannot be written",
			      NULL);
	} else if (b->npending > MAX_PENDING) {
		finish_locked(a, APPROVAL_DENIED, 0, "broker", "too many pending approvals", NULL);
	}
	pthread_mutex_unlock(&b->mu);
	return a;
}

const char *approval_id(const struct approval *a)
{
	return a->id;
}

unsigned approval_channels(const struct approval *a)
{
	return a->channels; /* fixed at filing: no lock needed */
}

json_t *approval_card(struct approval *a)
{
	json_t *c;

	pthread_mutex_lock(&a->b->mu);
	c = json_deep_copy(a->card);
	pthread_mutex_unlock(&a->b->mu);
	if (c == NULL)
		abort();
	json_object_set_new(c, "approval", json_string(a->id));
	return c;
}

enum approval_state approval_wait(struct approval *a, char **decider, char **reason)
{
	struct approval_broker *b = a->b;
	struct timespec ts = {.tv_sec = (time_t)(a->deadline_ms / 1000),
			      .tv_nsec = (long)(a->deadline_ms % 1000) * 1000000L};
	enum approval_state s;

	pthread_mutex_lock(&b->mu);
	while (a->state == APPROVAL_PENDING) {
		int r = pthread_cond_timedwait(&a->cond, &b->mu, &ts);

		/*
		 * Check the clock rather than trusting ETIMEDOUT alone: the
		 * deadline is what decides, however the wait ended.
		 */
		if (a->state == APPROVAL_PENDING &&
		    (r == ETIMEDOUT || lg_now_ms() >= a->deadline_ms))
			finish_locked(a, APPROVAL_TIMED_OUT, 0, "timeout", NULL, NULL);
	}
	s = a->state;
	if (decider != NULL)
		*decider = a->decider != NULL ? xstrdup(a->decider) : NULL;
	if (reason != NULL)
		*reason = a->reason != NULL ? xstrdup(a->reason) : NULL;
	pthread_mutex_unlock(&b->mu);
	return s;
}

void approval_put(struct approval *a)
{
	struct approval_broker *b;
	bool last;

	if (a == NULL)
		return;
	b = a->b;
	pthread_mutex_lock(&b->mu);
	last = put_locked(a);
	pthread_mutex_unlock(&b->mu);
	if (last)
		broker_destroy(b);
}

/*
 * Decides a request known to be on b's list.  b->mu held.  A request past
 * its deadline is timed out first, so a decision that arrives late loses to
 * the timeout even when no waiter has woken up yet to notice.
 */
static int decide_locked(struct approval *a, bool approve, enum approval_channel ch,
			 const char *decider, const char *reason, struct lg_err **err)
{
	json_t *probe;

	/* The decision goes to the audit log as JSON, which holds only UTF-8. */
	if (decider == NULL)
		decider = "unknown";
	probe = json_pack("[s, s?]", decider, reason);
	if (probe == NULL)
		return lg_err_msg(err, EINVAL, "the decider or reason is not valid UTF-8");
	json_decref(probe);
	if (lg_now_ms() >= a->deadline_ms) {
		finish_locked(a, APPROVAL_TIMED_OUT, 0, "timeout", NULL, NULL);
		return lg_err_msg(err, ENOENT, "approval %s is not pending (it timed out)", a->id);
	}
	/*
	 * A channel the operator did not trust for this risk (say, elicitation,
	 * which a compromised client can answer itself) is refused, a yes and a
	 * no alike: the request waits for a channel that reaches the human.
	 * The refusal is recorded, since it may be the trace of an attack.
	 */
	if ((a->channels & (unsigned)ch) == 0 || ((unsigned)ch & ~APPROVAL_CH_ALL) != 0 ||
	    ch == 0) {
		cleanup_free char *allowed = approval_channels_text(a->channels);
		const char *risk = json_string_value(json_object_get(a->card, "risk"));

		audit_locked(a->b,
			     json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?}", "type",
				       "decision_refused", "approval", a->id, "channel",
				       approval_channel_name(ch), "decider", decider, "allowed",
				       allowed, "reason", reason),
			     NULL);
		lg_warn("approval %s: a decision through %s (%s) was refused: only %s may decide "
			"it",
			a->id, approval_channel_name(ch), decider, allowed);
		return lg_err_msg(err, EPERM,
				  "approval %s (risk %s) cannot be decided through %s; it may be "
				  "decided through: %s",
				  a->id, risk != NULL ? risk : "unknown", approval_channel_name(ch),
				  allowed);
	}
	return finish_locked(a, approve ? APPROVAL_APPROVED : APPROVAL_DENIED, (unsigned)ch,
			     decider, reason, err);
}

int approval_decide(struct approval_broker *b, const char *id, bool approve,
		    enum approval_channel ch, const char *decider, const char *reason,
		    struct lg_err **err)
{
	struct approval *a;
	int r;

	if (id == NULL)
		return lg_err_msg(err, EINVAL, "no approval id");
	pthread_mutex_lock(&b->mu);
	a = find_locked(b, id);
	if (a == NULL) {
		pthread_mutex_unlock(&b->mu);
		return lg_err_msg(err, ENOENT, "approval %s is not pending", id);
	}
	r = decide_locked(a, approve, ch, decider, reason, err);
	pthread_mutex_unlock(&b->mu);
	return r;
}

int approval_decide_ref(struct approval *a, bool approve, enum approval_channel ch,
			const char *decider, const char *reason)
{
	struct approval_broker *b = a->b;
	int r = -ENOENT;

	pthread_mutex_lock(&b->mu);
	if (a->state == APPROVAL_PENDING)
		r = decide_locked(a, approve, ch, decider, reason, NULL);
	pthread_mutex_unlock(&b->mu);
	return r;
}

void approval_cancel(struct approval *a)
{
	struct approval_broker *b = a->b;

	pthread_mutex_lock(&b->mu);
	if (a->state == APPROVAL_PENDING)
		finish_locked(a, APPROVAL_CANCELLED, 0, "session",
			      "the session that asked went away", NULL);
	pthread_mutex_unlock(&b->mu);
}

json_t *approval_list_pending(struct approval_broker *b)
{
	json_t *arr = json_array();
	struct approval *a;
	uint64_t now;

	pthread_mutex_lock(&b->mu);
	now = lg_now_ms();
	expire_locked(b, now);
	/* The list is newest first; people read oldest first. */
	a = b->head;
	while (a != NULL && a->next != NULL)
		a = a->next;
	for (; a != NULL; a = a->prev) {
		json_array_append_new(arr,
				      json_pack("{s:s, s:o, s:I, s:I}", "id", a->id, "card",
						json_deep_copy(a->card), "created",
						(json_int_t)a->created_wall, "expires_in_s",
						(json_int_t)((a->deadline_ms - now + 999) / 1000)));
	}
	pthread_mutex_unlock(&b->mu);
	return arr;
}

json_t *approval_show(struct approval_broker *b, const char *id)
{
	struct approval *a;
	json_t *r = NULL;
	uint64_t now;

	if (id == NULL)
		return NULL;
	pthread_mutex_lock(&b->mu);
	now = lg_now_ms();
	expire_locked(b, now);
	a = find_locked(b, id);
	if (a != NULL)
		r = json_pack("{s:s, s:o, s:o, s:I, s:I}", "id", a->id, "card",
			      json_deep_copy(a->card), "action",
			      a->action != NULL ? json_deep_copy(a->action) : json_null(),
			      "created", (json_int_t)a->created_wall, "expires_in_s",
			      (json_int_t)((a->deadline_ms - now + 999) / 1000));
	pthread_mutex_unlock(&b->mu);
	return r;
}

void approval_broker_free(struct approval_broker *b)
{
	bool last;

	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	while (b->head != NULL)
		finish_locked(b->head, APPROVAL_CANCELLED, 0, "shutdown",
			      "the server is shutting down", NULL);
	b->audit = NULL; /* the owner may close it as soon as we return */
	last = --b->refs == 0;
	pthread_mutex_unlock(&b->mu);
	if (last)
		broker_destroy(b);
}
