/*
 * The upload engine.
 *
 * DESIGN
 * A node with work is put on one FIFO queue (holding a reference); a fixed
 * set of workers pops nodes whose retry time has come and drives each one
 * until it has nothing left to send right now. Every decision about what to
 * send next comes from plan_next(); this file only carries it out and reacts
 * to the outcome. All upload state lives in the node under the catalog lock;
 * a worker drops the lock for every request and re-reads the node after,
 * since writers, unlink and O_TRUNC may have changed it meanwhile.
 *
 * Per-file states (upload.state), and what holds in each:
 *   QUEUED     not created on the server, or waiting for its next chunk
 *   UPLOADING  a worker is sending it (or it waits for more data once created)
 *   RETRYING   a transient failure; queued with not_before in the future
 *   UPLOADED   server offset == declared length == spooled size
 *   FAILED     permanent refusal; err = -EIO, message says why; spool kept
 *   EMPTY      sealed at 0 bytes; never created on the server
 * A write below sent_mark, a truncation, or a new generation (O_TRUNC) sets
 * restart (core/upload.h has those transitions): the worker drops the old
 * upload (DELETE unless it was complete) and starts again from the spool.
 *
 * Outcomes: RETRY backs off exponentially with jitter (capped at a minute,
 * Retry-After honoured) and re-reads the offset with HEAD before sending
 * again; CONFLICT re-reads it at once; GONE starts a new upload from the
 * spool; FATAL fails the file for good. Other files keep moving meanwhile.
 *
 * The last byte. The service completes an upload inside the PATCH that
 * carries its last byte: it checks the file, moves it away (404 from then
 * on) and decodes it before answering (BACKEND.md 1b). So before that
 * request goes, final_sent is journaled, and from then on the upload is
 * never sent again:
 *   answer 2xx                      UPLOADED, task queued
 *   404/410 (PATCH or HEAD)         taken: UPLOADED, task starting *
 *   timeout, lost, 5xx, 524, 409    HEAD decides: 404 taken; complete:
 *                                   UPLOADED; short: send the rest
 *   4xx, 500, and HEAD complete     UPLOADED, transcription failed now
 *   4xx, HEAD short                 FAILED as before
 * (* without a task API, a 404 still means lost: upload again.) The answer
 * may take minutes, so it has its own bound (answer_timeout_s), not the
 * stall timeout; a PATCH that completes an upload HEAD shows complete is
 * never sent, since the service would run its hook again.
 */
#include "tusfs_setup.h"
#include "core/engine.h"
#include "core/clock.h"
#include "core/journal.h"
#include "core/log.h"
#include "core/meta.h"
#include "core/plan.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define BACKOFF_CAP_S	  60
#define RETRY_AFTER_CAP_S 3600
/* Conflicts or vanished uploads in a row before backing off. */
#define HOT_RETRIES 3

/* The mount-wide bandwidth limit (-o max_rate, `tusfs limit`). Its own
 * lock: the transport reads bodies without the catalog's. */
struct rate_limit {
	pthread_mutex_t lock;
	atomic_uint_fast64_t rate; /* bytes per second; 0: none */
	struct timespec next;	   /* when the next byte may go */
};

struct worker {
	struct engine *e;
	pthread_t thread;
	struct tus_http *http;
	struct tus_client *tus;
};

struct engine {
	struct catalog *cat;
	struct spool *spool;
	struct journal *journal;
	char *endpoint;
	char *language;
	char *temp_names;
	struct poller *poller;
	struct transport_factory transport;
	struct tus_server server;
	/* Bytes per PATCH: -o chunk_size, or less once a 413 taught that
	 * the endpoint (a proxy in front) takes no more; catalog lock. */
	uint64_t chunk_size;
	long answer_timeout_s;
	void (*learned)(void *arg, uint64_t max_body);
	void *learned_arg;
	unsigned nworkers;
	unsigned started;
	struct worker *workers;
	pthread_cond_t work_cv;	    /* workers wait here for the queue */
	pthread_cond_t progress_cv; /* fsync waits here for confirmations */
	struct node *qhead, *qtail; /* protected by catalog lock */
	bool running;		    /* protected by catalog lock */
	bool stopped;		    /* protected by catalog lock */
	/* Set at shutdown: every request in flight gives up. */
	atomic_int abort_all;
	struct rate_limit limit;
	/* Completed files whose spool is kept, least recently completed
	 * first; protected by catalog lock. */
	struct node *cache_head, *cache_tail;
	uint64_t cache_bytes, cache_size;
};

enum step_result {
	STEP_CONTINUE, /* decide the next step now */
	STEP_IDLE,     /* nothing to do until kicked */
	STEP_LATER,    /* retry at up.not_before */
};

static pthread_mutex_t *mutex(struct engine *e)
{
	return catalog_mutex(e->cat);
}

static void enqueue(struct engine *e, struct node *n)
{
	catalog_get(n);
	n->up.queued = true;
	n->up.qnext = NULL;
	if (e->qtail)
		e->qtail->up.qnext = n;
	else
		e->qhead = n;
	e->qtail = n;
	/* Every sleeper re-reads the queue: one may wait for a later retry. */
	pthread_cond_broadcast(&e->work_cv);
}

void engine_kick(struct engine *e, struct node *n)
{
	/* Before engine_start the queue fills (restored uploads); after
	 * engine_stop nothing is taken on. */
	if (e->stopped)
		return;
	if (n->unlinked) {
		/* No backoff for a goodbye; and fsync on it returns now. */
		n->up.not_before = (struct timespec){0};
		pthread_cond_broadcast(&e->progress_cv);
	}
	if (n->up.active)
		n->up.kicked = true;
	else if (n->up.queued)
		pthread_cond_broadcast(&e->work_cv);
	else
		enqueue(e, n);
}

