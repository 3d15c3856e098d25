/*
 * The upload engine's real workers (and the poller's threads) on a bare
 * catalog and spool, over the in-memory TUS server: no mount, no network.
 * Each test drives a file the way fs.c does (create, writes, close, fsync,
 * unlink, O_TRUNC), waits with a deadline for the outcome, and compares
 * what the server stored with what was written. engine_check() runs at
 * every observation, under the catalog lock, as its contract says.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "tus_fake_server.h"
#include "core/engine.h"
#include "core/poller.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

#define KIB 1024
/* How long any wait may take before the test fails: generous, for
 * valgrind; no test should come near it. */
#define WAIT_MS 20000

struct rig {
	char dir[64];
	struct fake_server *srv;
	struct catalog *cat;
	struct spool *spool;
	struct poller *poller;
	struct engine *e;
	uint64_t chunk;
	/* What the learned hook was told. */
	unsigned learned_calls;
	uint64_t learned;
};

struct rig_opts {
	unsigned workers;
	uint64_t chunk;
	/* A poller with a task API (transcripts on). */
	bool tasks;
};

static const struct rig_opts one_worker = {.workers = 1, .chunk = 64 * KIB};
static const struct rig_opts with_tasks = {
    .workers = 1, .chunk = 64 * KIB, .tasks = true};

/* A writer's handle, as fs.c's make_handle makes one. */
struct file {
	struct node *n;
	int fd;
};

static void remove_spool(struct node *n, void *arg)
{
	spool_remove(((struct rig *)arg)->spool, n->ino);
}

