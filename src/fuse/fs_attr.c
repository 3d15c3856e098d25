/*
 * The status sidecar and the extended attributes: NAME.status rendered
 * from the node, the user.tusfs.* names, and the settable ones that are
 * the control surface of `tusfs pause`, `resume` and `limit`.
 */
#include "tusfs_setup.h"
#include "fuse/fs_int.h"
#include "core/attrs.h"
#include "core/catalog.h"
#include "core/engine.h"
#include "core/journal.h"
#include "core/poller.h"
#include "core/render.h"
#include "fuse/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Why nothing of n can go yet, or NULL: its name is temporary, or a
 * writer has it and no whole chunk is there. */
static const char *held_reason(const struct node *n)
{
	if (n->up.state != UPLOAD_QUEUED)
		return NULL;
	if (n->up.hold)
		return WORD_HELD_TEMPORARY;
	if (n->writers > 0 && !n->up.queued && !n->up.active)
		return WORD_HELD_WRITING;
	return NULL;
}

/* Paused before its upload reached an end (uploaded, empty or failed). */
static bool paused_pending(const struct node *n)
{
	return n->paused && n->up.state != UPLOAD_UPLOADED &&
	       n->up.state != UPLOAD_EMPTY && n->up.state != UPLOAD_FAILED;
}

/*
 * Empty as users see it: sealed so, or paused where a worker would seal it
 * so without a request (closed, no byte, and no upload of an earlier
 * version to terminate; a new version leaves a complete one alone). Pause
 * stops the worker, not the fact.
 */
static bool shown_empty(const struct node *n)
{
	return n->up.state == UPLOAD_EMPTY ||
	       (paused_pending(n) && n->size == 0 && n->writers == 0 &&
		(!n->up.url ||
		 (upload_complete(&n->up) && n->up.new_generation)));
}

/* The upload state as users see it. */
static const char *shown_state(const struct node *n)
{
	if (held_reason(n))
		return WORD_HELD;
	if (shown_empty(n))
		return WORD_EMPTY;
	/* Paused until it has nothing left to send. */
	if (paused_pending(n))
		return WORD_PAUSED;
	return upload_state_name(n->up.state);
}

static double since(const struct timespec *t, const struct timespec *now)
{
	return (double)(now->tv_sec - t->tv_sec) +
	       (double)(now->tv_nsec - t->tv_nsec) / 1e9;
}

/* Renders n's NAME.status into *buf. Lock held. */
int fs_render_status_of(const struct tusfs *t, const struct node *n, char **buf,
			size_t *len)
{
	const struct upload *up = &n->up;
	struct status_view v = {
	    .state = shown_state(n),
	    .confirmed = up->offset,
	    .total = n->size,
	    .rate = -1,
	    .eta = -1,
	    .url = up->url,
	    .task_id = up->task_id[0] ? up->task_id : NULL,
	    .error = up->state == UPLOAD_UPLOADED ? NULL : up->message,
	    .task_percent = -1,
	};

	if (up->state == UPLOAD_UPLOADING) {
		struct timespec now;
		uint64_t wire = atomic_load(&((struct node *)n)->up.wire);
		uint64_t done = up->offset;

		clock_gettime(CLOCK_MONOTONIC, &now);
		v.rate = up->rate;
		/* The request in flight, once it has run long enough to say. */
		if (up->req_start.tv_sec && since(&up->req_start, &now) > 0.5) {
			v.rate = (double)wire / since(&up->req_start, &now);
			done = up->req_base + wire;
		}
		if (v.rate > 0 && n->size >= done)
			v.eta = ceil((double)(n->size - done) / v.rate);
	}
	if (poller_transcripts(t->poller) && !shown_empty(n)) {
		v.task_status = tr_state_name(n->tr.state);
		v.task_stage = n->tr.stage[0] ? n->tr.stage : NULL;
		v.task_percent = n->tr.percent;
		v.task_error = n->tr.error;
		v.poll_error = n->tr.poll_error;
	}
	return render_status(&v, buf, len);
}

void fs_fill_sidecar_stat(const struct tusfs *t, const struct node *n, int k,
			  struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = catalog_sidecar_ino(n->ino, (enum sidecar)k);
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_blksize = 4096;
	if (k == SIDECAR_STATUS) {
		char *buf = NULL;
		size_t len = 0;

		if (fs_render_status_of(t, n, &buf, &len) == 0)
			st->st_size = (off_t)len;
		free(buf);
		/* It changes as the upload goes: as new as its content. */
		clock_gettime(CLOCK_REALTIME, &st->st_mtim);
	} else {
		st->st_size = (off_t)n->tr.sizes[k - SIDECAR_TXT];
		st->st_mtim = n->tr.done_at;
	}
	st->st_atim = st->st_ctim = st->st_mtim;
	st->st_blocks = (st->st_size + 511) / 512;
}

