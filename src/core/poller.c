/*
 * The transcription poller.
 *
 * DESIGN
 * Files whose task is pending sit on one list (holding a reference), each
 * with the time its next poll is due. A thread takes the earliest due file,
 * marks it busy, drops the lock, and polls: GET the task, and while it is
 * processing also GET its progress. A completed task is rendered to the
 * four transcript formats and written to temporaries, all without the
 * lock; back under the lock the result is applied only if the file still
 * waits for that same taskId (an O_TRUNC may have started a new upload
 * meanwhile), and the temporaries are renamed into place there, so a late
 * poll can never install an old transcript over a new generation.
 *
 * Backoff: 1 s, doubling to 30 s; a new progress stage starts it over, and
 * so does someone reading the file's sidecars (poller_watch), so a user who
 * watches NAME.status sees a change within about a second. A 404 means the
 * task is not created yet; past task_timeout (counted from the end of the
 * upload) the file is reported as missing and polling stops. Anything else
 * that goes wrong (no connection, an HTTP error, an answer that does not
 * parse or is too large) is shown in NAME.status as the poll error and the
 * poll is tried again later; nothing is ever guessed from a bad answer.
 */
#include "tusfs_setup.h"
#include "core/poller_int.h"
#include "core/poller.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/spool.h"
#include "core/task.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t *mutex(struct poller *p)
{
	return catalog_mutex(p->cat);
}

static void set_str(char **dst, const char *s)
{
	free(*dst);
	*dst = s ? strdup(s) : NULL;
}

void poller_forget(struct poller *p, const struct node *n)
{
	if (n->tr.state == TR_COMPLETED)
		poller_remove_files(p, n, false);
}

/* Writes template with every "{id}" replaced by id. */
static int expand(const char *template, const char *id, char *out, size_t size)
{
	size_t o = 0, idlen = strlen(id);

	for (const char *s = template; *s;) {
		bool hole = strncmp(s, "{id}", 4) == 0;
		size_t n = hole ? idlen : 1;

		if (o + n >= size)
			return -ENAMETOOLONG;
		memcpy(out + o, hole ? id : s, n);
		o += n;
		s += hole ? 4 : 1;
	}
	out[o] = '\0';
	return 0;
}

/* Sends method to url; 0 with the response, or -errno with message set. */
static int call(struct tus_http *h, const char *method, const char *url,
		size_t max_body, struct tus_http_response *resp, char *message,
		size_t msize)
{
	static const char *const headers[] = {"Accept: application/json", NULL};
	struct tus_http_request req = {.method = method,
				       .url = url,
				       .headers = headers,
				       .max_body = max_body};
	int rc;

	memset(resp, 0, sizeof(*resp));
	rc = tus_http_perform(h, &req, resp);
	if (rc == -EMSGSIZE)
		snprintf(message, msize,
			 max_body >= 1024 * 1024
			     ? "the task API's answer is larger than %zu MiB; "
			       "ignored"
			     : "the task API's answer is larger than %zu "
			       "bytes; ignored",
			 max_body >= 1024 * 1024 ? max_body >> 20 : max_body);
	else if (rc < 0)
		snprintf(message, msize, "cannot reach the task API: %s",
			 resp->error);
	return rc;
}

static void http_problem(long status, char *message, size_t msize)
{
	if (status == 401 || status == 403)
		snprintf(message, msize,
			 "the task API refused the API key (HTTP %ld)", status);
	else
		snprintf(message, msize, "the task API answered HTTP %ld",
			 status);
}

/*
 * Reads the stage and percent of a processing task into out. Best effort:
 * false (keep what was known) when the route is absent or failed.
 */
static bool poll_progress(struct poller *p, struct tus_http *h, const char *id,
			  struct poll_outcome *out, char *message, size_t msize)
{
	char url[MAX_URL], why[256];
	struct tus_http_response resp;
	struct task_progress prog;
	bool ok = false;

	if (!p->progress_url[0] ||
	    expand(p->progress_url, id, url, sizeof(url)) < 0)
		return false;
	if (call(h, "GET", url, PROGRESS_BODY, &resp, message, msize) < 0) {
		tus_http_response_clear(&resp);
		return false;
	}
	/* A server without the route is fine: no stage to show. */
	if (resp.status == 200) {
		if (task_parse_progress(resp.body, resp.body_len, &prog, why,
					sizeof(why)) == 0) {
			memcpy(out->stage, prog.stage, sizeof(out->stage));
			out->percent = prog.percent;
			ok = true;
		} else {
			snprintf(message, msize, "bad progress answer: %s",
				 why);
		}
	} else if (resp.status != 404) {
		http_problem(resp.status, message, msize);
	}
	tus_http_response_clear(&resp);
	return ok;
}