static void on_learned(void *arg, uint64_t max_body)
{
	struct rig *r = arg;

	r->learned_calls++;
	r->learned = max_body;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double ts_s(const struct timespec *t)
{
	return (double)t->tv_sec + (double)t->tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec t = {ms / 1000, ms % 1000 * 1000000L};

	nanosleep(&t, NULL);
}

/* Builds the rig; the engine's workers are not started yet. */
static int rig_up(struct rig *r, const struct rig_opts *o)
{
	struct engine_config ec = {
	    .endpoint = FAKE_ENDPOINT,
	    .server = {.extensions = TUS_EXT_CREATION |
				     TUS_EXT_CREATION_DEFER_LENGTH |
				     TUS_EXT_TERMINATION},
	    .chunk_size = o->chunk,
	    .workers = o->workers,
	    .cache_size = 1 << 30,
	    .learned = on_learned,
	    .learned_arg = r,
	};
	uint64_t max_id = 0;
	int err = 0;

	memset(r, 0, sizeof(*r));
	snprintf(r->dir, sizeof(r->dir), "/tmp/tusfs-engine-XXXXXX");
	if (!mkdtemp(r->dir))
		return -errno;
	r->chunk = o->chunk;
	r->srv = fake_server_create();
	r->spool = spool_open_dir(r->dir, &max_id, &err);
	r->cat =
	    catalog_create(getuid(), getgid(), max_id + 1, remove_spool, r);
	if (!r->srv || !r->spool || !r->cat)
		return err ? err : -ENOMEM;
	ec.transport = fake_server_factory(r->srv);
	if (o->tasks) {
		struct poller_config pc = {
		    .task_url = FAKE_TASK_URL,
		    .transcripts = true,
		    .task_timeout_s = 60,
		    .max_task_json = 1 << 20,
		    .state_dir = r->dir,
		    .transport = ec.transport,
		};

		r->poller = poller_create(&pc, r->cat, &err);
		if (!r->poller)
			return err;
		ec.poller = r->poller;
	}
	r->e = engine_create(&ec, r->cat, r->spool, &err);
	return r->e ? 0 : err;
}

static int rig_start(struct rig *r)
{
	int rc = engine_start(r->e);

	if (rc == 0 && r->poller)
		rc = poller_start(r->poller);
	return rc;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
			struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Stops the threads (a stalled request ends with the engine's abort) and
 * frees the rig, as main.c's release does. */
static void rig_down(struct rig *r)
{
	if (r->e)
		engine_stop(r->e);
	if (r->poller)
		poller_stop(r->poller);
	engine_free(r->e);
	poller_free(r->poller);
	catalog_free(r->cat);
	spool_free(r->spool);
	fake_server_free(r->srv);
	nftw(r->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Bytes that say where they belong: a misplaced chunk shows. */
static unsigned char *pattern(size_t len, unsigned seed)
{
	unsigned char *p = malloc(len ? len : 1);

	for (size_t i = 0; p && i < len; i++)
		p[i] = (unsigned char)((i * 131 + seed) ^ (i >> 9));
	return p;
}

/* fs.c's tfs_create: a new file with one writer. */
static int file_create(struct rig *r, const char *name, struct file *f)
{
	int rc;

	catalog_lock(r->cat);
	rc = catalog_add(r->cat, catalog_root(r->cat), name, S_IFREG | 0644,
			 getuid(), getgid(), &f->n);
	if (rc == 0) {
		engine_renamed(r->e, f->n);
		rc = engine_new_upload(r->e, f->n);
	}
	if (rc == 0) {
		f->fd =
		    spool_open(r->spool, f->n->ino, O_RDWR | O_CREAT | O_TRUNC);
		rc = f->fd < 0 ? f->fd : 0;
	}
	if (rc == 0) {
		catalog_get(f->n);
		f->n->opens++;
		f->n->writers++;
	}
	catalog_unlock(r->cat);
	return rc;
}

/* fs.c's tfs_open for writing, with or without O_TRUNC. */
static int file_open(struct rig *r, struct node *n, bool trunc, struct file *f)
{
	int rc = 0;

	catalog_lock(r->cat);
	f->n = n;
	f->fd = spool_open(r->spool, n->ino, O_RDWR | (trunc ? O_CREAT : 0));
	if (f->fd < 0)
		rc = f->fd;
	if (rc == 0) {
		catalog_get(n);
		n->opens++;
		n->writers++;
	}
	if (rc == 0 && trunc) {
		rc = ftruncate(f->fd, 0) < 0 ? -errno : 0;
		n->size = 0;
		if (rc == 0)
			rc = engine_new_upload(r->e, n);
	}
	catalog_unlock(r->cat);
	return rc;
}

/* fs.c's tfs_write, without the running fingerprint and the disk check. */
static int file_write(struct rig *r, struct file *f, const void *buf,
		      size_t len, uint64_t off)
{
	struct node *n = f->n;
	uint64_t end = off + len;
	int rc;

	catalog_lock(r->cat);
	if (off < n->up.sent_mark)
		n->up.restart = true;
	n->up.fp_valid = false;
	n->up.content_gen++;
	catalog_unlock(r->cat);
	rc = spool_pwrite(f->fd, buf, len, (off_t)off);
	catalog_lock(r->cat);
	if (rc == 0) {
		if (off < n->up.sent_mark && !n->up.restart)
			n->up.restart = true;
		if (end > n->size) {
			bool crossed = end / r->chunk > n->size / r->chunk;

			n->size = end;
			if (crossed)
				engine_kick(r->e, n);
		}
		if (n->up.restart)
			engine_kick(r->e, n);
		engine_check(r->e, n);
	}
	catalog_unlock(r->cat);
	return rc;
}

/* fs.c's put_handle: the last writer's close seals the size. */
static void file_close(struct rig *r, struct file *f)
{
	catalog_lock(r->cat);
	close(f->fd);
	f->n->opens--;
	if (--f->n->writers == 0)
		engine_kick(r->e, f->n);
	engine_check(r->e, f->n);
	catalog_put(r->cat, f->n);
	catalog_unlock(r->cat);
}

/* fs.c's tfs_unlink. The caller keeps its own reference to n. */
static void file_unlink(struct rig *r, struct node *n)
{
	catalog_lock(r->cat);
	catalog_get(n);
	atomic_store(&n->up.cancel, 1);
	catalog_unlink(r->cat, n);
	engine_kick(r->e, n);
	catalog_put(r->cat, n);
	catalog_unlock(r->cat);
}

/* Creates name with len bytes of data in two writes, and closes it. */
static struct node *put_file(struct rig *r, const char *name,
			     const unsigned char *data, size_t len)
{
	struct file f;

	if (file_create(r, name, &f) < 0 ||
	    file_write(r, &f, data, len / 2, 0) < 0 ||
	    file_write(r, &f, data + len / 2, len - len / 2, len / 2) < 0)
		return NULL;
	file_close(r, &f);
	return f.n;
}

/* fs.c's tfs_fsync: waits, a second at a time, for target bytes. */
static int file_fsync(struct rig *r, struct node *n)
{
	struct engine_sync sync = {0};
	double give_up = now_s() + WAIT_MS / 1000.0;
	int rc;

	catalog_lock(r->cat);
	sync.target = n->size;
	do {
		struct timespec deadline;

		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += 1;
		rc = engine_wait_confirmed(r->e, n, &sync, &deadline);
		engine_check(r->e, n);
	} while (rc == -EAGAIN && now_s() < give_up);
	catalog_unlock(r->cat);
	return rc;
}

typedef bool until_fn(struct rig *r, const struct node *n);

/* Polls done (lock held, engine_check beside it) until it holds or the
 * deadline passes. */
static bool wait_until(struct rig *r, const struct node *n, until_fn *done)
{
	double give_up = now_s() + WAIT_MS / 1000.0;

	for (;;) {
		bool ok;

		catalog_lock(r->cat);
		ok = done(r, n);
		engine_check(r->e, n);
		catalog_unlock(r->cat);
		if (ok)
			return true;
		if (now_s() > give_up)
			return false;
		sleep_ms(5);
	}
}

/* The worker let go of n. */
static bool settled(const struct node *n)
{
	return !n->up.active && !n->up.queued;
}

static bool uploaded(struct rig *r, const struct node *n)
{
	(void)r;
	return n->up.state == UPLOAD_UPLOADED && settled(n);
}

static bool failed(struct rig *r, const struct node *n)
{
	(void)r;
	return n->up.state == UPLOAD_FAILED && settled(n);
}

static bool let_go(struct rig *r, const struct node *n)
{
	(void)r;
	return settled(n);
}

static bool transcribed(struct rig *r, const struct node *n)
{
	(void)r;
	return n->tr.state == TR_COMPLETED;
}

/* The upload the server holds for n's current taskId, or -1. */
static int upload_of(struct rig *r, const struct node *n)
{
	char id[sizeof(n->up.task_id)];

	catalog_lock(r->cat);
	memcpy(id, n->up.task_id, sizeof(id));
	catalog_unlock(r->cat);
	return fake_server_find(r->srv, id);
}

/* Index in the log of the first request at or after i with method. */
static int next_request(struct rig *r, int i, const char *method,
			struct fake_logged *out)
{
	for (; fake_server_logged(r->srv, i, out) == 0; i++)
		if (strcmp(out->method, method) == 0)
			return i;
	return -1;
}

static void put_node(struct rig *r, struct node *n)
{
	catalog_lock(r->cat);
	catalog_put(r->cat, n);
	catalog_unlock(r->cat);
}

TEST(plain_multi_chunk_upload)
{
	struct rig r;
	size_t len = 200 * KIB + 123;
	unsigned char *data = pattern(len, 1);
	struct fake_logged l;
	struct node *n;
	int up;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	n = put_file(&r, "talk.wav", data, len);
	ASSERT(n);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT(wait_until(&r, n, uploaded));
	up = upload_of(&r, n);
	ASSERT_EQ(up, 0);
	ASSERT(fake_server_holds(r.srv, up, data, len));
	ASSERT_EQ(fake_server_count(r.srv, "POST"), 1);
	/* Four chunks, each at the offset the last one left, no more than
	 * a chunk each; the length went with the POST, not a PATCH. */
	ASSERT_EQ(fake_server_count(r.srv, "PATCH"), 4);
	for (int i = 0, k = 0; (i = next_request(&r, i, "PATCH", &l)) >= 0;
	     i++, k++) {
		ASSERT_EQ(l.offset, (uint64_t)k * 64 * KIB);
		ASSERT(l.stored <= 64 * KIB);
		ASSERT_EQ(l.length, -1);
		ASSERT_EQ(l.status, 204);
	}
	ASSERT_EQ(fake_server_received(r.srv), len);
	rig_down(&r);
	free(data);
}

TEST(two_workers_several_files)
{
	static const size_t sizes[] = {1, 64 * KIB, 64 * KIB + 1, 150 * KIB};
	struct rig r;
	struct node *n[4];
	unsigned char *data[4];
	char name[32];

	ASSERT_EQ(
	    rig_up(&r, &(struct rig_opts){.workers = 2, .chunk = 64 * KIB}), 0);
	ASSERT_EQ(rig_start(&r), 0);
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "f%d.mp3", i);
		data[i] = pattern(sizes[i], (unsigned)i + 7);
		n[i] = put_file(&r, name, data[i], sizes[i]);
		ASSERT(n[i]);
	}
	for (int i = 0; i < 4; i++) {
		ASSERT(wait_until(&r, n[i], uploaded));
		ASSERT(fake_server_holds(r.srv, upload_of(&r, n[i]), data[i],
					 sizes[i]));
	}
	ASSERT_EQ(fake_server_count(r.srv, "POST"), 4);
	rig_down(&r);
	for (int i = 0; i < 4; i++)
		free(data[i]);
}

/* Whole chunks go while the writer has the file open (deferred length);
 * the length goes once, with the PATCH after the last close. */
TEST(streams_while_open_and_declares_length_once)
{
	struct rig r;
	size_t len = 150 * KIB;
	unsigned char *data = pattern(len, 2);
	struct fake_logged l;
	struct file f;
	int lengths = 0;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT_EQ(file_create(&r, "rec.wav", &f), 0);
	ASSERT_EQ(file_write(&r, &f, data, 130 * KIB, 0), 0);
	for (double t = now_s() + WAIT_MS / 1000.0;
	     fake_server_received(r.srv) < 128 * KIB && now_s() < t;)
		sleep_ms(5);
	ASSERT_EQ(fake_server_received(r.srv), 128 * KIB);
	ASSERT_EQ(
	    file_write(&r, &f, data + 130 * KIB, len - 130 * KIB, 130 * KIB),
	    0);
	file_close(&r, &f);
	ASSERT(wait_until(&r, f.n, uploaded));
	ASSERT(fake_server_holds(r.srv, upload_of(&r, f.n), data, len));
	for (int i = 0; (i = next_request(&r, i, "PATCH", &l)) >= 0; i++) {
		if (l.length >= 0) {
			ASSERT_EQ(l.length, len);
			ASSERT_EQ(l.offset + l.stored, len);
			lengths++;
		}
	}
	ASSERT_EQ(lengths, 1);
	rig_down(&r);
	free(data);
}

TEST(conflict_heads_and_goes_on)
{
	struct rig r;
	size_t len = 200 * KIB;
	unsigned char *data = pattern(len, 3);
	struct fake_logged l;
	struct node *n;
	int i;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .skip = 1,
						      .action = FAKE_ANSWER,
						      .status = 409});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT(wait_until(&r, n, uploaded));
	ASSERT(fake_server_holds(r.srv, 0, data, len));
	ASSERT_EQ(fake_server_uploads(r.srv), 1);
	/* The 409, then at once a HEAD, then the same chunk again. */
	for (i = 0; fake_server_logged(r.srv, i, &l) == 0 && l.status != 409;
	     i++)
		;
	ASSERT_EQ(l.status, 409);
	ASSERT_EQ(fake_server_logged(r.srv, i + 1, &l), 0);
	ASSERT_STREQ(l.method, "HEAD");
	ASSERT_EQ(fake_server_logged(r.srv, i + 2, &l), 0);
	ASSERT_STREQ(l.method, "PATCH");
	ASSERT_EQ(l.offset, 64 * KIB);
	ASSERT_EQ(fake_server_received(r.srv), len);
	rig_down(&r);
	free(data);
}

/* An upload gone before its last byte: a new one, from the spool. */
TEST(gone_before_last_byte_starts_over)
{
	static const long statuses[] = {404, 410};

	for (int k = 0; k < 2; k++) {
		struct rig r;
		size_t len = 200 * KIB;
		unsigned char *data = pattern(len, 4);
		struct node *n;
		int up;

		ASSERT_EQ(rig_up(&r, &one_worker), 0);
		fake_server_fault(r.srv,
				  &(struct fake_fault){.method = "PATCH",
						       .skip = 1,
						       .action = FAKE_ANSWER,
						       .status = statuses[k]});
		n = put_file(&r, "a.wav", data, len);
		ASSERT(n);
		ASSERT_EQ(rig_start(&r), 0);
		ASSERT(wait_until(&r, n, uploaded));
		ASSERT_EQ(fake_server_count(r.srv, "POST"), 2);
		up = upload_of(&r, n);
		ASSERT_EQ(up, 1);
		ASSERT(fake_server_holds(r.srv, up, data, len));
		rig_down(&r);
		free(data);
	}
}

/*
 * The service took the file in the request that carried its last byte:
 * the answer lost, or a 404/410 to it. Uploaded, never sent again, and
 * the task (polled by the real poller) decides.
 */
TEST(taken_after_final_patch_is_uploaded)
{
	static const struct fake_fault faults[] = {
	    {.method = "PATCH",
	     .final_only = true,
	     .store = FAKE_ALL,
	     .action = FAKE_RESET},
	    {.method = "PATCH",
	     .final_only = true,
	     .store = FAKE_ALL,
	     .action = FAKE_ANSWER,
	     .status = 410},
	};

	for (int k = 0; k < 2; k++) {
		struct rig r;
		size_t len = 100 * KIB;
		unsigned char *data = pattern(len, 5);
		struct fake_upload_state st;
		struct node *n;
		int fd;

		ASSERT_EQ(rig_up(&r, &with_tasks), 0);
		fake_server_take(r.srv, true);
		fake_server_fault(r.srv, &faults[k]);
		n = put_file(&r, "lecture.wav", data, len);
		ASSERT(n);
		ASSERT_EQ(rig_start(&r), 0);
		ASSERT(wait_until(&r, n, uploaded));
		ASSERT_EQ(fake_server_uploads(r.srv), 1);
		ASSERT_EQ(fake_server_state(r.srv, 0, &st), 0);
		ASSERT(st.taken);
		ASSERT(fake_server_holds(r.srv, 0, data, len));
		ASSERT_EQ(fake_server_received(r.srv), len);
		ASSERT(wait_until(&r, n, transcribed));
		fd = poller_open_transcript(r.poller, n, RENDER_TXT);
		ASSERT(fd >= 0);
		close(fd);
		rig_down(&r);
		free(data);
	}
}

/* Without a task API a 404 to the last byte still means lost. */
TEST(gone_after_final_patch_without_tasks_uploads_again)
{
	struct rig r;
	size_t len = 100 * KIB;
	unsigned char *data = pattern(len, 6);
	struct node *n;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .final_only = true,
						      .action = FAKE_ANSWER,
						      .status = 404});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT(wait_until(&r, n, uploaded));
	ASSERT_EQ(fake_server_count(r.srv, "POST"), 2);
	ASSERT(fake_server_holds(r.srv, 1, data, len));
	rig_down(&r);
	free(data);
}