/*
 * Unlinks and returns the first node whose retry time has come. If none,
 * *wake is the earliest retry time (or zero when the queue is empty).
 */
static struct node *pop_ready(struct engine *e, struct timespec *wake)
{
	struct node **pp = &e->qhead, *prev = NULL;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	*wake = (struct timespec){0};
	for (struct node *n = e->qhead; n; prev = n, n = n->up.qnext) {
		if (!ts_before(&now, &n->up.not_before)) {
			*pp = n->up.qnext;
			if (e->qtail == n)
				e->qtail = prev;
			n->up.queued = false;
			return n;
		}
		if ((wake->tv_sec == 0 && wake->tv_nsec == 0) ||
		    ts_before(&n->up.not_before, wake))
			*wake = n->up.not_before;
		pp = &n->up.qnext;
	}
	return NULL;
}

static void set_message(struct node *n, const char *msg)
{
	if (msg == n->up.message)
		return;
	free(n->up.message);
	n->up.message = msg ? strdup(msg) : NULL;
}

static void fail_upload(struct engine *e, struct node *n, const char *msg)
{
	n->up.state = UPLOAD_FAILED;
	n->up.err = -EIO;
	set_message(n, msg);
	log_error("'%s': upload failed: %s", n->name, msg);
	journal_mark(e->journal, n);
	pthread_cond_broadcast(&e->progress_cv);
}

static enum step_result schedule_retry(struct engine *e, struct node *n,
				       const struct tus_status *st)
{
	unsigned shift = n->up.attempts < 7 ? n->up.attempts : 6;
	long ms = 1000L << shift;
	unsigned short r = 0;
	struct timespec *t = &n->up.not_before;

	n->up.attempts++;
	if (ms > BACKOFF_CAP_S * 1000L)
		ms = BACKOFF_CAP_S * 1000L;
	/* Jitter in [ms/2, ms] keeps many clients from retrying in step. */
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) < 0)
		r = (unsigned short)n->ino;
	ms = ms / 2 + (long)((unsigned long)ms / 2 * r / USHRT_MAX);
	if (st->retry_after >= 0)
		ms = (st->retry_after > RETRY_AFTER_CAP_S ? RETRY_AFTER_CAP_S
							  : st->retry_after) *
		     1000L;
	*t = ts_in_ms((uint64_t)ms);
	n->up.state = UPLOAD_RETRYING;
	n->up.need_head = n->up.url != NULL;
	set_message(n, st->message);
	journal_mark(e->journal, n);
	log_warn("'%s': %s; retry %u in %ld ms", n->name, st->message,
		 n->up.attempts, ms);
	return STEP_LATER;
}

/* Forgets the server's copy so the next step creates a new upload. */
static void forget_upload(struct engine *e, struct node *n)
{
	free(n->up.url);
	n->up.url = NULL;
	n->up.offset = 0;
	n->up.sent_mark = 0;
	n->up.declared_length = TUS_LENGTH_UNKNOWN;
	n->up.need_head = false;
	n->up.final_sent = false;
	n->up.final_answer = FINAL_UNSEEN;
	journal_mark(e->journal, n);
}

/* Whether a task API tells how an upload went (-o transcripts). */
static bool has_tasks(const struct engine *e)
{
	return e->poller && poller_transcripts(e->poller);
}

/*
 * A 404 for an upload whose last byte may have gone: the service took the
 * file (it moves it away before it answers). Sending it again would start
 * a second transcription, so it counts as uploaded and its task decides.
 */
static enum step_result taken(struct engine *e, struct node *n, const char *why)
{
	log_info("'%s': %s after its last byte was sent: the server took the "
		 "file; its task decides",
		 n->name, why);
	n->up.offset = n->size;
	n->up.declared_length = (int64_t)n->size;
	n->up.need_head = false;
	journal_mark(e->journal, n);
	return STEP_CONTINUE;
}

static bool upload_complete(const struct node *n)
{
	return n->up.url && n->up.declared_length != TUS_LENGTH_UNKNOWN &&
	       n->up.offset == (uint64_t)n->up.declared_length;
}

/*
 * Terminates n's upload on the server, lock dropped around the DELETE. A
 * completed upload is left alone unless even_complete: its task belongs to
 * the user, unless its bytes are known to be stale.
 */
static enum step_result drop_remote(struct worker *w, struct node *n,
				    bool even_complete)
{
	struct engine *e = w->e;
	struct tus_status st;
	enum tus_outcome o;
	char *url;

	if (!n->up.url || (upload_complete(n) && !even_complete) ||
	    !(e->server.extensions & TUS_EXT_TERMINATION)) {
		forget_upload(e, n);
		return STEP_CONTINUE;
	}
	url = strdup(n->up.url);
	if (!url)
		return STEP_IDLE;
	pthread_mutex_unlock(mutex(e));
	o = tus_terminate(w->tus, url, &st);
	pthread_mutex_lock(mutex(e));
	if (o == TUS_RETRY && n->up.attempts < HOT_RETRIES + 2) {
		free(url);
		return schedule_retry(e, n, &st);
	}
	if (o == TUS_OK)
		log_info("'%s': terminated %s", n->name, url);
	else
		log_warn("'%s': could not terminate %s: %s", n->name, url,
			 st.message);
	free(url);
	forget_upload(e, n);
	return STEP_CONTINUE;
}

/*
 * Drops a stale upload and starts over. A new generation (O_TRUNC) keeps
 * the earlier, complete version on the server; a rewrite of sent bytes
 * deletes it, and the new upload gets a new taskId either way.
 */
