/*
 * Journal records, their store, the writer thread and the mount-time load.
 *
 * A record is a 20-byte header (magic "TUSJ", version, body length, xxh3 of
 * the body) and a body of tagged fields (u8 tag, u32 length, value; numbers
 * little-endian). Unknown tags are skipped, so a newer tusfs can add fields;
 * every known field is range-checked, so a record that passes the checksum
 * but not the checks is still refused.
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
#include "core/journal.h"
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

#define MAGIC	    "TUSJ"
#define VERSION	    1
#define HEADER_LEN  20
#define MAX_URL	    8192
#define MAX_MESSAGE 4096
#define LOST_FOUND  "lost+found"
/* Where each copy of a record starts in its file. */
#define SLOT JOURNAL_MAX_RECORD
/* After a failed write, wait this long before trying again. */
#define RETRY_S 1

enum tag {
	T_INO = 1,
	T_PARENT,
	T_SEQ,
	T_MODE,
	T_UID,
	T_GID,
	T_ATIME,
	T_MTIME,
	T_CTIME,
	T_NAME,
	T_SIZE,
	T_FINGERPRINT,
	T_URL,
	T_OFFSET,
	T_LENGTH,
	T_TASK_ID,
	T_STATE,
	T_FLAGS,
	T_MESSAGE,
	T_TR_STATE,
	T_TR_STAGE,
	T_TR_PERCENT,
	T_TR_SINCE,
	T_TR_DONE,
	T_TR_SIZES,
	T_TR_ERROR,
	T_COUNT
};

#define FLAG_RESTART	    1u
#define FLAG_NEW_GENERATION 2u
#define FLAG_FINAL_SENT	    4u
#define FLAG_PAUSED	    8u

/* ---------------------------------------------------------------------- */
/* Encoding */

struct out {
	char *p;
	size_t len;
};

static void put_le(struct out *o, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		o->p[o->len++] = (char)(v >> (8 * i));
}

static void put_field(struct out *o, enum tag t, const void *v, size_t len)
{
	put_le(o, (uint64_t)t, 1);
	put_le(o, len, 4);
	memcpy(o->p + o->len, v, len);
	o->len += len;
}

static void put_u64(struct out *o, enum tag t, uint64_t v)
{
	put_le(o, (uint64_t)t, 1);
	put_le(o, 8, 4);
	put_le(o, v, 8);
}

static void put_pair(struct out *o, enum tag t, uint64_t a, uint64_t b)
{
	put_le(o, (uint64_t)t, 1);
	put_le(o, 16, 4);
	put_le(o, a, 8);
	put_le(o, b, 8);
}

static void put_time(struct out *o, enum tag t, const struct timespec *ts)
{
	put_pair(o, t, (uint64_t)ts->tv_sec, (uint64_t)ts->tv_nsec);
}

static size_t str_len(const char *s)
{
	return s ? strlen(s) : 0;
}

static void put_transcription(struct out *o, const struct journal_entry *e)
{
	if (e->tr_state == TR_NONE)
		return;
	put_u64(o, T_TR_STATE, e->tr_state);
	if (e->tr_stage[0])
		put_field(o, T_TR_STAGE, e->tr_stage, strlen(e->tr_stage));
	put_u64(o, T_TR_PERCENT, (uint64_t)(int64_t)e->tr_percent);
	put_time(o, T_TR_SINCE, &e->tr_since);
	put_time(o, T_TR_DONE, &e->tr_done);
	put_le(o, T_TR_SIZES, 1);
	put_le(o, sizeof(e->tr_sizes), 4);
	for (size_t i = 0; i < 4; i++)
		put_le(o, e->tr_sizes[i], 8);
	if (e->tr_error)
		put_field(o, T_TR_ERROR, e->tr_error, strlen(e->tr_error));
}