TEST(server_error_waits_for_retry_after)
{
	struct rig r;
	size_t len = 200 * KIB;
	unsigned char *data = pattern(len, 8);
	struct fake_logged err, next;
	struct node *n;
	int i;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .skip = 1,
						      .action = FAKE_ANSWER,
						      .status = 500,
						      .retry_after = 1});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT(wait_until(&r, n, uploaded));
	ASSERT(fake_server_holds(r.srv, 0, data, len));
	for (i = 0;
	     fake_server_logged(r.srv, i, &err) == 0 && err.status != 500; i++)
		;
	ASSERT_EQ(err.status, 500);
	/* The retry reads the offset first, and not before Retry-After. */
	ASSERT_EQ(fake_server_logged(r.srv, i + 1, &next), 0);
	ASSERT_STREQ(next.method, "HEAD");
	ASSERT(ts_s(&next.start) - ts_s(&err.end) >= 0.95);
	ASSERT_EQ(fake_server_received(r.srv), len);
	rig_down(&r);
	free(data);
}

/* Unlink while a PATCH is on the wire: aborted, then terminated. */
TEST(unlink_aborts_the_patch_in_flight)
{
	struct rig r;
	size_t len = 200 * KIB;
	unsigned char *data = pattern(len, 9);
	struct fake_upload_state st;
	struct fake_logged l;
	struct node *n;
	int i;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .store = 16 * KIB,
						      .action = FAKE_STALL});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	catalog_lock(r.cat);
	catalog_get(n);
	catalog_unlock(r.cat);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT_EQ(fake_server_wait_stalled(r.srv, WAIT_MS), 0);
	file_unlink(&r, n);
	ASSERT(wait_until(&r, n, let_go));
	ASSERT_EQ(fake_server_state(r.srv, 0, &st), 0);
	ASSERT(st.deleted);
	i = next_request(&r, 0, "PATCH", &l);
	ASSERT(i >= 0);
	ASSERT_EQ(l.rc, -ECANCELED);
	ASSERT_EQ(fake_server_logged(r.srv, i + 1, &l), 0);
	ASSERT_STREQ(l.method, "DELETE");
	ASSERT_EQ(fake_server_requests(r.srv), i + 2);
	ASSERT_EQ(fake_server_uploads(r.srv), 1);
	put_node(&r, n);
	rig_down(&r);
	free(data);
}