static enum step_result restart(struct worker *w, struct node *n)
{
	bool rewrite = !n->up.new_generation;
	enum step_result r = drop_remote(w, n, rewrite);

	if (r != STEP_CONTINUE)
		return r;
	if (rewrite) {
		if (upload_new_task(&n->up) < 0)
			return STEP_IDLE;
		if (w->e->poller)
			poller_new_upload(w->e->poller, n);
		log_info("'%s': sent bytes were rewritten; starting over",
			 n->name);
	}
	n->up.restart = false;
	n->up.new_generation = false;
	/* A rename to a temporary name may have aborted the request. */
	atomic_store(&n->up.cancel, 0);
	/* Whatever the spool holds now is what goes up. */
	n->up.verify = false;
	n->up.attempts = 0;
	n->up.state = UPLOAD_QUEUED;
	journal_mark(w->e->journal, n);
	return STEP_CONTINUE;
}

/* Re-reads the server's offset (and length) with HEAD. */
static enum step_result resync(struct worker *w, struct node *n)
{
	struct engine *e = w->e;
	struct tus_status st;
	enum tus_outcome o;
	uint64_t offset;
	int64_t length;
	char *url = strdup(n->up.url);

	if (!url)
		return STEP_IDLE;
	pthread_mutex_unlock(mutex(e));
	o = tus_head(w->tus, url, &offset, &length, &st);
	pthread_mutex_lock(mutex(e));
	free(url);
	switch (o) {
	case TUS_OK:
		if (offset > n->up.sent_mark) {
			fail_upload(e, n,
				    "HEAD: server claims more bytes than were "
				    "sent");
			return STEP_IDLE;
		}
		n->up.offset = offset;
		n->up.declared_length = length;
		n->up.need_head = false;
		journal_mark(e->journal, n);
		pthread_cond_broadcast(&e->progress_cv);
		log_debug("'%s': server offset is %llu", n->name,
			  (unsigned long long)offset);
		/* A refusal of the last byte that did not even store it. */
		if (n->up.final_answer == FINAL_REFUSED &&
		    !upload_complete(n)) {
			fail_upload(e, n, n->up.message);
			return STEP_IDLE;
		}
		return STEP_CONTINUE;
	case TUS_GONE:
		if (n->up.final_sent && has_tasks(e))
			return taken(e, n, st.message);
		log_warn("'%s': %s; uploading again from the spool", n->name,
			 st.message);
		forget_upload(e, n);
		return STEP_CONTINUE;
	case TUS_FATAL:
		fail_upload(e, n, st.message);
		return STEP_IDLE;
	case TUS_CANCELED:
		return STEP_CONTINUE;
	default:
		return schedule_retry(e, n, &st);
	}
}

static char *build_metadata(const struct engine *e, const struct node *n)
{
	struct tus_meta_pair pairs[5];
	const char *type = meta_mime_type(n->name);
	char rel[CATALOG_MAX_RELPATH + 1];
	size_t k = 0;
	int len;

	pairs[k++] =
	    (struct tus_meta_pair){"filename", n->name, strlen(n->name)};
	pairs[k++] = (struct tus_meta_pair){"filetype", type, strlen(type)};
	pairs[k++] = (struct tus_meta_pair){"taskId", n->up.task_id,
					    strlen(n->up.task_id)};
	if (e->language)
		pairs[k++] = (struct tus_meta_pair){"language", e->language,
						    strlen(e->language)};
	len = catalog_relpath(n, rel, sizeof(rel));
	if (n->parent && n->parent->parent && len > 0)
		pairs[k++] =
		    (struct tus_meta_pair){"relativePath", rel, (size_t)len};
	return tus_metadata_encode(pairs, k);
}

/*
 * The bandwidth limit: holds a reader until its len bytes are due on the
 * limit's clock (GCRA: every byte moves the clock 1/rate s on; time idle
 * earns no credit, so no burst follows a pause). It sleeps in slices, so
 * a changed limit, a cancel or a shutdown is noticed within 100 ms.
 */
static void throttle(struct engine *e, size_t len, const atomic_int *cancel)
{
	struct rate_limit *rl = &e->limit;
	struct timespec now, due;

	if (atomic_load(&rl->rate) == 0)
		return;
	pthread_mutex_lock(&rl->lock);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (ts_before(&rl->next, &now))
		rl->next = now;
	due = rl->next;
	ts_add_ns(&rl->next, (uint64_t)((double)len * 1e9 /
					(double)atomic_load(&rl->rate)));
	pthread_mutex_unlock(&rl->lock);
	while (ts_before(&now, &due) && atomic_load(&rl->rate) != 0 &&
	       !atomic_load(cancel) && !atomic_load(&e->abort_all)) {
		struct timespec slice = {0, 100000000L};
		uint64_t left =
		    (uint64_t)(due.tv_sec - now.tv_sec) * 1000000000ULL +
		    (uint64_t)due.tv_nsec - (uint64_t)now.tv_nsec;

		if (left < 100000000ULL)
			slice.tv_nsec = (long)left;
		nanosleep(&slice, NULL);
		clock_gettime(CLOCK_MONOTONIC, &now);
	}
}

void engine_set_rate(struct engine *e, uint64_t rate)
{
	pthread_mutex_lock(&e->limit.lock);
	atomic_store(&e->limit.rate, rate);
	/* The new rate counts from now, not from the old one's debts. */
	clock_gettime(CLOCK_MONOTONIC, &e->limit.next);
	pthread_mutex_unlock(&e->limit.lock);
	if (rate)
		log_info("bandwidth limit: %llu bytes/s",
			 (unsigned long long)rate);
	else
		log_info("bandwidth limit: off");
}