static void poll_once(struct poller *p, struct tus_http *h,
		      const struct node *n, const char *id,
		      struct poll_outcome *out)
{
	char url[MAX_URL], message[512] = "", why[256];
	struct tus_http_response resp;
	struct task_result r;
	bool mib = p->max_task_json % (1 << 20) == 0;
	int rc;

	out->kind = POLL_ERROR;
	out->percent = -1;
	if (expand(p->task_url, id, url, sizeof(url)) < 0) {
		out->message = strdup("the task URL is too long");
		return;
	}
	rc = call(h, "GET", url, p->max_task_json, &resp, message,
		  sizeof(message));
	if (rc == -EMSGSIZE)
		/* Name the option: the answer may be a real, long transcript.
		 */
		snprintf(
		    message, sizeof(message),
		    "the task's answer is larger than max_task_json=%zu%s; "
		    "ignored",
		    mib ? p->max_task_json >> 20 : p->max_task_json,
		    mib ? "M" : "");
	if (rc < 0)
		goto out;
	if (resp.status == 404) {
		out->kind = POLL_NOT_FOUND;
		goto out;
	}
	if (resp.status != 200) {
		http_problem(resp.status, message, sizeof(message));
		goto out;
	}
	if (task_parse(resp.body, resp.body_len, &r, why, sizeof(why)) < 0) {
		snprintf(message, sizeof(message), "bad task answer: %s", why);
		goto out;
	}
	tus_http_response_clear(&resp);
	switch (r.status) {
	case TASK_PROCESSING:
		out->kind = POLL_PROCESSING;
		out->have_progress =
		    poll_progress(p, h, id, out, message, sizeof(message));
		break;
	case TASK_FAILED:
		out->kind = POLL_FAILED;
		snprintf(message, sizeof(message), "%s",
			 r.error ? r.error : "the server gave no reason");
		break;
	case TASK_COMPLETED:
		rc = poller_store(p, n, &r, out->sizes);
		if (rc < 0)
			snprintf(message, sizeof(message),
				 "cannot store the transcript: %s",
				 strerror(-rc));
		else
			out->kind = POLL_COMPLETED;
		break;
	}
	task_result_clear(&r);
out:
	tus_http_response_clear(&resp);
	if (message[0])
		out->message = strdup(message);
}

static void list_add(struct poller *p, struct node *n)
{
	if (n->tr.listed)
		return;
	catalog_get(n);
	n->tr.listed = true;
	n->tr.pnext = p->head;
	p->head = n;
}

static void list_remove(struct poller *p, struct node *n)
{
	for (struct node **pp = &p->head; *pp; pp = &(*pp)->tr.pnext)
		if (*pp == n) {
			*pp = n->tr.pnext;
			n->tr.listed = false;
			n->tr.pnext = NULL;
			catalog_put(p->cat, n);
			return;
		}
}

static void schedule(struct poller *p, struct node *n, unsigned interval_ms)
{
	n->tr.due = ts_in_ms(interval_ms);
	list_add(p, n);
	pthread_cond_broadcast(&p->cv);
}

/* Whether n still waits for a transcription poll. */
static bool pending(const struct node *n)
{
	return !n->unlinked && n->up.state == UPLOAD_UPLOADED &&
	       (n->tr.state == TR_QUEUED || n->tr.state == TR_STARTING ||
		n->tr.state == TR_PROCESSING);
}

/*
 * The earliest due file that is not being polled; NULL with *wake set to
 * the next due time (zero: nothing pending). Files that no longer wait
 * leave the list here.
 */
static struct node *pick(struct poller *p, struct timespec *wake)
{
	struct node *best = NULL, *next;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	*wake = (struct timespec){0};
	for (struct node *n = p->head; n; n = next) {
		next = n->tr.pnext;
		if (n->tr.busy)
			continue;
		if (!pending(n)) {
			list_remove(p, n);
			continue;
		}
		if (!best || ts_before(&n->tr.due, &best->tr.due))
			best = n;
	}
	if (best && ts_before(&now, &best->tr.due)) {
		*wake = best->tr.due;
		return NULL;
	}
	return best;
}