int journal_encode(const struct journal_entry *e, char **buf, size_t *len)
{
	size_t names = str_len(e->name) + str_len(e->url) +
		       str_len(e->message) + str_len(e->task_id) +
		       str_len(e->tr_error) + sizeof(e->tr_stage) +
		       sizeof(e->tr_sizes);
	/* Fixed fields: at most T_COUNT of 5 + 16 bytes. */
	size_t cap = HEADER_LEN + T_COUNT * 21 + names;
	struct out o = {.len = HEADER_LEN};
	uint64_t flags = (e->restart ? FLAG_RESTART : 0) |
			 (e->new_generation ? FLAG_NEW_GENERATION : 0) |
			 (e->final_sent ? FLAG_FINAL_SENT : 0) |
			 (e->paused ? FLAG_PAUSED : 0);

	if (cap > JOURNAL_MAX_RECORD || !e->name)
		return -EINVAL;
	o.p = malloc(cap);
	if (!o.p)
		return -ENOMEM;
	put_u64(&o, T_INO, e->ino);
	put_u64(&o, T_PARENT, e->parent);
	put_u64(&o, T_SEQ, e->seq);
	put_u64(&o, T_MODE, e->mode);
	put_u64(&o, T_UID, e->uid);
	put_u64(&o, T_GID, e->gid);
	put_time(&o, T_ATIME, &e->atime);
	put_time(&o, T_MTIME, &e->mtime);
	put_time(&o, T_CTIME, &e->ctime);
	put_field(&o, T_NAME, e->name, strlen(e->name));
	/* A folder has flags only when paused (a file always has them). */
	if (S_ISDIR(e->mode) && flags)
		put_u64(&o, T_FLAGS, flags);
	if (S_ISREG(e->mode)) {
		put_u64(&o, T_SIZE, e->size);
		if (e->fp_valid)
			put_pair(&o, T_FINGERPRINT, e->fp_size, e->fp_hash);
		if (e->url)
			put_field(&o, T_URL, e->url, strlen(e->url));
		put_u64(&o, T_OFFSET, e->offset);
		put_u64(&o, T_LENGTH, (uint64_t)e->declared_length);
		if (e->task_id[0])
			put_field(&o, T_TASK_ID, e->task_id,
				  strlen(e->task_id));
		put_u64(&o, T_STATE, e->state);
		put_u64(&o, T_FLAGS, flags);
		if (e->message)
			put_field(&o, T_MESSAGE, e->message,
				  strlen(e->message));
		put_transcription(&o, e);
	}
	{
		size_t body = o.len - HEADER_LEN;
		struct out h = {.p = o.p};

		memcpy(h.p, MAGIC, 4);
		h.len = 4;
		put_le(&h, VERSION, 2);
		put_le(&h, 0, 2);
		put_le(&h, body, 4);
		put_le(&h, XXH3_64bits(o.p + HEADER_LEN, body), 8);
	}
	*len = o.len;
	*buf = o.p;
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Decoding */

static uint64_t get_le(const unsigned char *p, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* A copy of a string field, refusing NULs and (if strict) controls. */
static int get_string(const unsigned char *v, size_t len, size_t max,
		      bool strict, char **out)
{
	if (len > max || *out)
		return -EBADMSG;
	for (size_t i = 0; i < len; i++)
		if (v[i] == 0 || (strict && (v[i] < 0x20 || v[i] == 0x7f)))
			return -EBADMSG;
	*out = strndup((const char *)v, len);
	return *out ? 0 : -ENOMEM;
}

static bool valid_task_id(const char *s)
{
	for (size_t i = 0; i < META_UUID_LEN; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		bool hex = (s[i] >= '0' && s[i] <= '9') ||
			   (s[i] >= 'a' && s[i] <= 'f');

		if (dash ? s[i] != '-' : !hex)
			return false;
	}
	return s[META_UUID_LEN] == '\0';
}

/*
 * Stores one field of a record in e. 0 or -errno (-EBADMSG for a bad
 * length or value). One case per tag, so it is longer than STYLE.md's 80
 * statements: split, the record format would be spread over several
 * functions.
 */
/* NOLINTNEXTLINE(readability-function-size) */
static int decode_field(struct journal_entry *e, unsigned tag,
			const unsigned char *v, size_t len)
{
	uint64_t a = len >= 8 ? get_le(v, 8) : 0;
	uint64_t b = len >= 16 ? get_le(v + 8, 8) : 0;
	struct timespec ts = {.tv_sec = (time_t)a, .tv_nsec = (long)b};
	bool pair = tag == T_ATIME || tag == T_MTIME || tag == T_CTIME ||
		    tag == T_FINGERPRINT || tag == T_TR_SINCE ||
		    tag == T_TR_DONE;
	bool string = tag == T_NAME || tag == T_URL || tag == T_MESSAGE ||
		      tag == T_TASK_ID || tag == T_TR_STAGE ||
		      tag == T_TR_ERROR;
	size_t want = tag == T_TR_SIZES ? sizeof(e->tr_sizes) : pair ? 16 : 8;

	if (tag >= T_INO && tag < T_COUNT && !string && len != want)
		return -EBADMSG;
	if (pair && tag != T_FINGERPRINT && b >= 1000000000)
		return -EBADMSG;
	switch (tag) {
	case T_INO:
		e->ino = a;
		return a && a < JOURNAL_MAX_INO ? 0 : -EBADMSG;
	case T_PARENT:
		e->parent = a;
		return a < JOURNAL_MAX_INO ? 0 : -EBADMSG;
	case T_SEQ:
		e->seq = a;
		return 0;
	case T_MODE:
		e->mode = (uint32_t)a;
		return a <= UINT32_MAX && (S_ISREG(e->mode) || S_ISDIR(e->mode))
			   ? 0
			   : -EBADMSG;
	case T_UID:
		e->uid = (uint32_t)a;
		return a <= UINT32_MAX ? 0 : -EBADMSG;
	case T_GID:
		e->gid = (uint32_t)a;
		return a <= UINT32_MAX ? 0 : -EBADMSG;
	case T_ATIME:
		e->atime = ts;
		return 0;
	case T_MTIME:
		e->mtime = ts;
		return 0;
	case T_CTIME:
		e->ctime = ts;
		return 0;
	case T_NAME:
		if (memchr(v, '/', len) || (len == 1 && v[0] == '.') ||
		    (len == 2 && v[0] == '.' && v[1] == '.'))
			return -EBADMSG;
		return get_string(v, len, 255, false, &e->name);
	case T_SIZE:
		e->size = a;
		return a <= INT64_MAX ? 0 : -EBADMSG;
	case T_FINGERPRINT:
		e->fp_valid = true;
		e->fp_size = a;
		e->fp_hash = b;
		return 0;
	case T_URL:
		return len ? get_string(v, len, MAX_URL, true, &e->url)
			   : -EBADMSG;
	case T_OFFSET:
		e->offset = a;
		return a <= INT64_MAX ? 0 : -EBADMSG;
	case T_LENGTH:
		e->declared_length = (int64_t)a;
		return e->declared_length >= TUS_LENGTH_UNKNOWN ? 0 : -EBADMSG;
	case T_TASK_ID:
		if (len != META_UUID_LEN)
			return -EBADMSG;
		memcpy(e->task_id, v, len);
		e->task_id[len] = '\0';
		return valid_task_id(e->task_id) ? 0 : -EBADMSG;
	case T_STATE:
		e->state = (uint32_t)a;
		return a <= UPLOAD_EMPTY ? 0 : -EBADMSG;
	case T_FLAGS:
		e->restart = a & FLAG_RESTART;
		e->new_generation = a & FLAG_NEW_GENERATION;
		e->final_sent = a & FLAG_FINAL_SENT;
		e->paused = a & FLAG_PAUSED;
		return 0;
	case T_MESSAGE:
		return get_string(v, len, MAX_MESSAGE, false, &e->message);
	case T_TR_STATE:
		e->tr_state = (uint32_t)a;
		return a <= TR_STARTING ? 0 : -EBADMSG;
	case T_TR_STAGE:
		if (len >= sizeof(e->tr_stage))
			return -EBADMSG;
		for (size_t i = 0; i < len; i++)
			if (v[i] < 0x20 || v[i] >= 0x7f)
				return -EBADMSG;
		memcpy(e->tr_stage, v, len);
		e->tr_stage[len] = '\0';
		return 0;
	case T_TR_PERCENT:
		e->tr_percent = (int32_t)(int64_t)a;
		return e->tr_percent >= -1 && e->tr_percent <= 100 ? 0
								   : -EBADMSG;
	case T_TR_SINCE:
		e->tr_since = ts;
		return 0;
	case T_TR_DONE:
		e->tr_done = ts;
		return 0;
	case T_TR_SIZES:
		for (size_t i = 0; i < 4; i++) {
			e->tr_sizes[i] = get_le(v + 8 * i, 8);
			if (e->tr_sizes[i] > INT64_MAX)
				return -EBADMSG;
		}
		return 0;
	case T_TR_ERROR:
		return get_string(v, len, MAX_MESSAGE, false, &e->tr_error);
	default:
		return 0; /* a field from a newer version */
	}
}

int journal_decode(const void *buf, size_t len, struct journal_entry *e)
{
	const unsigned char *p = buf, *end;
	uint32_t seen = 0;
	size_t body;
	int rc = 0;

	memset(e, 0, sizeof(*e));
	e->declared_length = TUS_LENGTH_UNKNOWN;
	e->tr_percent = -1;
	if (len < HEADER_LEN || memcmp(p, MAGIC, 4) != 0 ||
	    get_le(p + 4, 2) != VERSION || get_le(p + 6, 2) != 0)
		return -EBADMSG;
	body = (size_t)get_le(p + 8, 4);
	if (body != len - HEADER_LEN ||
	    XXH3_64bits(p + HEADER_LEN, body) != get_le(p + 12, 8))
		return -EBADMSG;
	end = p + len;
	p += HEADER_LEN;
	while (rc == 0 && p < end) {
		unsigned tag;
		size_t flen;

		if (end - p < 5) {
			rc = -EBADMSG;
			break;
		}
		tag = p[0];
		flen = (size_t)get_le(p + 1, 4);
		p += 5;
		if (flen > (size_t)(end - p)) {
			rc = -EBADMSG;
			break;
		}
		if (tag < 32 && (seen & (1u << tag)))
			rc = -EBADMSG; /* a field twice */
		else
			rc = decode_field(e, tag, p, flen);
		if (tag < 32)
			seen |= 1u << tag;
		p += flen;
	}
	/* The identity fields are not optional. */
	if (rc == 0 && (!e->ino || !e->name || !(seen & (1u << T_PARENT)) ||
			!(seen & (1u << T_MODE)) ||
			(!e->name[0] && e->ino != CATALOG_ROOT_INO)))
		rc = -EBADMSG;
	if (rc < 0) {
		journal_entry_clear(e);
		return rc == -ENOMEM ? rc : -EBADMSG;
	}
	return 0;
}

void journal_entry_clear(struct journal_entry *e)
{
	free(e->name);
	free(e->url);
	free(e->message);
	free(e->tr_error);
	memset(e, 0, sizeof(*e));
}

/* ---------------------------------------------------------------------- */
/* The store and its writer thread */

struct journal {
	struct catalog *cat;
	int dirfd;
	pthread_t thread;
	bool started;
	bool stopping;		  /* protected by catalog lock */
	pthread_cond_t work_cv;	  /* the thread waits here for changes */
	pthread_cond_t done_cv;	  /* journal_wait waits here */
	struct node *head, *tail; /* dirty list, protected by catalog lock */
	uint64_t seq;		  /* last change number handed out */
	uint64_t done;		  /* every change up to this one is written */
};

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

/* ---------------------------------------------------------------------- */
/* Loading */

/* What was found on disk: good records (with their nodes) and bad names. */
struct found {
	struct journal_entry *e;
	struct node **nodes;
	bool *attached;
	size_t count, cap;
	uint64_t *damaged;
	size_t ndamaged, damaged_cap;
	uint64_t max_ino;
};

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t ncap = *cap ? *cap * 2 : 64;
	void *np;

	if (need <= *cap)
		return 0;
	np = realloc(*p, ncap * size);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = ncap;
	return 0;
}

static int read_record(int dirfd, const char *name, char **buf, size_t *len)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	ssize_t r;
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > 2 * SLOT) {
		close(fd);
		return -EBADMSG;
	}
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf) {
		close(fd);
		return -ENOMEM;
	}
	do {
		r = pread(fd, *buf, (size_t)st.st_size + 1, 0);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		rc = -errno;
	*len = r < 0 ? 0 : (size_t)r;
	close(fd);
	return rc;
}