uint64_t engine_rate(const struct engine *e)
{
	return atomic_load(&e->limit.rate);
}

/* A request body from the spool that notes how far the transport read, for
 * the rate NAME.status shows, and keeps to the bandwidth limit. */
struct counted_source {
	struct tus_http_fd_source fd;
	struct engine *e;
	struct node *n;
};

static ssize_t counted_read(void *arg, char *buf, size_t n, uint64_t off)
{
	struct counted_source *src = arg;
	ssize_t r;

	/* Canceled: what the spool holds may no longer be this upload's
	 * (O_TRUNC), and the transport may ask before it notices. */
	if (atomic_load(&src->n->up.cancel))
		return -ECANCELED;
	r = tus_http_fd_read(&src->fd, buf, n, off);
	if (r > 0) {
		throttle(src->e, (size_t)r, &src->n->up.cancel);
		atomic_store(&src->n->up.wire, off + (uint64_t)r);
	}
	return r;
}

/* Notes the speed of a finished request of len body bytes. Lock held. */
static void note_rate(struct node *n, uint64_t len)
{
	struct timespec now;
	double s;

	clock_gettime(CLOCK_MONOTONIC, &now);
	s = (double)(now.tv_sec - n->up.req_start.tv_sec) +
	    (double)(now.tv_nsec - n->up.req_start.tv_nsec) / 1e9;
	if (len > 0 && s > 0)
		n->up.rate = (double)len / s;
	atomic_store(&n->up.wire, 0);
	n->up.req_start = (struct timespec){0};
}

/*
 * Sends step's request (to url, or a creation with meta) with the lock
 * dropped around it, and notes its rate. *new_url is a created upload's
 * URL.
 */
static enum tus_outcome send_request(struct worker *w, struct node *n,
				     const struct plan_step *step,
				     const char *url, const char *meta,
				     char **new_url, uint64_t *offset,
				     struct tus_status *st)
{
	struct engine *e = w->e;
	struct counted_source src = {.fd.base = step->offset, .e = e, .n = n};
	struct tus_http_body body = {
	    .read = counted_read, .arg = &src, .length = step->body_len};
	enum tus_outcome o;

	pthread_mutex_unlock(mutex(e));
	src.fd.fd = spool_open(e->spool, n->ino, O_RDONLY);
	if (src.fd.fd < 0) {
		o = TUS_FATAL;
		snprintf(st->message, sizeof(st->message),
			 "cannot open spool file: %s", strerror(-src.fd.fd));
	} else if (!url) {
		struct tus_create_req req = {
		    .length = step->length,
		    .metadata = meta,
		    .body = step->body_len ? &body : NULL,
		    .cancel = &n->up.cancel,
		};
		o = tus_create(w->tus, &req, new_url, offset, st);
	} else {
		struct tus_patch_req req = {
		    .url = url,
		    .offset = step->offset,
		    .body = &body,
		    .length = step->length,
		    .cancel = &n->up.cancel,
		    .answer_timeout_s = step->final ? e->answer_timeout_s : 0,
		};
		o = tus_patch(w->tus, &req, offset, st);
	}
	if (src.fd.fd >= 0)
		close(src.fd.fd);
	pthread_mutex_lock(mutex(e));
	note_rate(n, o == TUS_OK ? step->body_len : 0);
	return o;
}

/*
 * Notes what the answer to the request carrying the last byte said; HEAD
 * decides what it means (resync, finish). Lock held.
 */
static void note_final_answer(struct node *n, enum tus_outcome o,
			      const struct tus_status *st)
{
	if (o == TUS_OK)
		n->up.final_answer = FINAL_ACCEPTED;
	else if (o == TUS_FATAL)
		n->up.final_answer = FINAL_REFUSED;
	else if (st->http_status == 500)
		n->up.final_answer = FINAL_ERROR;
	else
		n->up.final_answer = FINAL_UNSEEN;
}

/*
 * A PATCH body refused with 413: almost always a proxy's body limit (nginx
 * takes 1 MiB by default), which a smaller request passes. Halves the
 * request size for the whole endpoint, down to ENGINE_MIN_BODY, and goes
 * on from the server's offset; a body refused at that floor fails the
 * file. Lock held.
 */
static enum step_result shrink(struct engine *e, struct node *n,
			       const struct plan_step *step,
			       const struct tus_status *st)
{
	/* Whole 64 KiB units keep later reads of the spool aligned. */
	uint64_t half = step->body_len / 2 / ENGINE_MIN_BODY * ENGINE_MIN_BODY;

	if (step->body_len <= ENGINE_MIN_BODY) {
		char msg[sizeof(st->message) + 128];

		snprintf(msg, sizeof(msg),
			 "%s (a request body of %llu bytes was refused, and "
			 "tusfs sends no less than %d)",
			 st->message, (unsigned long long)step->body_len,
			 ENGINE_MIN_BODY);
		fail_upload(e, n, msg);
		return STEP_IDLE;
	}
	if (half < ENGINE_MIN_BODY)
		half = ENGINE_MIN_BODY;
	/* Workers refused at once all halve from the same size: once. */
	if (half < e->chunk_size) {
		e->chunk_size = half;
		log_warn("the endpoint refuses request bodies of %llu bytes "
			 "(413); sending at most %llu bytes per request from "
			 "now on",
			 (unsigned long long)step->body_len,
			 (unsigned long long)half);
		if (e->learned)
			e->learned(e->learned_arg, half);
	}
	n->up.need_head = n->up.url != NULL;
	return STEP_CONTINUE;
}