/*
 * Whether every complete upload the server keeps holds one of the
 * versions written, whole: nothing else may ever be complete there.
 */
static bool only_versions(struct rig *r, const unsigned char *a, size_t alen,
			  const unsigned char *b, size_t blen)
{
	for (int i = 0; i < fake_server_uploads(r->srv); i++) {
		struct fake_upload_state st;

		if (fake_server_state(r->srv, i, &st) < 0)
			return false;
		if (!st.complete || st.deleted)
			continue;
		if (!fake_server_holds(r->srv, i, a, alen) &&
		    !fake_server_holds(r->srv, i, b, blen)) {
			fprintf(stderr,
				"  upload %d is complete and holds "
				"neither version\n",
				i);
			return false;
		}
	}
	return true;
}

/*
 * O_TRUNC (a new generation) while a PATCH of the old one is on the wire,
 * in the middle of the upload (final false) or carrying its last byte:
 * the request is aborted, the old upload never completes with bytes of
 * the new one, and the new one goes up whole.
 */
TEST(new_generation_aborts_the_patch_in_flight)
{
	for (int final = 1; final >= 0; final--) {
		struct rig r;
		size_t alen = 100 * KIB, blen = 150 * KIB;
		unsigned char *a = pattern(alen, 10), *b = pattern(blen, 11);
		struct fake_upload_state st;
		struct fake_logged l;
		struct node *n;
		struct file f;
		int i;

		ASSERT_EQ(rig_up(&r, &one_worker), 0);
		fake_server_fault(r.srv,
				  &(struct fake_fault){.method = "PATCH",
						       .final_only = final,
						       .store = 8 * KIB,
						       .action = FAKE_STALL});
		n = put_file(&r, "a.wav", a, alen);
		ASSERT(n);
		ASSERT_EQ(rig_start(&r), 0);
		ASSERT_EQ(fake_server_wait_stalled(r.srv, WAIT_MS), 0);
		ASSERT_EQ(file_open(&r, n, true, &f), 0);
		ASSERT_EQ(file_write(&r, &f, b, blen, 0), 0);
		file_close(&r, &f);
		fake_server_release(r.srv);
		ASSERT(wait_until(&r, n, uploaded));
		i = next_request(&r, 0, "PATCH", &l);
		while (i >= 0 && l.rc == 0)
			i = next_request(&r, i + 1, "PATCH", &l);
		ASSERT(only_versions(&r, a, alen, b, blen));
		ASSERT(i >= 0);
		ASSERT_EQ(l.rc, -ECANCELED);
		ASSERT_EQ(fake_server_state(r.srv, 0, &st), 0);
		ASSERT(st.deleted);
		ASSERT(fake_server_holds(r.srv, upload_of(&r, n), b, blen));
		rig_down(&r);
		free(a);
		free(b);
	}
}