/* The length of the record that starts at p, or 0 if none fits in avail. */
static size_t record_len(const char *p, size_t avail)
{
	size_t body;

	if (avail < HEADER_LEN)
		return 0;
	body = (size_t)get_le((const unsigned char *)p + 8, 4);
	return body <= avail - HEADER_LEN ? HEADER_LEN + body : 0;
}

/* A bad copy beside a good one is a change whose write a crash cut short:
 * the copy before it holds. */
int journal_decode_file(const char *buf, size_t len, uint64_t ino,
			struct journal_entry *e)
{
	struct journal_entry c[2];
	int rc[2];

	for (unsigned i = 0; i < 2; i++) {
		size_t off = i * SLOT, avail = len > off ? len - off : 0;
		const char *p = avail ? buf + off : buf;

		if (avail > SLOT)
			avail = SLOT;
		rc[i] = journal_decode(p, record_len(p, avail), &c[i]);
		if (rc[i] == 0 && c[i].ino != ino) {
			journal_entry_clear(&c[i]);
			rc[i] = -EBADMSG;
		}
	}
	if (rc[0] == -ENOMEM || rc[1] == -ENOMEM) {
		journal_entry_clear(&c[0]);
		journal_entry_clear(&c[1]);
		return -ENOMEM;
	}
	if (rc[0] < 0 && rc[1] < 0)
		return -EBADMSG;
	{
		unsigned k =
		    rc[1] < 0 || (rc[0] == 0 && c[0].seq > c[1].seq) ? 0 : 1;

		if (rc[!k] < 0 && len > (size_t)!k * SLOT)
			log_warn("journal record %" PRIu64 ": its latest "
				 "change was cut short; the one before it "
				 "is restored",
				 ino);
		journal_entry_clear(&c[!k]);
		*e = c[k];
		e->copy = (unsigned char)(1 + k);
	}
	return 0;
}