/* Acts on the outcome o of step's request. Lock held. */
static enum step_result take_outcome(struct engine *e, struct node *n,
				     const struct plan_step *step,
				     enum tus_outcome o, char *new_url,
				     uint64_t offset, struct tus_status *st)
{
	if (o == TUS_FATAL && st->http_status == 413 &&
	    step->action == PLAN_PATCH && step->body_len > 0)
		return shrink(e, n, step, st);
	if (step->final)
		note_final_answer(n, o, st);
	if (n->up.final_sent && o == TUS_GONE && has_tasks(e))
		return taken(e, n, st->message);
	/* Refused: was the file stored whole first? HEAD tells. */
	if (step->final && o == TUS_FATAL && n->up.url) {
		set_message(n, st->message);
		n->up.need_head = true;
		return STEP_CONTINUE;
	}
	switch (o) {
	case TUS_OK:
		if (new_url) {
			n->up.url = new_url;
			n->up.url_durable = false;
			log_debug("'%s': created %s", n->name, new_url);
		}
		n->up.offset = offset;
		if (step->length != TUS_LENGTH_UNKNOWN)
			n->up.declared_length = step->length;
		n->up.attempts = 0;
		set_message(n, NULL);
		journal_mark(e->journal, n);
		pthread_cond_broadcast(&e->progress_cv);
		break;
	case TUS_CONFLICT:
	case TUS_GONE:
		log_warn("'%s': %s", n->name, st->message);
		if (++n->up.attempts > HOT_RETRIES)
			return schedule_retry(e, n, st);
		if (o == TUS_GONE)
			forget_upload(e, n);
		else
			n->up.need_head = true;
		break;
	case TUS_RETRY:
		return schedule_retry(e, n, st);
	case TUS_FATAL:
		fail_upload(e, n, st->message);
		return STEP_IDLE;
	case TUS_CANCELED:
		/* Unlink or shutdown; what reached the server is unknown. */
		n->up.need_head = n->up.url != NULL;
		break;
	}
	return STEP_CONTINUE;
}

/* Carries out a CREATE or PATCH step, lock dropped around the request. */
static enum step_result send_step(struct worker *w, struct node *n,
				  const struct plan_step *step)
{
	struct engine *e = w->e;
	bool create = step->action == PLAN_CREATE;
	struct tus_status st = {.retry_after = -1};
	enum tus_outcome o;
	uint64_t offset = 0;
	char *url, *meta, *new_url = NULL;

	/* The URL must survive a crash before the first PATCH goes: a lost
	 * URL means sending every byte again. So must final_sent before the
	 * last byte goes: a 404 after it means taken, not lost. */
	if (!create &&
	    (!n->up.url_durable || (step->final && !n->up.final_sent))) {
		int rc;

		n->up.final_sent |= step->final;
		rc = journal_sync(e->journal, n);

		if (rc < 0) {
			st.err = rc;
			snprintf(st.message, sizeof(st.message),
				 "cannot save the upload URL: %s",
				 strerror(-rc));
			return schedule_retry(e, n, &st);
		}
		/* The lock was dropped: plan again from what is now. */
		n->up.url_durable = n->up.url != NULL;
		return STEP_CONTINUE;
	}
	/* plan_next() creates first: it patches only an upload with a URL. */
	assert(create || n->up.url);
	url = create ? NULL : strdup(n->up.url);
	meta = create ? build_metadata(e, n) : NULL;
	if ((create && !meta) || (!create && !url)) {
		free(url);
		free(meta);
		st.err = -ENOMEM;
		strcpy(st.message, "out of memory");
		return schedule_retry(e, n, &st);
	}
	if (n->up.sent_mark < step->offset + step->body_len)
		n->up.sent_mark = step->offset + step->body_len;
	n->up.state = UPLOAD_UPLOADING;
	n->up.req_base = step->offset;
	atomic_store(&n->up.wire, 0);
	clock_gettime(CLOCK_MONOTONIC, &n->up.req_start);
	o = send_request(w, n, step, url, meta, &new_url, &offset, &st);
	free(url);
	free(meta);
	return take_outcome(e, n, step, o, new_url, offset, &st);
}

/* Drops n's spool from the cache list (it is rewritten, or gone). */
static void cache_drop(struct engine *e, struct node *n)
{
	if (!n->up.cached)
		return;
	if (n->up.cprev)
		n->up.cprev->up.cnext = n->up.cnext;
	else
		e->cache_head = n->up.cnext;
	if (n->up.cnext)
		n->up.cnext->up.cprev = n->up.cprev;
	else
		e->cache_tail = n->up.cprev;
	n->up.cprev = n->up.cnext = NULL;
	n->up.cached = false;
	e->cache_bytes -= n->up.cache_len;
	catalog_put(e->cat, n);
}

/*
 * Keeps a completed file's spool for reading back, releasing the oldest
 * ones past the budget. The unlink happens under the lock, so an O_TRUNC
 * reopen (which leaves the list under the same lock) can never lose its
 * new bytes to a late eviction.
 */
static void cache_add(struct engine *e, struct node *n)
{
	if (n->up.cached || n->size == 0)
		return;
	catalog_get(n);
	n->up.cached = true;
	n->up.cprev = e->cache_tail;
	n->up.cnext = NULL;
	if (e->cache_tail)
		e->cache_tail->up.cnext = n;
	else
		e->cache_head = n;
	e->cache_tail = n;
	n->up.cache_len = n->size;
	e->cache_bytes += n->size;
	while (e->cache_bytes > e->cache_size && e->cache_head) {
		struct node *old = e->cache_head;

		log_debug("'%s': releasing its spool (uploaded)", old->name);
		spool_remove(e->spool, old->ino);
		cache_drop(e, old);
	}
}