/*
 * A rewrite of sent bytes while the PATCH carrying the last byte is on
 * the wire: whatever that request completed is terminated, and the file
 * goes up again, whole, under a new taskId.
 */
TEST(rewrite_during_final_patch_starts_over)
{
	struct rig r;
	size_t len = 100 * KIB;
	unsigned char *data = pattern(len, 12), *patch = pattern(4 * KIB, 13);
	char first_id[sizeof(((struct node *)0)->up.task_id)];
	struct fake_upload_state st;
	struct node *n;
	struct file f;
	int up;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .final_only = true,
						      .store = 8 * KIB,
						      .action = FAKE_STALL});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	memcpy(first_id, n->up.task_id, sizeof(first_id));
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT_EQ(fake_server_wait_stalled(r.srv, WAIT_MS), 0);
	/* Bytes the server has, and bytes the stalled request has yet to
	 * read. */
	ASSERT_EQ(file_open(&r, n, false, &f), 0);
	ASSERT_EQ(file_write(&r, &f, patch, 4 * KIB, 0), 0);
	ASSERT_EQ(file_write(&r, &f, patch, 4 * KIB, 90 * KIB), 0);
	file_close(&r, &f);
	memcpy(data, patch, 4 * KIB);
	memcpy(data + 90 * KIB, patch, 4 * KIB);
	fake_server_release(r.srv);
	ASSERT(wait_until(&r, n, uploaded));
	catalog_lock(r.cat);
	up = strcmp(first_id, n->up.task_id);
	catalog_unlock(r.cat);
	ASSERT(up != 0);
	ASSERT_EQ(fake_server_state(r.srv, 0, &st), 0);
	ASSERT(st.deleted);
	up = upload_of(&r, n);
	ASSERT_EQ(up, 1);
	ASSERT(fake_server_holds(r.srv, up, data, len));
	ASSERT_EQ(fake_server_state(r.srv, up, &st), 0);
	ASSERT(st.complete && !st.deleted);
	rig_down(&r);
	free(data);
	free(patch);
}

