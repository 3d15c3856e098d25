/*
 * The journal's store and its writer thread (the record format is in
 * journal_codec.c, the mount-time load in journal_load.c).
 *
 * Why one file per node rather than an append-only log: a node's record is
 * replaced whole, so there is nothing to compact, a damaged record costs
 * exactly one entry, and the load is a directory scan.
 *
 * Why two copies in place rather than a new file renamed over the old one
 * at every change: each new file costs an inode allocation, a rename and a
 * directory fsync, which made the journal a third of the daemon's CPU per
 * small file. Copy 0 sits at offset 0 and copy 1 at JOURNAL_MAX_RECORD (the
 * file is sparse); the load takes the valid copy with the higher seq.
 */
#include "tusfs_setup.h"
#include "core/journal_int.h"
#include "core/log.h"
#include "tus/tus.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* One pending write: a record to replace, or (buf NULL) one to delete. */
struct op {
	struct node *n;
	uint64_t ino;
	char *buf;
	size_t len;
	/* The node's jcopy before the write, and after it if it succeeds. */
	unsigned char copy;
	int rc;
};

static pthread_mutex_t *mutex(struct journal *j)
{
	return catalog_mutex(j->cat);
}

void journal_mark(struct journal *j, struct node *n)
{
	if (!j)
		return;
	n->jseq = ++j->seq;
	if (n->jdirty)
		return;
	n->jdirty = true;
	n->jnext = NULL;
	catalog_get(n);
	if (j->tail)
		j->tail->jnext = n;
	else
		j->head = n;
	j->tail = n;
	pthread_cond_signal(&j->work_cv);
}

int journal_wait(struct journal *j, struct node *n)
{
	/* A failed write marks n again; that must not move the target. */
	uint64_t want = n->jseq;

	if (!j)
		return 0;
	while (j->done < want && j->started)
		pthread_cond_wait(&j->done_cv, mutex(j));
	return n->jerr;
}

bool journal_pending(const struct journal *j, const struct node *n)
{
	return j && (n->jdirty || j->done < n->jseq);
}

int journal_sync(struct journal *j, struct node *n)
{
	journal_mark(j, n);
	return journal_wait(j, n);
}

static void snapshot(const struct node *n, uint64_t seq,
		     struct journal_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = n->ino;
	e->parent = n->parent ? n->parent->ino : 0;
	e->seq = seq;
	e->mode = n->mode;
	e->uid = n->uid;
	e->gid = n->gid;
	e->atime = n->atime;
	e->mtime = n->mtime;
	e->ctime = n->ctime;
	/* Borrowed: encoded before the lock is dropped. */
	e->name = n->name;
	e->size = n->size;
	e->fp_valid = n->up.fp_valid;
	e->fp_size = n->up.fp_size;
	e->fp_hash = n->up.fp_hash;
	e->url = n->up.url;
	e->offset = n->up.offset;
	e->declared_length = n->up.declared_length;
	memcpy(e->task_id, n->up.task_id, sizeof(e->task_id));
	e->state = n->up.state;
	e->restart = n->up.restart;
	e->new_generation = n->up.new_generation;
	e->final_sent = n->up.final_sent;
	e->paused = n->paused;
	e->message = n->up.message;
	e->tr_state = n->tr.state;
	memcpy(e->tr_stage, n->tr.stage, sizeof(e->tr_stage));
	e->tr_percent = n->tr.percent;
	e->tr_since = n->tr.since;
	e->tr_done = n->tr.done_at;
	memcpy(e->tr_sizes, n->tr.sizes, sizeof(e->tr_sizes));
	e->tr_error = n->tr.error;
}