int engine_release_cache(struct engine *e)
{
	int released = 0;

	while (e->cache_head) {
		spool_remove(e->spool, e->cache_head->ino);
		cache_drop(e, e->cache_head);
		released++;
	}
	return released;
}

static void finish(struct engine *e, struct node *n)
{
	if (n->up.url) {
		enum final_answer a = n->up.final_answer;
		bool refused = a == FINAL_REFUSED || a == FINAL_ERROR;

		if (n->up.state != UPLOAD_UPLOADED)
			log_info("'%s': uploaded %llu bytes to %s", n->name,
				 (unsigned long long)n->size, n->up.url);
		n->up.state = UPLOAD_UPLOADED;
		/* A refused file's spool stays, whatever the cache's budget. */
		if (!refused)
			cache_add(e, n);
		if (e->poller)
			poller_upload_done(e->poller, n, a);
		set_message(n, NULL);
	} else {
		n->up.state = UPLOAD_EMPTY;
	}
	journal_mark(e->journal, n);
	pthread_cond_broadcast(&e->progress_cv);
}

/*
 * Takes the xxh3 fingerprint of a sealed spool (journaled, so a later
 * mount can tell the spool is still what was written), or, for a restored
 * file, checks it. A file written front to back has it from its writes
 * already (fs.c); otherwise the spool is read, lock dropped meanwhile.
 */
static enum step_result fingerprint(struct worker *w, struct node *n)
{
	struct engine *e = w->e;
	bool verify = n->up.verify;
	uint64_t gen = n->up.content_gen;
	uint64_t len = verify ? n->up.fp_size : n->size;
	bool streamed = !verify && n->up.stream &&
			n->up.stream_gen == n->up.content_gen &&
			spool_stream_len(n->up.stream) == len;
	uint64_t hash = streamed ? spool_stream_digest(n->up.stream) : 0;
	int rc = 0;

	/* Used, or stale; a writer coming meanwhile starts its own. */
	spool_stream_free(n->up.stream);
	n->up.stream = NULL;
	if (streamed) {
		log_debug("'%s': fingerprint taken from the writes", n->name);
	} else {
		log_debug("'%s': fingerprint read from the spool", n->name);
		pthread_mutex_unlock(mutex(e));
		rc = spool_hash(e->spool, n->ino, len, &hash, &e->abort_all);
		pthread_mutex_lock(mutex(e));
	}
	if (rc == -ECANCELED)
		return STEP_CONTINUE; /* unlinked or stopping */
	/* Appends leave the checked prefix alone; a rewrite of it sets
	 * restart, which ends the check. */
	if (verify && n->up.verify) {
		n->up.verify = false;
		if (rc < 0 || hash != n->up.fp_hash) {
			fail_upload(e, n,
				    "the spool file no longer matches what "
				    "was written (xxh3 fingerprint differs); "
				    "not sending it");
			return STEP_IDLE;
		}
		return STEP_CONTINUE;
	}
	/* Reopened or written meanwhile: take it again once sealed. */
	if (verify || n->up.content_gen != gen || n->writers > 0)
		return STEP_CONTINUE;
	if (rc < 0) {
		struct tus_status st = {.err = rc, .retry_after = -1};

		snprintf(st.message, sizeof(st.message),
			 "cannot read the spool file: %s", strerror(-rc));
		return schedule_retry(e, n, &st);
	}
	n->up.fp_valid = true;
	n->up.fp_size = len;
	n->up.fp_hash = hash;
	journal_mark(e->journal, n);
	return STEP_CONTINUE;
}

/* Drives n until it has nothing to send right now. Lock held. */
static enum step_result process(struct worker *w, struct node *n)
{
	struct engine *e = w->e;
	enum step_result r = STEP_CONTINUE;

	while (r == STEP_CONTINUE && e->running) {
		struct plan_input in;
		struct plan_step step;

		if (n->unlinked) {
			cache_drop(e, n);
			r = drop_remote(w, n, false);
			return r == STEP_LATER ? r : STEP_IDLE;
		}
		/* Paused: nothing goes, not even a restart's DELETE. */
		if (n->paused && !upload_complete(n))
			return STEP_IDLE;
		if (n->up.restart) {
			r = restart(w, n);
			continue;
		}
		if (n->up.state == UPLOAD_FAILED)
			return STEP_IDLE;
		if (n->up.hold && !upload_complete(n)) {
			n->up.state = UPLOAD_QUEUED;
			return STEP_IDLE;
		}
		if (n->up.verify || (n->writers == 0 && n->size > 0 &&
				     !upload_complete(n) && !n->up.fp_valid)) {
			r = fingerprint(w, n);
			continue;
		}
		if (n->up.need_head && n->up.url) {
			r = resync(w, n);
			continue;
		}
		in = (struct plan_input){
		    .created = n->up.url != NULL,
		    .sealed = n->writers == 0,
		    .declared_length = n->up.declared_length,
		    .size = n->size,
		    .offset = n->up.offset,
		    .sync_target = n->up.sync_target,
		    .chunk_size = e->chunk_size,
		    .extensions = e->server.extensions,
		};
		step = plan_next(&in);
		switch (step.action) {
		case PLAN_WAIT:
			n->up.state =
			    n->up.url ? UPLOAD_UPLOADING : UPLOAD_QUEUED;
			return STEP_IDLE;
		case PLAN_DONE:
			finish(e, n);
			return STEP_IDLE;
		case PLAN_RESTART:
			n->up.restart = true;
			break;
		case PLAN_CREATE:
		case PLAN_PATCH:
			r = send_step(w, n, &step);
			break;
		}
	}
	return r;
}