/* fsync returns 0 once the server confirmed what was written, with the
 * writer still open. */
TEST(fsync_returns_once_confirmed)
{
	struct rig r;
	size_t len = 100 * KIB;
	unsigned char *data = pattern(len, 14);
	struct file f;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT_EQ(file_create(&r, "memo.wav", &f), 0);
	ASSERT_EQ(file_write(&r, &f, data, len, 0), 0);
	ASSERT_EQ(file_fsync(&r, f.n), 0);
	catalog_lock(r.cat);
	ASSERT(f.n->up.offset >= len);
	catalog_unlock(r.cat);
	ASSERT_EQ(fake_server_received(r.srv), len);
	file_close(&r, &f);
	ASSERT(wait_until(&r, f.n, uploaded));
	ASSERT(fake_server_holds(r.srv, upload_of(&r, f.n), data, len));
	rig_down(&r);
	free(data);
}

TEST(fsync_fails_with_the_upload)
{
	struct rig r;
	size_t len = 100 * KIB;
	unsigned char *data = pattern(len, 15);
	struct node *n;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .action = FAKE_ANSWER,
						      .status = 403});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT_EQ(file_fsync(&r, n), -EIO);
	ASSERT(wait_until(&r, n, failed));
	catalog_lock(r.cat);
	ASSERT(n->up.message && strstr(n->up.message, "403"));
	catalog_unlock(r.cat);
	rig_down(&r);
	free(data);
}