static void set_state(struct node *n, enum tr_state s)
{
	if (n->tr.state != s)
		log_info("'%s': transcription %s", n->name, tr_state_name(s));
	n->tr.state = s;
}

/*
 * Applies a poll's outcome to n (still waiting for task id). Lock held.
 * Returns true when transcripts were installed: the caller journals that
 * once the directory is synced.
 */
static bool apply(struct poller *p, struct node *n, struct poll_outcome *out)
{
	struct transcription *tr = &n->tr;
	enum tr_state before = tr->state;
	bool changed = false;
	struct timespec now;
	int rc;

	set_str(&tr->poll_error, NULL);
	switch (out->kind) {
	case POLL_ERROR:
		set_str(&tr->poll_error, out->message);
		log_debug("'%s': task poll: %s", n->name, out->message);
		break;
	case POLL_NOT_FOUND:
		clock_gettime(CLOCK_REALTIME, &now);
		if (before == TR_PROCESSING) {
			set_str(&tr->error, "the task disappeared from the "
					    "server");
			set_state(n, TR_MISSING);
		} else if (now.tv_sec - tr->since.tv_sec > p->task_timeout_s) {
			char msg[128];

			snprintf(msg, sizeof(msg),
				 "no task appeared within %ld s of the upload",
				 p->task_timeout_s);
			set_str(&tr->error, msg);
			set_state(n, TR_MISSING);
		}
		break;
	case POLL_PROCESSING:
		set_str(&tr->poll_error, out->message);
		set_state(n, TR_PROCESSING);
		if (!out->have_progress)
			break;
		if (strcmp(tr->stage, out->stage) != 0) {
			memcpy(tr->stage, out->stage, sizeof(tr->stage));
			tr->interval_ms = FIRST_INTERVAL;
			changed = true;
		}
		changed |= tr->percent != out->percent;
		tr->percent = out->percent;
		break;
	case POLL_COMPLETED:
		rc = poller_install(p, n);
		if (rc < 0) {
			char msg[128];

			snprintf(msg, sizeof(msg),
				 "cannot store the transcript: %s",
				 strerror(-rc));
			set_str(&tr->poll_error, msg);
			break;
		}
		memcpy(tr->sizes, out->sizes, sizeof(tr->sizes));
		clock_gettime(CLOCK_REALTIME, &tr->done_at);
		snprintf(tr->stage, sizeof(tr->stage), "complete");
		tr->percent = 100;
		set_state(n, TR_COMPLETED);
		break;
	case POLL_FAILED:
		set_str(&tr->error, out->message);
		set_state(n, TR_FAILED);
		log_warn("'%s': transcription failed: %s", n->name,
			 out->message);
		break;
	}
	if ((changed || tr->state != before) && tr->state != TR_COMPLETED)
		journal_mark(p->journal, n);
	if (pending(n)) {
		unsigned next = tr->interval_ms;

		tr->interval_ms =
		    next * 2 > MAX_INTERVAL ? MAX_INTERVAL : next * 2;
		schedule(p, n, next);
	}
	return tr->state == TR_COMPLETED && before != TR_COMPLETED;
}

/* DELETE task_url/delete for task id, without the lock. */
static void delete_task(struct poller *p, struct tus_http *h, const char *id)
{
	char url[MAX_URL], message[512];
	struct tus_http_response resp;

	if (expand(p->task_url, id, url, sizeof(url) - strlen("/delete")) < 0)
		return;
	memcpy(url + strlen(url), "/delete", sizeof("/delete"));
	if (call(h, "DELETE", url, PROGRESS_BODY, &resp, message,
		 sizeof(message)) < 0)
		log_warn("task %s: not deleted: %s", id, message);
	else if (resp.status / 100 == 2 || resp.status == 404)
		log_info("task %s: deleted (-o delete_remote)", id);
	else {
		http_problem(resp.status, message, sizeof(message));
		log_warn("task %s: not deleted: %s", id, message);
	}
	tus_http_response_clear(&resp);
}

struct thread_arg {
	struct poller *p;
	struct tus_http *h;
};