/* The transcription's state word for n, or NULL while it has none. */
static const char *transcription_word(const struct tusfs *t,
				      const struct node *n)
{
	return poller_transcripts(t->poller) && !shown_empty(n) &&
		       n->up.task_id[0]
		   ? tr_state_name(n->tr.state)
		   : NULL;
}

/*
 * user.tusfs.summary of a folder: one line per distinct state among the
 * files below it, "COUNT<TAB>STATE<TAB>DETAIL", where DETAIL is why a held
 * file is held or an uploaded file's transcription (else empty). It is what
 * `tusfs wait` polls: one request however many files there are, where
 * walking them cost a few requests per file every poll, which took as much
 * of the daemon as the uploads themselves did on a folder of 1 000 files.
 */
struct summary {
	const struct tusfs *t;
	size_t rows;
	bool full; /* a file found no row: the counts are not to be trusted */
	struct summary_row {
		const char *state, *detail;
		unsigned count;
	} row[64]; /* states x details is far fewer */
};

static void summarize(struct node *n, void *arg)
{
	struct summary *s = arg;
	const char *state = shown_state(n), *detail = held_reason(n);
	size_t i;

	if (!detail && strcmp(state, WORD_UPLOADED) == 0)
		detail = transcription_word(s->t, n);
	if (!detail)
		detail = "";
	for (i = 0; i < s->rows; i++)
		if (strcmp(s->row[i].state, state) == 0 &&
		    strcmp(s->row[i].detail, detail) == 0)
			break;
	if (i == s->rows) {
		if (i == sizeof(s->row) / sizeof(*s->row)) {
			s->full = true;
			return;
		}
		s->row[s->rows++] = (struct summary_row){state, detail, 0};
	}
	s->row[i].count++;
}

static int summary_value(const struct tusfs *t, struct node *dir, char *buf,
			 size_t size)
{
	struct summary s = {.t = t};
	size_t len = 0;

	catalog_each_file(dir, summarize, &s);
	if (s.full)
		return -ERANGE;
	buf[0] = '\0';
	for (size_t i = 0; i < s.rows; i++) {
		int k =
		    snprintf(buf + len, size - len, "%u\t%s\t%s\n",
			     s.row[i].count, s.row[i].state, s.row[i].detail);

		if (k < 0 || (size_t)k >= size - len)
			return -ERANGE;
		len += (size_t)k;
	}
	return (int)len;
}

/*
 * Upload state as extended attributes, for `tusfs wait`, scripts and file
 * managers. Values are computed under the lock into buf. Returns the
 * length, or -ENODATA when the attribute does not apply.
 */
static int xattr_value(const struct tusfs *t, struct node *n, bool root,
		       const char *name, char *buf, size_t size)
{
	const char *v = NULL;
	int len;

	if (strncmp(name, ATTR_PREFIX, strlen(ATTR_PREFIX)) != 0)
		return -ENODATA;
	name += strlen(ATTR_PREFIX);
	if (root && strcmp(name, ATTR_VERSION) == 0)
		v = TUSFS_VERSION;
	else if (strcmp(name, ATTR_PAUSED) == 0)
		v = n->paused ? "1" : "0";
	else if (root && strcmp(name, ATTR_MAX_RATE) == 0) {
		uint64_t rate = engine_rate(t->engine);

		len =
		    rate ? snprintf(buf, size, "%llu", (unsigned long long)rate)
			 : snprintf(buf, size, "off");
		return len < 0 || (size_t)len >= size ? -ERANGE : len;
	} else if (S_ISDIR(n->mode) && strcmp(name, ATTR_SUMMARY) == 0)
		return summary_value(t, n, buf, size);
	else if (!S_ISREG(n->mode))
		return -ENODATA;
	else if (strcmp(name, ATTR_STATE) == 0)
		v = shown_state(n);
	else if (strcmp(name, ATTR_HELD) == 0)
		v = held_reason(n);
	else if (strcmp(name, ATTR_TRANSCRIPTION) == 0)
		v = transcription_word(t, n);
	else if (strcmp(name, ATTR_URL) == 0)
		v = n->up.url;
	else if (strcmp(name, ATTR_TASK_ID) == 0)
		v = n->up.task_id[0] ? n->up.task_id : NULL;
	else if (strcmp(name, ATTR_ERROR) == 0)
		v = n->up.state == UPLOAD_UPLOADED ? n->tr.error
						   : n->up.message;
	else if (strcmp(name, ATTR_PROGRESS) == 0) {
		len = snprintf(buf, size, "%llu %llu",
			       (unsigned long long)n->up.offset,
			       (unsigned long long)n->size);
		return len < 0 || (size_t)len >= size ? -ERANGE : len;
	}
	if (!v)
		return -ENODATA;
	len = snprintf(buf, size, "%s", v);
	return len < 0 || (size_t)len >= size ? -ERANGE : len;
}