/* Paused: the request in flight stops and nothing goes; resumed: on from
 * the server's offset, no byte sent twice. */
TEST(pause_stops_and_resume_goes_on)
{
	struct rig r;
	size_t len = 256 * KIB;
	unsigned char *data = pattern(len, 16);
	struct fake_logged l;
	struct node *n;
	int i, count;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .skip = 1,
						      .store = 16 * KIB,
						      .action = FAKE_STALL});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT_EQ(fake_server_wait_stalled(r.srv, WAIT_MS), 0);
	catalog_lock(r.cat);
	engine_pause(r.e, n, true);
	engine_check(r.e, n);
	catalog_unlock(r.cat);
	ASSERT(wait_until(&r, n, let_go));
	count = fake_server_requests(r.srv);
	sleep_ms(300);
	ASSERT_EQ(fake_server_requests(r.srv), count);
	catalog_lock(r.cat);
	ASSERT(n->up.state != UPLOAD_UPLOADED);
	engine_check(r.e, n);
	engine_pause(r.e, n, false);
	catalog_unlock(r.cat);
	ASSERT(wait_until(&r, n, uploaded));
	ASSERT(fake_server_holds(r.srv, 0, data, len));
	ASSERT_EQ(fake_server_received(r.srv), len);
	for (i = 0; fake_server_logged(r.srv, i, &l) == 0 && l.rc == 0; i++)
		;
	ASSERT_STREQ(l.method, "PATCH");
	ASSERT_EQ(l.rc, -ECANCELED);
	ASSERT_EQ(fake_server_logged(r.srv, i + 1, &l), 0);
	ASSERT_STREQ(l.method, "HEAD");
	ASSERT_EQ(fake_server_logged(r.srv, i + 2, &l), 0);
	ASSERT_STREQ(l.method, "PATCH");
	ASSERT_EQ(l.offset, 80 * KIB);
	rig_down(&r);
	free(data);
}