/* A record's name: a decimal inode number, no sign, no leading zero. */
static bool canonical(const char *name)
{
	size_t len = strspn(name, "0123456789");

	return len > 0 && len < 19 && name[len] == '\0' && name[0] != '0';
}

static int note_damaged(struct found *f, uint64_t ino)
{
	if (grow((void **)&f->damaged, &f->damaged_cap, f->ndamaged + 1,
		 sizeof(*f->damaged)) < 0)
		return -ENOMEM;
	f->damaged[f->ndamaged++] = ino;
	if (ino > f->max_ino)
		f->max_ino = ino;
	return 0;
}

/* Reads every record; the damaged ones are named in the log and skipped. */
static int scan(struct journal *j, struct found *f)
{
	int fd = dup(j->dirfd);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *de;
	int rc = 0;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	rewinddir(d);
	while (rc == 0 && (de = readdir(d)) != NULL) {
		char *end, *buf = NULL;
		unsigned long long ino = strtoull(de->d_name, &end, 10);
		size_t len = 0;

		if (strcmp(end, ".new") == 0 && end != de->d_name) {
			/* A write the crash interrupted; the old record holds.
			 */
			unlinkat(j->dirfd, de->d_name, 0);
			continue;
		}
		if (*end != '\0' || !canonical(de->d_name))
			continue;
		rc = grow((void **)&f->e, &f->cap, f->count + 1, sizeof(*f->e));
		if (rc < 0)
			break;
		rc = read_record(j->dirfd, de->d_name, &buf, &len);
		if (rc == 0)
			rc =
			    journal_decode_file(buf, len, ino, &f->e[f->count]);
		free(buf);
		if (rc == -ENOMEM)
			break;
		if (rc != 0) {
			log_error("journal record %llu is damaged (%s); its "
				  "entry is not restored, its spool file is "
				  "kept",
				  ino,
				  rc == -EBADMSG ? "checksum or format"
						 : strerror(-rc));
			rc = note_damaged(f, ino);
			continue;
		}
		if (ino > f->max_ino)
			f->max_ino = ino;
		f->count++;
	}
	closedir(d);
	return rc;
}