#ifdef NDEBUG
void engine_check(const struct engine *e, const struct node *n)
{
	(void)e;
	(void)n;
}
#else
/*
 * Whether n has bytes the engine must send without being asked again: a
 * sealed file not yet complete, or bytes an fsync waits for. Lock held.
 */
static bool needs_driving(const struct engine *e, const struct node *n)
{
	if (!e->running || n->unlinked || !S_ISREG(n->mode) || n->up.hold ||
	    n->paused || n->up.state == UPLOAD_FAILED ||
	    n->up.state == UPLOAD_UPLOADED)
		return false;
	if (n->writers == 0)
		return n->size > 0 && !upload_complete(n);
	return engine_can_sync_open(e) && n->up.sync_target > n->up.offset &&
	       n->size > n->up.offset;
}

void engine_check(const struct engine *e, const struct node *n)
{
	/* The fsync hang of issue 17 was a file in this state: nobody
	 * would ever send its bytes. Debug builds stop at once. */
	if (needs_driving(e, n) && !n->up.queued && !n->up.active) {
		log_error("'%s': invariant broken: %llu of %llu bytes "
			  "confirmed (fsync wants %llu, %u writers), state %s, "
			  "and no worker has it or will",
			  n->name, (unsigned long long)n->up.offset,
			  (unsigned long long)n->size,
			  (unsigned long long)n->up.sync_target, n->writers,
			  upload_state_name(n->up.state));
		abort();
	}
}
#endif

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct engine *e = w->e;
	struct timespec wake;

	pthread_mutex_lock(mutex(e));
	while (e->running) {
		struct node *n = pop_ready(e, &wake);
		enum step_result r = STEP_IDLE;

		if (!n) {
			if (wake.tv_sec == 0 && wake.tv_nsec == 0)
				pthread_cond_wait(&e->work_cv, mutex(e));
			else
				pthread_cond_timedwait(&e->work_cv, mutex(e),
						       &wake);
			continue;
		}
		n->up.active = true;
		do {
			n->up.kicked = false;
			r = process(w, n);
		} while (r == STEP_IDLE && n->up.kicked && e->running);
		n->up.active = false;
		pthread_cond_broadcast(&e->progress_cv);
		if (r == STEP_LATER && e->running)
			enqueue(e, n);
		engine_check(e, n);
		catalog_put(e->cat, n);
	}
	pthread_mutex_unlock(mutex(e));
	return NULL;
}

int engine_new_upload(struct engine *e, struct node *n)
{
	int rc = upload_new_generation(&n->up);

	cache_drop(e, n);
	if (e->poller)
		poller_new_upload(e->poller, n);
	set_message(n, NULL);
	journal_mark(e->journal, n);
	return rc;
}

void engine_pause(struct engine *e, struct node *n, bool paused)
{
	if (!S_ISREG(n->mode) || n->paused == paused)
		return;
	n->paused = paused;
	journal_mark(e->journal, n);
	if (paused) {
		/* The request in flight stops; the offset is read again
		 * (HEAD) at the resume. */
		if (n->up.active)
			atomic_store(&n->up.cancel, 1);
		/* fsync on it returns now, as on a held file. */
		pthread_cond_broadcast(&e->progress_cv);
	} else {
		atomic_store(&n->up.cancel, 0);
		engine_kick(e, n);
	}
}

void engine_renamed(struct engine *e, struct node *n)
{
	bool hold = catalog_temp_name(e->temp_names, n->name);

	if (!S_ISREG(n->mode) || hold == n->up.hold)
		return;
	n->up.hold = hold;
	if (n->up.state == UPLOAD_UPLOADED || n->up.state == UPLOAD_EMPTY)
		return;
	if (!hold) {
		engine_kick(e, n);
	} else if (n->up.url || n->up.active) {
		/* Its metadata names a file that is gone: stop the request
		 * in flight, terminate the upload, start over at the next
		 * final name. */
		n->up.restart = true;
		n->up.new_generation = false;
		atomic_store(&n->up.cancel, 1);
		log_info("'%s': renamed to a temporary name; stopping its "
			 "upload",
			 n->name);
		engine_kick(e, n);
	}
}

static void resume_file(struct node *n, void *arg)
{
	struct engine *e = arg;

	n->up.hold = catalog_temp_name(e->temp_names, n->name);
	switch (n->up.state) {
	case UPLOAD_UPLOADED:
		/* A refused recording keeps its spool (finish). */
		if (n->tr.state != TR_FAILED &&
		    spool_size(e->spool, n->ino) == (int64_t)n->size)
			cache_add(e, n);
		break;
	case UPLOAD_EMPTY:
	case UPLOAD_FAILED:
		break;
	default:
		engine_kick(e, n);
	}
}

void engine_resume(struct engine *e)
{
	pthread_mutex_lock(mutex(e));
	catalog_each_file(catalog_root(e->cat), resume_file, e);
	pthread_mutex_unlock(mutex(e));
}

bool engine_can_sync_open(const struct engine *e)
{
	return e->server.extensions & TUS_EXT_CREATION_DEFER_LENGTH;
}

/* Whether fsync's wait for target bytes is over. Lock held. */
static bool sync_done(const struct engine *e, const struct node *n,
		      uint64_t target)
{
	/* A truncation since fsync began lowers what can be confirmed. */
	uint64_t want = target < n->size ? target : n->size;

	/* No UPLOAD_EMPTY here: a file sealed empty and written again still
	 * says so until a worker takes it, and want == 0 covers the empty. */
	return !e->running || n->unlinked || n->up.state == UPLOAD_FAILED ||
	       n->up.hold || n->paused || want == 0 ||
	       (!n->up.restart && n->up.url && n->up.offset >= want);
}

