/*
 * A worker's step on one file: plan_next() decides the request, this file
 * sends it (lock dropped) and applies its outcome to the node.
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

void engine_set_message(struct node *n, const char *msg)
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
	engine_set_message(n, msg);
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
	engine_set_message(n, st->message);
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

	if (!n->up.url || (upload_complete(&n->up) && !even_complete) ||
	    !(e->server.extensions & TUS_EXT_TERMINATION)) {
		forget_upload(e, n);
		return STEP_CONTINUE;
	}
	url = strdup(n->up.url);
	if (!url)
		return STEP_IDLE;
	pthread_mutex_unlock(engine_mutex(e));
	o = tus_terminate(w->tus, url, &st);
	pthread_mutex_lock(engine_mutex(e));
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
	pthread_mutex_unlock(engine_mutex(e));
	o = tus_head(w->tus, url, &offset, &length, &st);
	pthread_mutex_lock(engine_mutex(e));
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
		    !upload_complete(&n->up)) {
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
		engine_throttle(src->e, (size_t)r, &src->n->up.cancel);
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

	pthread_mutex_unlock(engine_mutex(e));
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
	pthread_mutex_lock(engine_mutex(e));
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
		engine_set_message(n, st->message);
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
		engine_set_message(n, NULL);
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
			engine_cache_add(e, n);
		if (e->poller)
			poller_upload_done(e->poller, n, a);
		engine_set_message(n, NULL);
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
		pthread_mutex_unlock(engine_mutex(e));
		rc = spool_hash(e->spool, n->ino, len, &hash, &e->abort_all);
		pthread_mutex_lock(engine_mutex(e));
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
enum step_result engine_process(struct worker *w, struct node *n)
{
	struct engine *e = w->e;
	enum step_result r = STEP_CONTINUE;

	while (r == STEP_CONTINUE && e->running) {
		struct plan_input in;
		struct plan_step step;

		if (n->unlinked) {
			engine_cache_drop(e, n);
			r = drop_remote(w, n, false);
			return r == STEP_LATER ? r : STEP_IDLE;
		}
		/* Paused: nothing goes, not even a restart's DELETE. */
		if (n->paused && !upload_complete(&n->up))
			return STEP_IDLE;
		if (n->up.restart) {
			r = restart(w, n);
			continue;
		}
		if (n->up.state == UPLOAD_FAILED)
			return STEP_IDLE;
		if (n->up.hold && !upload_complete(&n->up)) {
			n->up.state = UPLOAD_QUEUED;
			return STEP_IDLE;
		}
		if (n->up.verify ||
		    (n->writers == 0 && n->size > 0 &&
		     !upload_complete(&n->up) && !n->up.fp_valid)) {
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
