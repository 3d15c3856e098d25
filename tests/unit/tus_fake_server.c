/*
 * The in-memory TUS server (see tus_fake_server.h). It owns the uploads
 * (offset, length, metadata and the bytes stored), the request log and the
 * fault script, all under one mutex; a request's body is read through its
 * read callback with that mutex dropped, since the engine's callback may
 * sleep (the bandwidth limit). The routes:
 *
 *   POST   /files/         bare; Upload-Length or Upload-Defer-Length; 201
 *   HEAD   /files/N        Upload-Offset, Upload-Length once known
 *   PATCH  /files/N        409 unless Upload-Offset is the stored offset
 *   DELETE /files/N        204
 *   GET    /task/ID        the task of a completed upload, else 404
 *   DELETE /task/ID/delete 200
 */
#include "tusfs_setup.h"
#include "tus_fake_server.h"
#include "core/catalog.h"
#include "tus/tus.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_UPLOADS 32
#define MAX_LOG	    512
#define MAX_FAULTS  16
#define SLICE	    (16 * 1024)

struct stored_upload {
	char *metadata;
	unsigned char *data;
	uint64_t offset;
	int64_t length;
	bool deleted, taken;
};

struct fake_server {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct stored_upload uploads[MAX_UPLOADS];
	int nuploads;
	struct fake_logged log[MAX_LOG];
	int nlog;
	struct fake_fault faults[MAX_FAULTS];
	int nfaults;
	bool take;
	uint64_t received;
	/* Requests stalled now; bumped by every release. */
	int stalled;
	unsigned release_gen;
};

/* One transport: a connection to the server. */
struct conn {
	struct tus_http base;
	struct fake_server *s;
	const atomic_int *abort_all;
};

/* One request being served; lock held except while reading the body. */
struct call {
	struct conn *c;
	const struct tus_http_request *req;
	struct tus_http_response *resp;
	struct fake_logged *log;
	struct fake_fault fault;
	bool faulted;
};

static bool canceled(const struct call *k)
{
	return (k->req->cancel && atomic_load(k->req->cancel)) ||
	       atomic_load(k->c->abort_all);
}

/* The value of request header name, or NULL. */
static const char *header(const struct tus_http_request *req, const char *name)
{
	size_t n = strlen(name);

	for (const char *const *h = req->headers; h && *h; h++)
		if (strncasecmp(*h, name, n) == 0 && (*h)[n] == ':')
			return *h + n + 1 + ((*h)[n + 1] == ' ');
	return NULL;
}