/*
 * The watchdog: an fsync waiting longer than stall_timeout while no
 * request for its file is in flight says so, once, naming the file.
 */
static void watch(const struct engine *e, const struct node *n,
		  struct engine_sync *s)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (s->warned || n->up.active ||
	    now.tv_sec - s->since.tv_sec < e->transport.stall_timeout_s)
		return;
	s->warned = true;
	log_warn(
	    "'%s': fsync has waited %lld s for %llu bytes with no request "
	    "in flight: %llu confirmed, state %s%s",
	    n->name, (long long)(now.tv_sec - s->since.tv_sec),
	    (unsigned long long)s->target, (unsigned long long)n->up.offset,
	    upload_state_name(n->up.state), n->up.queued ? ", queued" : "");
}

int engine_wait_confirmed(struct engine *e, struct node *n,
			  struct engine_sync *s,
			  const struct timespec *deadline)
{
	/* A truncation since fsync began lowers what it can ask for. */
	uint64_t target = s->target < n->size ? s->target : n->size;

	if (s->since.tv_sec == 0)
		clock_gettime(CLOCK_MONOTONIC, &s->since);
	/*
	 * A new target is news for the engine. So is a file the engine has
	 * let go of (neither queued nor active) with bytes still to confirm:
	 * nothing else may be coming to send them.
	 */
	if (n->up.sync_target < target) {
		n->up.sync_target = target;
		engine_kick(e, n);
	} else if (!n->up.active && !n->up.queued && !sync_done(e, n, target)) {
		engine_check(e, n);
		engine_kick(e, n);
	}
	while (!sync_done(e, n, target))
		if (pthread_cond_timedwait(&e->progress_cv, mutex(e),
					   deadline) == ETIMEDOUT) {
			if (sync_done(e, n, target))
				break;
			watch(e, n, s);
			return -EAGAIN;
		}
	if (n->up.state == UPLOAD_FAILED || (!e->running && !n->unlinked))
		return -EIO;
	return 0;
}

static char *dup_or_null(const char *s, bool *failed)
{
	char *d = s ? strdup(s) : NULL;

	if (s && !d)
		*failed = true;
	return d;
}

struct engine *engine_create(const struct engine_config *cfg,
			     struct catalog *cat, struct spool *spool, int *err)
{
	struct engine *e = calloc(1, sizeof(*e));
	bool failed = false;

	if (!e) {
		*err = -ENOMEM;
		return NULL;
	}
	catalog_cond_init(&e->work_cv);
	catalog_cond_init(&e->progress_cv);
	pthread_mutex_init(&e->limit.lock, NULL);
	atomic_init(&e->limit.rate, cfg->max_rate);
	e->cat = cat;
	e->spool = spool;
	e->journal = cfg->journal;
	e->poller = cfg->poller;
	e->cache_size = cfg->cache_size;
	e->server = cfg->server;
	e->chunk_size = cfg->chunk_size;
	e->answer_timeout_s = cfg->answer_timeout_s;
	e->learned = cfg->learned;
	e->learned_arg = cfg->learned_arg;
	e->nworkers = cfg->workers;
	e->transport = cfg->transport;
	e->endpoint = dup_or_null(cfg->endpoint, &failed);
	e->language = dup_or_null(cfg->language, &failed);
	e->temp_names = dup_or_null(cfg->temp_names, &failed);
	e->workers = calloc(cfg->workers, sizeof(*e->workers));
	if (failed || !e->workers) {
		engine_free(e);
		*err = -ENOMEM;
		return NULL;
	}
	return e;
}

int engine_start(struct engine *e)
{
	int rc = 0;

	e->running = true;
	for (unsigned i = 0; i < e->nworkers; i++) {
		struct worker *w = &e->workers[i];

		w->e = e;
		w->http = transport_new(&e->transport, &e->abort_all);
		w->tus = w->http ? tus_client_create(w->http, e->endpoint, &rc)
				 : NULL;
		if (!w->tus) {
			rc = -ENOMEM;
			break;
		}
		rc = -pthread_create(&w->thread, NULL, worker_main, w);
		if (rc < 0)
			break;
		e->started++;
	}
	if (rc < 0)
		engine_stop(e);
	return rc;
}

void engine_stop(struct engine *e)
{
	pthread_mutex_lock(mutex(e));
	e->running = false;
	e->stopped = true;
	/* Abort, not await: what reached the server is read back with HEAD
	 * at the next mount. */
	atomic_store(&e->abort_all, 1);
	pthread_cond_broadcast(&e->work_cv);
	pthread_cond_broadcast(&e->progress_cv);
	pthread_mutex_unlock(mutex(e));
	for (unsigned i = 0; i < e->started; i++)
		pthread_join(e->workers[i].thread, NULL);
	e->started = 0;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	pthread_mutex_lock(mutex(e));
	while (e->qhead) {
		struct node *n = e->qhead;

		e->qhead = n->up.qnext;
		n->up.queued = false;
		catalog_put(e->cat, n);
	}
	e->qtail = NULL;
	while (e->cache_head)
		cache_drop(e, e->cache_head);
	pthread_mutex_unlock(mutex(e));
	for (unsigned i = 0; e->workers && i < e->nworkers; i++) {
		tus_client_free(e->workers[i].tus);
		tus_http_free(e->workers[i].http);
	}
	free(e->workers);
	free(e->endpoint);
	free(e->language);
	free(e->temp_names);
	pthread_cond_destroy(&e->work_cv);
	pthread_cond_destroy(&e->progress_cv);
	pthread_mutex_destroy(&e->limit.lock);
	free(e);
}