static void *poller_main(void *arg)
{
	struct poller *p = ((struct thread_arg *)arg)->p;
	struct tus_http *h = ((struct thread_arg *)arg)->h;
	struct timespec wake;

	free(arg);
	pthread_mutex_lock(mutex(p));
	while (p->running) {
		struct node *n;
		struct poll_outcome out = {0};
		char id[META_UUID_LEN + 1];

		if (p->doomed) {
			struct doomed *d = p->doomed;

			p->doomed = d->next;
			pthread_mutex_unlock(mutex(p));
			delete_task(p, h, d->id);
			free(d);
			pthread_mutex_lock(mutex(p));
			continue;
		}
		n = pick(p, &wake);
		if (!n) {
			if (wake.tv_sec == 0 && wake.tv_nsec == 0)
				pthread_cond_wait(&p->cv, mutex(p));
			else
				pthread_cond_timedwait(&p->cv, mutex(p), &wake);
			continue;
		}
		n->tr.busy = true;
		catalog_get(n);
		memcpy(id, n->up.task_id, sizeof(id));
		pthread_mutex_unlock(mutex(p));
		poll_once(p, h, n, id, &out);
		pthread_mutex_lock(mutex(p));
		n->tr.busy = false;
		clock_gettime(CLOCK_MONOTONIC, &n->tr.last_poll);
		/* A new upload (O_TRUNC) or an unlink made this poll moot. */
		if (pending(n) && strcmp(id, n->up.task_id) == 0 &&
		    p->running) {
			if (apply(p, n, &out)) {
				/* The renames must be on disk before the
				 * journal says completed. */
				pthread_mutex_unlock(mutex(p));
				fsync(p->dirfd);
				pthread_mutex_lock(mutex(p));
				journal_mark(p->journal, n);
			}
		} else if (out.kind == POLL_COMPLETED) {
			poller_remove_files(p, n, true);
		}
		free(out.message);
		catalog_put(p->cat, n);
	}
	pthread_mutex_unlock(mutex(p));
	return NULL;
}

bool poller_transcripts(const struct poller *p)
{
	return p->transcripts;
}

void poller_upload_done(struct poller *p, struct node *n,
			enum final_answer answer)
{
	if (!p->transcripts || n->tr.state != TR_NONE || !n->up.task_id[0])
		return;
	clock_gettime(CLOCK_REALTIME, &n->tr.since);
	journal_mark(p->journal, n);
	if (answer == FINAL_REFUSED || answer == FINAL_ERROR) {
		/* The server holds every byte and said no: no task will come,
		 * and asking would only wait out task_timeout. */
		char msg[512];

		snprintf(msg, sizeof(msg),
			 "the server refused the file after its last byte "
			 "(%s); likely its content does not match the "
			 "extension of '%s', or it holds no audio",
			 n->up.message ? n->up.message : "no reason given",
			 n->name);
		set_str(&n->tr.error, msg);
		set_state(n, TR_FAILED);
		log_warn("'%s': transcription failed: %s", n->name, msg);
		return;
	}
	n->tr.state = answer == FINAL_ACCEPTED ? TR_QUEUED : TR_STARTING;
	n->tr.interval_ms = FIRST_INTERVAL;
	schedule(p, n, 0);
}

void poller_new_upload(struct poller *p, struct node *n)
{
	struct transcription *tr = &n->tr;

	poller_forget(p, n);
	free(tr->error);
	free(tr->poll_error);
	tr->error = tr->poll_error = NULL;
	tr->state = TR_NONE;
	tr->stage[0] = '\0';
	tr->percent = -1;
	memset(tr->sizes, 0, sizeof(tr->sizes));
	/* Leaves the list at the next pick; a poll in flight is dropped. */
}

void poller_delete_task(struct poller *p, const struct node *n)
{
	struct doomed *d;

	if (!p->delete_remote || !p->running ||
	    n->up.state != UPLOAD_UPLOADED || !n->up.task_id[0])
		return;
	d = malloc(sizeof(*d));
	if (!d) {
		log_warn("task %s: out of memory; not deleted", n->up.task_id);
		return;
	}
	memcpy(d->id, n->up.task_id, sizeof(d->id));
	d->next = p->doomed;
	p->doomed = d;
	pthread_cond_signal(&p->cv);
}