/* Writes buf at off in fd and makes it durable. */
static int put_copy(int fd, const struct op *op, off_t off)
{
	int rc = spool_pwrite(fd, op->buf, op->len, off);

	if (rc == 0 && fdatasync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

/*
 * Carries out op and sets op->copy to what the file then holds. Whether the
 * directory changed (a file created or removed) is added to *dir_changed.
 */
static int write_record(struct journal *j, struct op *op, bool *dir_changed)
{
	char name[32], tmp[40];
	int fd, rc;

	snprintf(name, sizeof(name), "%" PRIu64, op->ino);
	snprintf(tmp, sizeof(tmp), "%s.new", name);
	if (!op->buf) {
		if (unlinkat(j->dirfd, name, 0) < 0 && errno != ENOENT)
			return -errno;
		*dir_changed = true;
		op->copy = 0;
		return 0;
	}
	if (op->copy) {
		/* Overwrite the copy that is not the latest. */
		fd = openat(j->dirfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			return -errno;
		rc = put_copy(fd, op, op->copy == 1 ? SLOT : 0);
		if (rc == 0)
			op->copy = op->copy == 1 ? 2 : 1;
		return rc;
	}
	fd = openat(j->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0600);
	if (fd < 0)
		return -errno;
	rc = put_copy(fd, op, 0);
	if (rc == 0 && renameat(j->dirfd, tmp, j->dirfd, name) < 0)
		rc = -errno;
	if (rc < 0) {
		unlinkat(j->dirfd, tmp, 0);
		return rc;
	}
	*dir_changed = true;
	op->copy = 1;
	return 0;
}

/* Takes the dirty list as a batch of ops. Lock held. */
static struct op *take_batch(struct journal *j, size_t *count)
{
	size_t k = 0, cap = 0;
	struct op *ops = NULL;

	for (struct node *n = j->head; n; n = n->jnext)
		cap++;
	ops = calloc(cap, sizeof(*ops));
	if (!ops)
		return NULL;
	while (j->head) {
		struct node *n = j->head;
		struct op *op = &ops[k++];

		j->head = n->jnext;
		n->jdirty = false;
		op->n = n;
		op->ino = n->ino;
		op->copy = n->jcopy;
		if (!n->unlinked) {
			struct journal_entry e;

			snapshot(n, n->jseq, &e);
			op->rc = journal_encode(&e, &op->buf, &op->len);
		}
	}
	j->tail = NULL;
	*count = k;
	return ops;
}

static void *journal_main(void *arg)
{
	struct journal *j = arg;
	bool retry = false;

	pthread_mutex_lock(mutex(j));
	for (;;) {
		struct op *ops;
		size_t count = 0;
		uint64_t upto;
		bool failed = false, dir_changed = false;

		if (retry && !j->stopping) {
			struct timespec t;

			clock_gettime(CLOCK_MONOTONIC, &t);
			t.tv_sec += RETRY_S;
			pthread_cond_timedwait(&j->work_cv, mutex(j), &t);
		}
		while (!j->head && !j->stopping)
			pthread_cond_wait(&j->work_cv, mutex(j));
		if (!j->head)
			break;
		upto = j->seq;
		ops = take_batch(j, &count);
		if (!ops) {
			retry = true;
			continue;
		}
		pthread_mutex_unlock(mutex(j));
		for (size_t i = 0; i < count; i++)
			if (ops[i].rc == 0)
				ops[i].rc =
				    write_record(j, &ops[i], &dir_changed);
		/* The renames and unlinks are durable once the directory is. */
		if (dir_changed && fsync(j->dirfd) < 0)
			for (size_t i = 0; i < count; i++)
				if (ops[i].rc == 0)
					ops[i].rc = -errno;
		pthread_mutex_lock(mutex(j));
		for (size_t i = 0; i < count; i++) {
			struct node *n = ops[i].n;

			/* Said once per failure, not at every retry. */
			if (ops[i].rc < 0 && ops[i].rc != n->jerr)
				log_error("'%s': cannot write journal record "
					  "%" PRIu64 ": %s",
					  n->name, ops[i].ino,
					  strerror(-ops[i].rc));
			n->jerr = ops[i].rc;
			if (ops[i].rc == 0)
				n->jcopy = ops[i].copy;
			if (ops[i].rc < 0) {
				failed = true;
				/* Written again at the next round. */
				if (!j->stopping)
					journal_mark(j, n);
			}
			free(ops[i].buf);
			catalog_put(j->cat, n);
		}
		free(ops);
		j->done = upto;
		retry = failed;
		pthread_cond_broadcast(&j->done_cv);
		if (failed && j->stopping)
			break;
	}
	pthread_mutex_unlock(mutex(j));
	return NULL;
}

struct journal *journal_open(const char *state_dir, struct catalog *cat,
			     int *err)
{
	struct journal *j = calloc(1, sizeof(*j));
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/journal", state_dir);

	if (!j) {
		*err = -ENOMEM;
		return NULL;
	}
	if (n < 0 || (size_t)n >= sizeof(path)) {
		free(j);
		*err = -ENAMETOOLONG;
		return NULL;
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		*err = -errno;
		free(j);
		return NULL;
	}
	j->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd < 0) {
		*err = -errno;
		free(j);
		return NULL;
	}
	j->cat = cat;
	catalog_cond_init(&j->work_cv);
	catalog_cond_init(&j->done_cv);
	return j;
}

int journal_start(struct journal *j)
{
	int rc = -pthread_create(&j->thread, NULL, journal_main, j);

	if (rc == 0)
		j->started = true;
	return rc;
}

void journal_stop(struct journal *j)
{
	if (!j || !j->started)
		return;
	pthread_mutex_lock(mutex(j));
	j->stopping = true;
	pthread_cond_signal(&j->work_cv);
	pthread_mutex_unlock(mutex(j));
	pthread_join(j->thread, NULL);
	pthread_mutex_lock(mutex(j));
	j->started = false;
	pthread_cond_broadcast(&j->done_cv);
	pthread_mutex_unlock(mutex(j));
}

void journal_free(struct journal *j)
{
	if (!j)
		return;
	pthread_mutex_lock(mutex(j));
	while (j->head) {
		struct node *n = j->head;

		j->head = n->jnext;
		n->jdirty = false;
		catalog_put(j->cat, n);
	}
	pthread_mutex_unlock(mutex(j));
	close(j->dirfd);
	pthread_cond_destroy(&j->work_cv);
	pthread_cond_destroy(&j->done_cv);
	free(j);
}
