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
 * A worker's step (a request and what its outcome changes) is in
 * engine_step.c, the bandwidth limit in engine_limit.c.
 */
#include "tusfs_setup.h"
#include "core/engine_int.h"
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

/* Drops n's spool from the cache list (it is rewritten, or gone). */
void engine_cache_drop(struct engine *e, struct node *n)
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
void engine_cache_add(struct engine *e, struct node *n)
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
		engine_cache_drop(e, old);
	}
}

int engine_release_cache(struct engine *e)
{
	int released = 0;

	while (e->cache_head) {
		spool_remove(e->spool, e->cache_head->ino);
		engine_cache_drop(e, e->cache_head);
		released++;
	}
	return released;
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
		return n->size > 0 && !upload_complete(&n->up);
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

	pthread_mutex_lock(engine_mutex(e));
	while (e->running) {
		struct node *n = pop_ready(e, &wake);
		enum step_result r = STEP_IDLE;

		if (!n) {
			if (wake.tv_sec == 0 && wake.tv_nsec == 0)
				pthread_cond_wait(&e->work_cv, engine_mutex(e));
			else
				pthread_cond_timedwait(&e->work_cv,
						       engine_mutex(e), &wake);
			continue;
		}
		n->up.active = true;
		do {
			n->up.kicked = false;
			r = engine_process(w, n);
		} while (r == STEP_IDLE && n->up.kicked && e->running);
		n->up.active = false;
		pthread_cond_broadcast(&e->progress_cv);
		if (r == STEP_LATER && e->running)
			enqueue(e, n);
		engine_check(e, n);
		catalog_put(e->cat, n);
	}
	pthread_mutex_unlock(engine_mutex(e));
	return NULL;
}

int engine_new_upload(struct engine *e, struct node *n)
{
	int rc = upload_new_generation(&n->up);

	engine_cache_drop(e, n);
	if (e->poller)
		poller_new_upload(e->poller, n);
	engine_set_message(n, NULL);
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
			engine_cache_add(e, n);
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
	pthread_mutex_lock(engine_mutex(e));
	catalog_each_file(catalog_root(e->cat), resume_file, e);
	pthread_mutex_unlock(engine_mutex(e));
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
		if (pthread_cond_timedwait(&e->progress_cv, engine_mutex(e),
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
	pthread_mutex_lock(engine_mutex(e));
	e->running = false;
	e->stopped = true;
	/* Abort, not await: what reached the server is read back with HEAD
	 * at the next mount. */
	atomic_store(&e->abort_all, 1);
	pthread_cond_broadcast(&e->work_cv);
	pthread_cond_broadcast(&e->progress_cv);
	pthread_mutex_unlock(engine_mutex(e));
	for (unsigned i = 0; i < e->started; i++)
		pthread_join(e->workers[i].thread, NULL);
	e->started = 0;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	pthread_mutex_lock(engine_mutex(e));
	while (e->qhead) {
		struct node *n = e->qhead;

		e->qhead = n->up.qnext;
		n->up.queued = false;
		catalog_put(e->cat, n);
	}
	e->qtail = NULL;
	while (e->cache_head)
		engine_cache_drop(e, e->cache_head);
	pthread_mutex_unlock(engine_mutex(e));
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