void poller_watch(struct poller *p, struct node *n)
{
	struct timespec soon = n->tr.last_poll;

	if (!n->tr.listed || n->tr.busy)
		return;
	ts_add_ns(&soon, (uint64_t)WATCH_INTERVAL * 1000000ULL);
	if (ts_before(&soon, &n->tr.due)) {
		n->tr.due = soon;
		n->tr.interval_ms = FIRST_INTERVAL;
		pthread_cond_broadcast(&p->cv);
	}
}

static void resume_file(struct node *n, void *arg)
{
	struct poller *p = arg;

	if (n->up.state != UPLOAD_UPLOADED)
		return;
	if (n->tr.state == TR_COMPLETED && !poller_stored(p, n)) {
		log_warn("'%s': stored transcripts are missing; fetching them "
			 "again",
			 n->name);
		n->tr.state = TR_PROCESSING;
	}
	/* Uploaded under transcripts=off: it was complete then. */
	if (n->tr.state == TR_NONE)
		poller_upload_done(p, n, FINAL_ACCEPTED);
	else if (pending(n) && p->transcripts) {
		n->tr.interval_ms = FIRST_INTERVAL;
		schedule(p, n, 0);
	}
}

void poller_resume(struct poller *p)
{
	pthread_mutex_lock(mutex(p));
	poller_sweep(p);
	catalog_each_file(catalog_root(p->cat), resume_file, p);
	pthread_mutex_unlock(mutex(p));
}

struct poller *poller_create(const struct poller_config *cfg,
			     struct catalog *cat, int *err)
{
	struct poller *p = calloc(1, sizeof(*p));
	char path[4096];
	int n;

	if (!p) {
		*err = -ENOMEM;
		return NULL;
	}
	p->cat = cat;
	p->dirfd = -1;
	p->journal = cfg->journal;
	p->transcripts = cfg->transcripts;
	p->task_timeout_s = cfg->task_timeout_s;
	p->max_task_json = cfg->max_task_json;
	p->delete_remote = cfg->delete_remote;
	p->transport = cfg->transport;
	catalog_cond_init(&p->cv);
	p->task_url = strdup(cfg->task_url);
	p->progress_url = strdup(cfg->progress_url ? cfg->progress_url : "");
	if (!p->task_url || !p->progress_url) {
		*err = -ENOMEM;
		goto fail;
	}
	n = snprintf(path, sizeof(path), "%s/transcripts", cfg->state_dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		*err = -ENAMETOOLONG;
		goto fail;
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		*err = -errno;
		goto fail;
	}
	p->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->dirfd < 0) {
		*err = -errno;
		goto fail;
	}
	return p;
fail:
	poller_free(p);
	return NULL;
}

int poller_start(struct poller *p)
{
	int rc = 0;

	if (!p->transcripts)
		return 0;
	p->running = true;
	for (unsigned i = 0; i < THREADS; i++) {
		struct thread_arg *a = malloc(sizeof(*a));

		p->conns[i] = transport_new(&p->transport, &p->abort_all);
		if (!a || !p->conns[i]) {
			free(a);
			rc = -ENOMEM;
			break;
		}
		a->p = p;
		a->h = p->conns[i];
		rc = -pthread_create(&p->threads[i], NULL, poller_main, a);
		if (rc < 0) {
			free(a);
			break;
		}
		p->started++;
	}
	if (rc < 0)
		poller_stop(p);
	return rc;
}

void poller_stop(struct poller *p)
{
	pthread_mutex_lock(mutex(p));
	p->running = false;
	atomic_store(&p->abort_all, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(mutex(p));
	for (unsigned i = 0; i < p->started; i++)
		pthread_join(p->threads[i], NULL);
	p->started = 0;
}

void poller_free(struct poller *p)
{
	if (!p)
		return;
	pthread_mutex_lock(mutex(p));
	while (p->head)
		list_remove(p, p->head);
	while (p->doomed) {
		struct doomed *d = p->doomed;

		log_warn("task %s: unmounted before it could be deleted",
			 d->id);
		p->doomed = d->next;
		free(d);
	}
	pthread_mutex_unlock(mutex(p));
	for (unsigned i = 0; i < THREADS; i++)
		tus_http_free(p->conns[i]);
	if (p->dirfd >= 0)
		close(p->dirfd);
	free(p->task_url);
	free(p->progress_url);
	pthread_cond_destroy(&p->cv);
	free(p);
}