static int answer(struct call *k, long status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets the answer: status and header lines (fmt, "" for none). */
static int answer(struct call *k, long status, const char *fmt, ...)
{
	va_list ap;
	int rc;

	k->resp->status = status;
	k->log->status = status;
	va_start(ap, fmt);
	rc = vasprintf(&k->resp->headers, fmt, ap);
	va_end(ap);
	if (rc < 0)
		return -ENOMEM;
	k->resp->headers_len = (size_t)rc;
	rc = asprintf(&k->resp->body, "%s",
		      status < 300 ? "" : "scripted answer");
	if (rc < 0)
		return -ENOMEM;
	k->resp->body_len = (size_t)rc;
	return 0;
}

/* The upload a /files/N URL names, or NULL (logged as -1). */
static struct stored_upload *find_upload(struct call *k)
{
	struct fake_server *s = k->c->s;
	const char *url = k->req->url;
	char *end;
	long i;

	if (strncmp(url, FAKE_ENDPOINT, strlen(FAKE_ENDPOINT)) != 0)
		return NULL;
	i = strtol(url + strlen(FAKE_ENDPOINT), &end, 10);
	if (*end || i < 0 || i >= s->nuploads)
		return NULL;
	k->log->upload = (int)i;
	return &s->uploads[i];
}

static bool gone(const struct stored_upload *u)
{
	return !u || u->deleted || u->taken;
}

/* Takes the first fault that matches this request, if any. */
static void match_fault(struct call *k, bool final)
{
	struct fake_server *s = k->c->s;

	for (int i = 0; i < s->nfaults; i++) {
		struct fake_fault *f = &s->faults[i];

		if (strcmp(f->method, k->req->method) != 0 ||
		    (f->final_only && !final))
			continue;
		if (f->skip > 0) {
			f->skip--;
			return;
		}
		k->fault = *f;
		k->faulted = true;
		memmove(f, f + 1, (size_t)(s->nfaults - i - 1) * sizeof(*f));
		s->nfaults--;
		return;
	}
}

/* Holds a stalled request until released, canceled or aborted. */
static int stall(struct call *k)
{
	struct fake_server *s = k->c->s;
	unsigned gen = s->release_gen;
	int rc = 0;

	s->stalled++;
	pthread_cond_broadcast(&s->cv);
	while (gen == s->release_gen && rc == 0) {
		struct timespec t;

		if (canceled(k)) {
			rc = -ECANCELED;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		t.tv_nsec += 10 * 1000000L;
		if (t.tv_nsec >= 1000000000L) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->cv, &s->lock, &t);
	}
	s->stalled--;
	return rc;
}

/*
 * Reads body bytes [*done, limit) slice by slice, lock dropped, and
 * stores each at the upload's offset as it arrives, as a TUS server does.
 */
static int receive(struct call *k, struct stored_upload *u, uint64_t *done,
		   uint64_t limit)
{
	struct fake_server *s = k->c->s;
	const struct tus_http_body *body = k->req->body;
	char *buf = malloc(SLICE);
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	while (*done < limit) {
		size_t want =
		    limit - *done < SLICE ? (size_t)(limit - *done) : SLICE;
		ssize_t r;
		unsigned char *grown;

		if (canceled(k)) {
			rc = -ECANCELED;
			break;
		}
		pthread_mutex_unlock(&s->lock);
		r = body->read(body->arg, buf, want, *done);
		pthread_mutex_lock(&s->lock);
		if (r <= 0) {
			/* A source shorter than it promised is an error. */
			rc = r < 0 ? (int)r : -EIO;
			break;
		}
		grown = realloc(u->data, u->offset + (uint64_t)r);
		if (!grown) {
			rc = -ENOMEM;
			break;
		}
		u->data = grown;
		memcpy(u->data + u->offset, buf, (size_t)r);
		u->offset += (uint64_t)r;
		*done += (uint64_t)r;
		k->log->stored += (uint64_t)r;
		s->received += (uint64_t)r;
	}
	free(buf);
	/* The service's hook runs when a PATCH completes the upload. */
	if (u->length >= 0 && u->offset == (uint64_t)u->length && s->take)
		u->taken = true;
	return rc;
}

/* Acts on the request's fault, once its store bytes are in. 1: go on. */
static int act(struct call *k)
{
	if (!k->faulted)
		return 1;
	k->faulted = false;
	switch (k->fault.action) {
	case FAKE_ANSWER:
		if (k->fault.retry_after > 0)
			return answer(k, k->fault.status,
				      "Retry-After: %ld\r\n",
				      k->fault.retry_after);
		return answer(k, k->fault.status, "%s", "");
	case FAKE_RESET:
		return -ECONNRESET;
	case FAKE_STALL:
		return stall(k) < 0 ? -ECANCELED : 1;
	}
	return 1;
}

static int do_post(struct call *k)
{
	struct fake_server *s = k->c->s;
	const char *len = header(k->req, "Upload-Length");
	const char *meta = header(k->req, "Upload-Metadata");
	struct stored_upload *u;
	int rc;

	match_fault(k, false);
	rc = act(k);
	if (rc <= 0)
		return rc;
	/* tusfs creates every upload bare (docs/ARCHITECTURE.md). */
	if (k->req->body || (!len && !header(k->req, "Upload-Defer-Length")))
		return answer(k, 400, "%s", "");
	if (s->nuploads == MAX_UPLOADS)
		return answer(k, 507, "%s", "");
	u = &s->uploads[s->nuploads];
	*u = (struct stored_upload){.length = len ? atoll(len) : -1};
	u->metadata = strdup(meta ? meta : "");
	if (!u->metadata)
		return -ENOMEM;
	k->log->upload = s->nuploads++;
	return answer(k, 201, "Location: %s%d\r\n", FAKE_ENDPOINT,
		      k->log->upload);
}

static int do_patch(struct call *k)
{
	struct stored_upload *u = find_upload(k);
	const char *off = header(k->req, "Upload-Offset");
	const char *len = header(k->req, "Upload-Length");
	uint64_t body = k->req->body ? k->req->body->length : 0, done = 0;
	int64_t length;
	int rc;

	k->log->offset = off ? strtoull(off, NULL, 10) : 0;
	k->log->length = len ? atoll(len) : -1;
	length = gone(u) || u->length < 0 ? k->log->length : u->length;
	match_fault(k,
		    length >= 0 && k->log->offset + body == (uint64_t)length);
	if (k->faulted && k->fault.store == 0) {
		rc = act(k);
		if (rc <= 0)
			return rc;
	}
	if (gone(u))
		return answer(k, 404, "%s", "");
	if (!off || k->log->offset != u->offset)
		return answer(k, 409, "%s", "");
	/* The length goes once (@tus/server refuses a second one). */
	if (len && u->length >= 0)
		return answer(k, 400, "%s", "");
	if (len)
		u->length = k->log->length;
	if (u->length >= 0 && u->offset + body > (uint64_t)u->length)
		return answer(k, 400, "%s", "");
	if (k->faulted) {
		rc = receive(k, u, &done,
			     k->fault.store < body ? k->fault.store : body);
		if (rc == 0)
			rc = act(k);
		if (rc <= 0)
			return rc;
	}
	rc = receive(k, u, &done, body);
	if (rc < 0)
		return rc;
	return answer(k, 204, "Upload-Offset: %llu\r\n",
		      (unsigned long long)u->offset);
}

static int do_head(struct call *k)
{
	struct stored_upload *u = find_upload(k);
	int rc;

	match_fault(k, false);
	rc = act(k);
	if (rc <= 0)
		return rc;
	if (gone(u))
		return answer(k, 404, "%s", "");
	if (u->length < 0)
		return answer(k, 200, "Upload-Offset: %llu\r\n",
			      (unsigned long long)u->offset);
	return answer(k, 200, "Upload-Offset: %llu\r\nUpload-Length: %lld\r\n",
		      (unsigned long long)u->offset, (long long)u->length);
}

static int do_delete(struct call *k)
{
	struct stored_upload *u = find_upload(k);
	int rc;

	match_fault(k, false);
	rc = act(k);
	if (rc <= 0)
		return rc;
	if (strncmp(k->req->url, FAKE_ORIGIN "/task/",
		    strlen(FAKE_ORIGIN "/task/")) == 0)
		return answer(k, 200, "%s", "");
	if (gone(u))
		return answer(k, 404, "%s", "");
	u->deleted = true;
	return answer(k, 204, "%s", "");
}

/* The newest upload whose metadata carries taskId task_id. Lock held. */
static int find_locked(struct fake_server *s, const char *task_id)
{
	struct tus_meta_pair p = {"taskId", task_id, strlen(task_id)};
	char *want = tus_metadata_encode(&p, 1);
	int found = -1;

	for (int i = s->nuploads - 1; want && i >= 0 && found < 0; i--) {
		const char *m = s->uploads[i].metadata;
		const char *hit = strstr(m, want);

		/* A whole pair: at the start or after a comma. */
		if (hit && (hit == m || hit[-1] == ',') &&
		    (hit[strlen(want)] == ',' || hit[strlen(want)] == '\0'))
			found = i;
	}
	free(want);
	return found;
}

/* GET /task/ID: completed, with one segment, once its upload is. */
static int do_get(struct call *k)
{
	static const char task[] =
	    "{\"status\": \"completed\", \"error\": null, \"result\": "
	    "{\"segments\": [{\"start\": 0.5, \"end\": 1.5, \"text\": \" "
	    "Hello\"}]}}";
	const char *prefix = FAKE_ORIGIN "/task/";
	const char *id = k->req->url + strlen(prefix);
	int i, rc;

	match_fault(k, false);
	rc = act(k);
	if (rc <= 0)
		return rc;
	if (strncmp(k->req->url, prefix, strlen(prefix)) != 0 ||
	    strchr(id, '/'))
		return answer(k, 404, "%s", "");
	i = find_locked(k->c->s, id);
	if (i < 0 || k->c->s->uploads[i].length < 0 ||
	    k->c->s->uploads[i].offset != (uint64_t)k->c->s->uploads[i].length)
		return answer(k, 404, "%s", "");
	rc = answer(k, 200, "Content-Type: application/json\r\n");
	if (rc == 0) {
		free(k->resp->body);
		k->resp->body = strdup(task);
		k->resp->body_len = strlen(task);
		rc = k->resp->body ? 0 : -ENOMEM;
	}
	return rc;
}

static int conn_perform(struct tus_http *h, const struct tus_http_request *req,
			struct tus_http_response *resp)
{
	struct conn *c = (struct conn *)h;
	struct fake_server *s = c->s;
	struct fake_logged scratch = {0};
	struct call k = {.c = c, .req = req, .resp = resp, .log = &scratch};
	const char *m = req->method;
	int rc;

	memset(resp, 0, sizeof(*resp));
	pthread_mutex_lock(&s->lock);
	if (s->nlog < MAX_LOG)
		k.log = &s->log[s->nlog++];
	*k.log = (struct fake_logged){.upload = -1, .length = -1};
	snprintf(k.log->method, sizeof(k.log->method), "%s", m);
	clock_gettime(CLOCK_MONOTONIC, &k.log->start);
	if (canceled(&k))
		rc = -ECANCELED;
	else if (strcmp(m, "POST") == 0)
		rc = do_post(&k);
	else if (strcmp(m, "PATCH") == 0)
		rc = do_patch(&k);
	else if (strcmp(m, "HEAD") == 0)
		rc = do_head(&k);
	else if (strcmp(m, "DELETE") == 0)
		rc = do_delete(&k);
	else if (strcmp(m, "GET") == 0)
		rc = do_get(&k);
	else
		rc = answer(&k, 405, "%s", "");
	if (rc < 0) {
		tus_http_response_clear(resp);
		snprintf(resp->error, sizeof(resp->error), "scripted: %s",
			 strerror(-rc));
		k.log->status = 0;
	}
	k.log->rc = rc;
	clock_gettime(CLOCK_MONOTONIC, &k.log->end);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

static void conn_destroy(struct tus_http *h)
{
	free(h);
}

static const struct tus_http_ops conn_ops = {
    .perform = conn_perform,
    .destroy = conn_destroy,
};

static struct tus_http *conn_create(void *arg, const atomic_int *abort_all)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->base.ops = &conn_ops;
	c->s = arg;
	c->abort_all = abort_all;
	return &c->base;
}

struct transport_factory fake_server_factory(struct fake_server *s)
{
	return (struct transport_factory){
	    .create = conn_create, .arg = s, .stall_timeout_s = 60};
}

struct fake_server *fake_server_create(void)
{
	struct fake_server *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	catalog_cond_init(&s->cv);
	return s;
}

void fake_server_free(struct fake_server *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->nuploads; i++) {
		free(s->uploads[i].metadata);
		free(s->uploads[i].data);
	}
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void fake_server_fault(struct fake_server *s, const struct fake_fault *f)
{
	pthread_mutex_lock(&s->lock);
	if (s->nfaults < MAX_FAULTS)
		s->faults[s->nfaults++] = *f;
	pthread_mutex_unlock(&s->lock);
}

void fake_server_take(struct fake_server *s, bool on)
{
	pthread_mutex_lock(&s->lock);
	s->take = on;
	pthread_mutex_unlock(&s->lock);
}

int fake_server_wait_stalled(struct fake_server *s, long timeout_ms)
{
	struct timespec t;
	int rc = 0;

	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += timeout_ms / 1000;
	t.tv_nsec += timeout_ms % 1000 * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->lock);
	while (s->stalled == 0 && rc == 0)
		rc = pthread_cond_timedwait(&s->cv, &s->lock, &t);
	rc = s->stalled > 0 ? 0 : -ETIMEDOUT;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void fake_server_release(struct fake_server *s)
{
	pthread_mutex_lock(&s->lock);
	s->release_gen++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->lock);
}