/*
 * Only the user namespace exists here: tusfs keeps no ACLs, security labels
 * or capabilities. ENOTSUP, not ENODATA, says so for the whole mount, and
 * `ls -l` remembers it per device, so it asks the first entry for
 * security.selinux and system.posix_acl_access, not all of them (two round
 * trips per entry were most of a large listing). ENOSYS would stop the
 * kernel asking for anything, user.tusfs.* included.
 */
int tfs_getxattr(const char *path, const char *name, char *value, size_t size)
{
	struct tusfs *t = fs_this();
	char buf[ATTR_MAX];
	struct node *n;
	int rc, k;

	if (strncmp(name, ATTR_NAMESPACE, strlen(ATTR_NAMESPACE)) != 0)
		return -ENOTSUP;
	catalog_lock(t->cat);
	rc = fs_lookup(t, path, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -ENODATA;
	else if (rc == 0)
		rc = xattr_value(t, n, n == catalog_root(t->cat), name, buf,
				 sizeof(buf));
	catalog_unlock(t->cat);
	if (rc < 0 || size == 0)
		return rc;
	if ((size_t)rc > size)
		return -ERANGE;
	memcpy(value, buf, (size_t)rc);
	return rc;
}

/* Pauses or resumes n and, for a folder, everything below it. Lock held. */
static void set_paused(struct tusfs *t, struct node *n, bool paused)
{
	if (S_ISREG(n->mode)) {
		engine_pause(t->engine, n, paused);
		return;
	}
	if (n->paused != paused) {
		n->paused = paused;
		journal_mark(t->journal, n);
	}
	for (struct node *c = n->children; c; c = c->next)
		set_paused(t, c, paused);
}

/*
 * The attributes that can be set, the control surface of `tusfs pause`,
 * `resume` and `limit`: user.tusfs.paused ("1" or "0") on any file or
 * folder, and user.tusfs.max_rate on the root, the bandwidth limit (a size
 * per second or "off"). The kernel has checked that the caller may write
 * the entry.
 */
int tfs_setxattr(const char *path, const char *name, const char *value,
		 size_t size, int flags)
{
	struct tusfs *t = fs_this();
	char text[32];
	struct node *n;
	uint64_t rate;
	int rc, k;

	(void)flags;
	if (size == 0 || size >= sizeof(text))
		return -EINVAL;
	memcpy(text, value, size);
	text[size] = '\0';
	if (strcmp(name, ATTR_PREFIX ATTR_PAUSED) == 0) {
		if (strcmp(text, "1") != 0 && strcmp(text, "0") != 0)
			return -EINVAL;
		catalog_lock(t->cat);
		rc = fs_lookup(t, path, &n, &k);
		if (rc == 0 && k >= 0)
			rc = -EPERM;
		if (rc == 0)
			set_paused(t, n, text[0] == '1');
		catalog_unlock(t->cat);
		return rc;
	}
	if (strcmp(path, "/") != 0 ||
	    strcmp(name, ATTR_PREFIX ATTR_MAX_RATE) != 0)
		return -ENOTSUP;
	if (config_parse_rate(text, &rate) < 0)
		return -EINVAL;
	engine_set_rate(t->engine, rate);
	return 0;
}

int tfs_listxattr(const char *path, char *list, size_t size)
{
	static const char *const names[] = {
	    ATTR_STATE,	   ATTR_HELD,	ATTR_PROGRESS,	    ATTR_URL,
	    ATTR_TASK_ID,  ATTR_ERROR,	ATTR_TRANSCRIPTION, ATTR_VERSION,
	    ATTR_MAX_RATE, ATTR_PAUSED, ATTR_SUMMARY};
	struct tusfs *t = fs_this();
	char buf[ATTR_MAX], all[256];
	size_t len = 0;
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = fs_lookup(t, path, &n, &k);
	for (size_t i = 0;
	     rc == 0 && k < 0 && i < sizeof(names) / sizeof(*names); i++) {
		char full[64];

		snprintf(full, sizeof(full), ATTR_PREFIX "%s", names[i]);
		/* Every folder has a summary; no need to walk it to know. */
		if (strcmp(names[i], ATTR_SUMMARY) == 0
			? !S_ISDIR(n->mode)
			: xattr_value(t, n, n == catalog_root(t->cat), full,
				      buf, sizeof(buf)) < 0)
			continue;
		memcpy(all + len, full, strlen(full) + 1);
		len += strlen(full) + 1;
	}
	catalog_unlock(t->cat);
	if (rc < 0)
		return rc;
	if (size == 0)
		return (int)len;
	if (len > size)
		return -ERANGE;
	memcpy(list, all, len);
	return (int)len;
}