TEST(rate_limit_slows_the_upload)
{
	struct rig r;
	size_t len = 256 * KIB;
	unsigned char *data = pattern(len, 17);
	struct node *n;
	double t0;

	ASSERT_EQ(rig_up(&r, &one_worker), 0);
	engine_set_rate(r.e, 256 * KIB);
	ASSERT_EQ(engine_rate(r.e), 256 * KIB);
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	t0 = now_s();
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT(wait_until(&r, n, uploaded));
	/* 256 KiB at 256 KiB/s, the first slice free: about 0.94 s at
	 * least. Only a lower bound: a slow machine is no failure. */
	ASSERT(now_s() - t0 >= 0.8);
	ASSERT(fake_server_holds(r.srv, 0, data, len));
	rig_down(&r);
	free(data);
}

/* A 413 halves the request size for the endpoint and says so once. */
TEST(too_large_halves_the_request_size)
{
	struct rig r;
	size_t len = 300 * KIB;
	unsigned char *data = pattern(len, 18);
	struct fake_logged l;
	struct node *n;
	int i;

	ASSERT_EQ(
	    rig_up(&r, &(struct rig_opts){.workers = 1, .chunk = 256 * KIB}),
	    0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .action = FAKE_ANSWER,
						      .status = 413});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT(wait_until(&r, n, uploaded));
	ASSERT(fake_server_holds(r.srv, 0, data, len));
	ASSERT_EQ(r.learned_calls, 1);
	ASSERT_EQ(r.learned, 128 * KIB);
	i = next_request(&r, 0, "PATCH", &l);
	ASSERT_EQ(l.status, 413);
	while ((i = next_request(&r, i + 1, "PATCH", &l)) >= 0)
		ASSERT(l.stored <= 128 * KIB);
	rig_down(&r);
	free(data);
}

/* A body refused at the floor fails the file, naming the size. */
TEST(too_large_at_the_floor_fails)
{
	struct rig r;
	size_t len = 100 * KIB;
	unsigned char *data = pattern(len, 19);
	struct node *n;

	ASSERT_EQ(rig_up(&r, &(struct rig_opts){.workers = 1,
						.chunk = ENGINE_MIN_BODY}),
		  0);
	fake_server_fault(r.srv, &(struct fake_fault){.method = "PATCH",
						      .action = FAKE_ANSWER,
						      .status = 413});
	n = put_file(&r, "a.wav", data, len);
	ASSERT(n);
	ASSERT_EQ(rig_start(&r), 0);
	ASSERT(wait_until(&r, n, failed));
	ASSERT_EQ(r.learned_calls, 0);
	catalog_lock(r.cat);
	ASSERT(n->up.message && strstr(n->up.message, "65536"));
	catalog_unlock(r.cat);
	rig_down(&r);
	free(data);
}

TEST_MAIN