int fake_server_uploads(struct fake_server *s)
{
	int n;

	pthread_mutex_lock(&s->lock);
	n = s->nuploads;
	pthread_mutex_unlock(&s->lock);
	return n;
}

int fake_server_requests(struct fake_server *s)
{
	int n;

	pthread_mutex_lock(&s->lock);
	n = s->nlog;
	pthread_mutex_unlock(&s->lock);
	return n;
}

int fake_server_count(struct fake_server *s, const char *method)
{
	int n = 0;

	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nlog; i++)
		n += strcmp(s->log[i].method, method) == 0;
	pthread_mutex_unlock(&s->lock);
	return n;
}

int fake_server_logged(struct fake_server *s, int i, struct fake_logged *out)
{
	int rc = -ENOENT;

	pthread_mutex_lock(&s->lock);
	if (i >= 0 && i < s->nlog) {
		*out = s->log[i];
		rc = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

uint64_t fake_server_received(struct fake_server *s)
{
	uint64_t n;

	pthread_mutex_lock(&s->lock);
	n = s->received;
	pthread_mutex_unlock(&s->lock);
	return n;
}

int fake_server_find(struct fake_server *s, const char *task_id)
{
	int i;

	pthread_mutex_lock(&s->lock);
	i = find_locked(s, task_id);
	pthread_mutex_unlock(&s->lock);
	return i;
}

int fake_server_state(struct fake_server *s, int i,
		      struct fake_upload_state *out)
{
	int rc = -ENOENT;

	pthread_mutex_lock(&s->lock);
	if (i >= 0 && i < s->nuploads) {
		const struct stored_upload *u = &s->uploads[i];

		*out = (struct fake_upload_state){
		    .offset = u->offset,
		    .length = u->length,
		    .complete =
			u->length >= 0 && u->offset == (uint64_t)u->length,
		    .deleted = u->deleted,
		    .taken = u->taken,
		};
		rc = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

bool fake_server_holds(struct fake_server *s, int i, const void *data,
		       size_t len)
{
	bool same = false;

	pthread_mutex_lock(&s->lock);
	if (i >= 0 && i < s->nuploads) {
		const struct stored_upload *u = &s->uploads[i];

		same = u->offset == len &&
		       (len == 0 || memcmp(u->data, data, len) == 0);
	}
	pthread_mutex_unlock(&s->lock);
	return same;
}