static int by_ino(const void *a, const void *b)
{
	const struct journal_entry *x = a, *y = b;

	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static ssize_t find(const struct found *f, uint64_t ino)
{
	size_t lo = 0, hi = f->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (f->e[mid].ino == ino)
			return (ssize_t)mid;
		if (f->e[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/*
 * Sets a restored file's upload state. The spool's size is the truth for
 * a file not yet uploaded: a crash may have cut the journal's copy short,
 * never the bytes the kernel already took.
 */
static void restore_file(struct node *n, const struct journal_entry *e,
			 struct spool *spool)
{
	struct upload *up = &n->up;
	int64_t size = spool_size(spool, n->ino);
	bool done = e->state == UPLOAD_UPLOADED || e->state == UPLOAD_EMPTY;

	n->size = e->size;
	up->url = e->url;
	up->offset = e->offset;
	up->declared_length = e->declared_length;
	memcpy(up->task_id, e->task_id, sizeof(up->task_id));
	up->restart = e->restart;
	up->new_generation = e->new_generation;
	up->final_sent = e->final_sent;
	up->message = e->message;
	up->fp_valid = e->fp_valid;
	up->fp_size = e->fp_size;
	up->fp_hash = e->fp_hash;
	up->state = done ? (enum upload_state)e->state : UPLOAD_QUEUED;
	up->need_head = up->url && !done;
	if (e->state == UPLOAD_UPLOADED) {
		n->tr.state = (enum tr_state)e->tr_state;
		memcpy(n->tr.stage, e->tr_stage, sizeof(n->tr.stage));
		n->tr.percent = e->tr_percent;
		n->tr.since = e->tr_since;
		n->tr.done_at = e->tr_done;
		memcpy(n->tr.sizes, e->tr_sizes, sizeof(n->tr.sizes));
		n->tr.error = e->tr_error ? strdup(e->tr_error) : NULL;
	}
	up->url_durable = true;
	if (size == -ENOENT && (n->size == 0 || done)) {
		/* Empty, or released from the cache after its upload. */
		if (n->size == 0) {
			int fd = spool_open(spool, n->ino, O_CREAT | O_WRONLY);

			if (fd >= 0)
				close(fd);
		}
	} else if (size < 0) {
		up->state = UPLOAD_FAILED;
		up->err = -EIO;
		free(up->message);
		up->message = strdup("the spool file is missing; the data "
				     "cannot be sent");
		log_error("'%s': %s", n->name, up->message);
	} else if (!done || (uint64_t)size != e->size) {
		/* A finished state with a spool of another size: an O_TRUNC or
		 * an append the crash kept from the journal. A new version. */
		if (done) {
			(void)upload_new_generation(up);
			up->need_head = false;
			up->final_sent = false;
			free(n->tr.error);
			memset(&n->tr, 0, sizeof(n->tr));
			n->tr.percent = -1;
		}
		n->size = (uint64_t)size;
		up->verify = up->fp_valid;
		/* The server holds bytes past the spool's end (a truncation
		 * the journal missed): they cannot be a prefix of this file. */
		if (up->url && up->offset > n->size)
			up->restart = true;
	}
	/* Whatever reached the spool may have reached the server. */
	up->sent_mark = n->size;
}

static struct node *make_node(struct journal *j, struct journal_entry *e,
			      struct spool *spool)
{
	struct node *n =
	    catalog_new_node(j->cat, e->ino, e->name, e->mode, e->uid, e->gid);

	if (!n)
		return NULL;
	n->atime = e->atime;
	n->mtime = e->mtime;
	n->ctime = e->ctime;
	n->jseq = e->seq;
	n->jcopy = e->copy;
	n->paused = e->paused;
	if (S_ISREG(e->mode)) {
		restore_file(n, e, spool);
		e->url = NULL;
		e->message = NULL;
	}
	return n;
}

/* The directory orphans go to, created on first use; NULL: the root. */
static struct node *lost_found(struct journal *j)
{
	struct node *root = catalog_root(j->cat);
	struct node *lf = catalog_child(root, LOST_FOUND);

	if (lf)
		return S_ISDIR(lf->mode) ? lf : root;
	if (catalog_add(j->cat, root, LOST_FOUND, S_IFDIR | 0700, root->uid,
			root->gid, &lf) < 0)
		return root;
	journal_mark(j, lf);
	return lf;
}

/* Links n under lost+found, as "#INO" if its name is taken there. */
static int adopt(struct journal *j, struct node *n)
{
	struct node *dir = lost_found(j);
	char name[40];

	log_warn("'%s' (inode %" PRIu64 ") lost its directory; it is now in "
		 "/%s",
		 n->name, n->ino,
		 dir == catalog_root(j->cat) ? "" : LOST_FOUND);
	for (unsigned k = 0; catalog_attach(dir, n) == -EEXIST; k++) {
		if (k == 0)
			snprintf(name, sizeof(name), "#%" PRIu64, n->ino);
		else
			snprintf(name, sizeof(name), "#%" PRIu64 ".%u", n->ino,
				 k);
		if (catalog_set_name(n, name) < 0)
			return -ENOMEM;
	}
	journal_mark(j, n);
	return 0;
}

/*
 * Attaches i under its parent if the parent is in place. Two records with
 * one name mean a crash between the writes of a rename over a file: the
 * later change keeps the name and the other goes to lost+found, so no bytes
 * are dropped on a guess.
 */
static int attach(struct journal *j, struct found *f, size_t i, bool *done)
{
	uint64_t pino = f->e[i].parent;
	struct node *dir, *n = f->nodes[i], *other;

	*done = false;
	if (pino == CATALOG_ROOT_INO) {
		dir = catalog_root(j->cat);
	} else {
		ssize_t p = find(f, pino);

		if (p < 0 || !f->attached[p] || !S_ISDIR(f->nodes[p]->mode))
			return 0;
		dir = f->nodes[p];
	}
	*done = true;
	other = catalog_child(dir, n->name);
	if (!other)
		return catalog_attach(dir, n);
	if (other->jseq > n->jseq)
		return adopt(j, n);
	catalog_detach(other);
	catalog_attach(dir, n);
	return adopt(j, other);
}

static bool damaged(const struct found *f, uint64_t id)
{
	for (size_t i = 0; i < f->ndamaged; i++)
		if (f->damaged[i] == id)
			return true;
	return false;
}

static bool keep_spool(uint64_t id, void *arg)
{
	const struct found *f = arg;

	return find(f, id) >= 0 || damaged(f, id);
}

static int build(struct journal *j, struct found *f, struct spool *spool)
{
	struct node *root = catalog_root(j->cat);
	bool progress = true;
	int rc = 0;

	if (f->count)
		qsort(f->e, f->count, sizeof(*f->e), by_ino);
	/* New changes (adoptions below) number after every loaded one. */
	for (size_t i = 0; i < f->count; i++)
		if (f->e[i].seq > j->seq)
			j->seq = f->e[i].seq;
	/* Pointers, not nodes: NOLINTNEXTLINE(bugprone-sizeof-expression) */
	f->nodes = calloc(f->count + 1, sizeof(*f->nodes));
	f->attached = calloc(f->count + 1, sizeof(*f->attached));
	if (!f->nodes || !f->attached)
		return -ENOMEM;
	for (size_t i = 0; i < f->count; i++) {
		struct journal_entry *e = &f->e[i];

		if (e->ino == CATALOG_ROOT_INO) {
			root->mode = S_IFDIR | (e->mode & 07777);
			root->uid = e->uid;
			root->gid = e->gid;
			root->atime = e->atime;
			root->mtime = e->mtime;
			root->ctime = e->ctime;
			root->jseq = e->seq;
			root->jcopy = e->copy;
			root->paused = e->paused;
			f->attached[i] = true;
			continue;
		}
		f->nodes[i] = make_node(j, e, spool);
		if (!f->nodes[i])
			return -ENOMEM;
	}
	/* Parents before children, whatever order the inodes are in. */
	while (progress && rc == 0) {
		progress = false;
		for (size_t i = 0; i < f->count && rc == 0; i++) {
			bool done;

			if (f->attached[i])
				continue;
			rc = attach(j, f, i, &done);
			f->attached[i] = done;
			progress |= done;
		}
	}
	/* Left over: a parent that is gone, damaged, or a loop. */
	for (size_t i = 0; i < f->count && rc == 0; i++)
		if (!f->attached[i]) {
			rc = adopt(j, f->nodes[i]);
			f->attached[i] = rc == 0;
		}
	return rc;
}

int journal_load(struct journal *j, struct spool *spool,
		 struct journal_stats *stats)
{
	struct found f = {0};
	int rc;

	memset(stats, 0, sizeof(*stats));
	rc = scan(j, &f);
	catalog_lock(j->cat);
	/* Before build: lost+found must not take an inode already in use. */
	catalog_reserve_ino(j->cat, f.max_ino);
	if (rc == 0)
		rc = build(j, &f, spool);
	if (rc == 0) {
		stats->restored = (unsigned)f.count;
		stats->damaged = (unsigned)f.ndamaged;
		rc = spool_sweep(spool, keep_spool, &f);
		stats->orphans = rc > 0 ? (unsigned)rc : 0;
		rc = rc < 0 ? rc : 0;
	}
	for (size_t i = 0; i < f.count; i++) {
		if (rc < 0 && f.nodes && f.nodes[i] && !f.attached[i])
			catalog_discard(f.nodes[i]);
		journal_entry_clear(&f.e[i]);
	}
	catalog_unlock(j->cat);
	free(f.e);
	free(f.nodes);
	free(f.attached);
	free(f.damaged);
	return rc;
}
