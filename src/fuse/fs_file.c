/*
 * Open files: handles on a file's spool or a sidecar's content, reads,
 * writes into the spool (with the space reserve and the running
 * fingerprint), flush, release, truncate, and fsync, the one callback
 * that waits on the network, by contract.
 */
#include "tusfs_setup.h"
#include "fuse/fs_int.h"
#include "core/catalog.h"
#include "core/engine.h"
#include "core/journal.h"
#include "core/log.h"
#include "core/poller.h"
#include "core/spool.h"
#include "fuse/config.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* Spool space kept free so journal records can still be written when a
 * writer fills the disk. */
#define SPOOL_RESERVE (4 * 1024 * 1024)

struct handle *fs_handle_of(const struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

int fs_handle_size(const struct handle *h, struct stat *st)
{
	struct stat fst;

	if (h->buf || h->fd < 0) {
		st->st_size = (off_t)h->len;
	} else {
		if (fstat(h->fd, &fst) < 0)
			return -errno;
		st->st_size = fst.st_size;
	}
	st->st_blocks = (st->st_size + 511) / 512;
	return 0;
}

/*
 * Opens a spool descriptor and wraps it in a handle pinning n; writable
 * handles count as n's writers. A handle that cannot read (cp's, dd's)
 * has no use for the kernel's page cache, so its writes come straight
 * from the writer's buffer: one copy of every byte fewer, and no
 * security.capability lookup before each write (docs/performance.md,
 * lever f). Lock held.
 */
static int make_handle(struct tusfs *t, struct node *n, int flags,
		       bool writable, struct fuse_file_info *fi)
{
	struct handle *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->fd = spool_open(t->spool, n->ino, O_RDWR | flags);
	if (h->fd == -ENOENT && n->up.state == UPLOAD_UPLOADED) {
		/* Released from the cache: the bytes are on the server only. */
		free(h);
		return -ENODATA;
	}
	if (h->fd < 0) {
		int rc = h->fd;

		log_error("'%s': cannot open spool file: %s", n->name,
			  strerror(-rc));
		free(h);
		return rc;
	}
	h->n = n;
	h->sidecar = -1;
	h->writable = writable;
	catalog_get(n);
	n->opens++;
	if (h->writable)
		n->writers++;
	fi->direct_io = (fi->flags & O_ACCMODE) == O_WRONLY;
	fi->fh = (uintptr_t)h;
	return 0;
}

int tfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	const struct fuse_context *ctx = fuse_get_context();
	struct node *parent, *n = NULL;
	const char *name;
	int rc;

	catalog_lock(t->cat);
	rc = catalog_lookup_parent(t->cat, path, &parent, &name);
	if (rc == 0)
		rc = fs_check_name(t, parent, name, true, NULL);
	if (rc == 0)
		rc = fs_check_room(t, parent, name, 0, NULL);
	if (rc == 0)
		rc = catalog_add(t->cat, parent, name, S_IFREG | (mode & 07777),
				 ctx->uid, ctx->gid, &n);
	if (rc == 0) {
		engine_renamed(t->engine, n);
		rc = engine_new_upload(t->engine, n);
	}
	if (rc == 0)
		rc = make_handle(t, n, O_CREAT | O_TRUNC, true, fi);
	if (rc == 0)
		fs_entry_changed(t, n, parent);
	if (rc < 0 && n)
		catalog_unlink(t->cat, n);
	catalog_unlock(t->cat);
	return rc;
}

/* Undoes make_handle (release, or a failed open). Lock held. */
static void put_handle(struct tusfs *t, struct handle *h)
{
	struct node *n = h->n;

	if (h->sidecar >= 0) {
		if (h->fd >= 0)
			close(h->fd);
		free(h->buf);
		catalog_put(t->cat, n);
		free(h);
		return;
	}
	close(h->fd);
	n->opens--;
	/* The last writer's close seals the size: the rest can go. */
	if (h->writable && --n->writers == 0) {
		journal_mark(t->journal, n);
		engine_kick(t->engine, n);
	}
	catalog_put(t->cat, n);
	free(h);
}

/* Empties n for a new upload generation (O_TRUNC, truncate to 0). */
static int reset_file(struct tusfs *t, struct node *n, int fd)
{
	if (ftruncate(fd, 0) < 0)
		return -errno;
	n->size = 0;
	catalog_touch(n);
	return engine_new_upload(t->engine, n);
}

/* Opens sidecar k of n, read-only. Lock held. */
static int open_sidecar(struct tusfs *t, struct node *n, int k,
			struct fuse_file_info *fi)
{
	struct handle *h;
	int rc = 0;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EACCES;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->fd = -1;
	if (k == SIDECAR_STATUS) {
		rc = fs_render_status_of(t, n, &h->buf, &h->len);
	} else {
		h->fd = poller_open_transcript(
		    t->poller, n, (enum render_format)(k - SIDECAR_TXT));
		rc = h->fd < 0 ? h->fd : 0;
	}
	if (rc < 0) {
		free(h);
		return rc;
	}
	h->n = n;
	h->sidecar = k;
	catalog_get(n);
	/* Someone is watching: let the poller look again soon. */
	poller_watch(t->poller, n);
	fi->direct_io = 1;
	fi->fh = (uintptr_t)h;
	return 0;
}

int tfs_open(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = fs_lookup(t, path, &n, &k);
	if (rc == 0 && k >= 0) {
		rc = open_sidecar(t, n, k, fi);
		catalog_unlock(t->cat);
		return rc;
	}
	if (rc == 0 && S_ISDIR(n->mode))
		rc = -EISDIR;
	/*
	 * A finished upload is immutable; only replacing it (O_TRUNC) is
	 * allowed. Opening it for writing still succeeds, and its writes get
	 * EPERM: GIO's replace (file managers, gio copy) opens the old file
	 * for writing before it writes a temporary and renames it over.
	 */
	if (rc == 0 && writable && !(fi->flags & O_TRUNC) &&
	    n->up.state == UPLOAD_UPLOADED)
		writable = false;
	if (rc == 0)
		rc = make_handle(
		    t, n, writable && (fi->flags & O_TRUNC) ? O_CREAT : 0,
		    writable, fi);
	if (rc == 0 && writable && (fi->flags & O_TRUNC)) {
		rc = reset_file(t, n, fs_handle_of(fi)->fd);
		if (rc < 0) {
			log_error("'%s': cannot truncate: %s", n->name,
				  strerror(-rc));
			put_handle(t, fs_handle_of(fi));
		}
	}
	catalog_unlock(t->cat);
	return rc;
}

int tfs_read(const char *path, char *buf, size_t size, off_t off,
	     struct fuse_file_info *fi)
{
	const struct handle *h = fs_handle_of(fi);
	ssize_t r;

	(void)path;
	if (h->buf) {
		if ((uint64_t)off >= h->len)
			return 0;
		if (size > h->len - (size_t)off)
			size = h->len - (size_t)off;
		memcpy(buf, h->buf + off, size);
		return (int)size;
	}
	do {
		r = pread(h->fd, buf, size, off);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : (int)r;
}

/*
 * Refuses a write that would leave less than SPOOL_RESERVE free on the
 * spool's filesystem, after releasing completed files' spools. Lock held.
 */
static int reserve_space(struct tusfs *t, uint64_t grow)
{
	struct statvfs st;

	for (int pass = 0; pass < 2; pass++) {
		if (spool_statfs(t->spool, &st) < 0)
			return 0; /* let the write itself tell */
		if ((uint64_t)st.f_bavail * st.f_frsize >= grow + SPOOL_RESERVE)
			return 0;
		if (pass == 0 && engine_release_cache(t->engine) == 0)
			break;
	}
	return -ENOSPC;
}

/*
 * Readies n for a write of [off, end), before any byte lands in the spool.
 * Rewriting bytes the server may hold, or changing a fingerprinted spool,
 * is journaled first: after a crash the journal must never vouch for
 * bytes that are no longer in the spool. Lock held.
 */
static int before_write(struct tusfs *t, struct node *n, uint64_t off,
			uint64_t end)
{
	/* Below sent_mark, the journal must say restart (an earlier
	 * truncate or rewrite may have set it only in memory). */
	bool sync = off < n->up.sent_mark && journal_pending(t->journal, n);
	int rc;

	if (upload_content_changing(&n->up, off))
		sync = true;
	if (sync) {
		rc = journal_sync(t->journal, n);
		if (rc < 0)
			return rc;
	}
	if (end > n->size)
		return reserve_space(t, end - n->size);
	return 0;
}

/*
 * Hands n's running fingerprint to a write of [off, off + len) that has
 * just set content_gen, or drops it. The write continues the stream when
 * nothing else changed the spool since the stream's last write (another
 * write in flight would have) and it starts where the stream ends; a
 * write at 0 that covers all of the file, with no other write in flight,
 * starts a new one. The write hashes its bytes outside the lock, then
 * gives the stream back with stream_put(). Lock held.
 */
static struct spool_stream *stream_take(struct node *n, uint64_t off,
					size_t len)
{
	struct upload *up = &n->up;
	struct spool_stream *s = up->stream;

	up->stream = NULL;
	if (s && up->stream_gen + 1 == up->content_gen &&
	    spool_stream_len(s) == off)
		return s;
	spool_stream_free(s);
	return up->writing == 0 && off == 0 && n->size <= len
		   ? spool_stream_new()
		   : NULL;
}

/* Gives s back once its write, which set content_gen to gen, fed it;
 * anything that changed the spool since spoils it. Lock held. */
static void stream_put(struct node *n, struct spool_stream *s, uint64_t gen,
		       bool fed)
{
	if (fed && n->up.content_gen == gen) {
		n->up.stream = s;
		n->up.stream_gen = gen;
	} else {
		spool_stream_free(s);
	}
}

int tfs_write(const char *path, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	struct handle *h = fs_handle_of(fi);
	struct node *n = h->n;
	uint64_t end = (uint64_t)off + size;
	struct spool_stream *stream = NULL;
	uint64_t gen;
	bool fed;
	int rc;

	(void)path;
	/* The kernel refuses writes to read-only descriptors itself: this
	 * one was opened for writing on an uploaded file. */
	if (!h->writable)
		return -EPERM;
	if (t->server.max_size && end > t->server.max_size)
		return -EFBIG;
	catalog_lock(t->cat);
	rc = before_write(t, n, (uint64_t)off, end);
	gen = n->up.content_gen;
	if (rc == 0)
		stream = stream_take(n, (uint64_t)off, size);
	n->up.writing++;
	catalog_unlock(t->cat);
	if (rc == 0)
		rc = spool_pwrite(h->fd, buf, size, off);
	fed = rc == 0 && stream && spool_stream_feed(stream, buf, size) == 0;

	catalog_lock(t->cat);
	n->up.writing--;
	stream_put(n, stream, gen, fed);
	if (rc < 0) {
		catalog_unlock(t->cat);
		return rc;
	}
	/* A worker may have sent these bytes while the lock was dropped. */
	if (upload_overtaken(&n->up, (uint64_t)off))
		journal_mark(t->journal, n);
	if (end > n->size) {
		bool crossed = end / t->chunk_size > n->size / t->chunk_size;

		n->size = end;
		if (crossed)
			engine_kick(t->engine, n);
	}
	if (n->up.restart)
		engine_kick(t->engine, n);
	clock_gettime(CLOCK_REALTIME, &n->mtime);
	n->ctime = n->mtime;
	engine_check(t->engine, n);
	catalog_unlock(t->cat);
	return (int)size;
}

/* close(2) of a writer reports an upload already known to have failed. */
int tfs_flush(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	const struct handle *h = fs_handle_of(fi);
	int rc;

	(void)path;
	if (!h->writable)
		return 0;
	catalog_lock(t->cat);
	rc = h->n->up.err;
	catalog_unlock(t->cat);
	return rc;
}

int tfs_release(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();

	(void)path;
	catalog_lock(t->cat);
	put_handle(t, fs_handle_of(fi));
	catalog_unlock(t->cat);
	return 0;
}

int tfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	struct handle *h = fs_handle_of(fi);
	struct node *n = h->n;
	struct engine_sync sync = {0};
	int rc;

	(void)path;
	if (h->sidecar >= 0)
		return 0;
	if ((datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0)
		return -errno;
	catalog_lock(t->cat);
	/* A temporary name cannot be confirmed: it is not sent; nor can a
	 * paused file, until it is resumed. */
	if (t->fsync_local || n->up.hold || n->paused) {
		rc = journal_sync(t->journal, n);
		catalog_unlock(t->cat);
		return rc;
	}
	/* Without deferred length an open file cannot be confirmed yet. */
	if (n->writers > 0 && !engine_can_sync_open(t->engine)) {
		rc = journal_sync(t->journal, n);
		catalog_unlock(t->cat);
		return rc;
	}
	sync.target = n->size;
	do {
		struct timespec deadline;

		/* Wake each second to notice an interrupt or an unmount. */
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += 1;
		rc = engine_wait_confirmed(t->engine, n, &sync, &deadline);
		if (rc == -EAGAIN && fuse_interrupted())
			rc = -EINTR;
		else if (rc == -EAGAIN && fuse_session_exited(fuse_get_session(
					      fuse_get_context()->fuse)))
			rc = -EIO;
	} while (rc == -EAGAIN);
	if (rc == 0)
		rc = journal_sync(t->journal, n);
	catalog_unlock(t->cat);
	return rc;
}

int tfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	struct node *n;
	int fd = -1, rc, k;

	catalog_lock(t->cat);
	rc = fs_resolve(t, path, fi, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -EACCES;
	else if (rc == 0 && S_ISDIR(n->mode))
		rc = -EISDIR;
	if (rc < 0)
		goto out;
	if (n->up.state == UPLOAD_UPLOADED && (uint64_t)size != n->size) {
		if (size != 0) {
			rc = -EPERM;
			goto out;
		}
		fd = spool_open(t->spool, n->ino, O_RDWR | O_CREAT);
		rc = fd < 0 ? fd : reset_file(t, n, fd);
		if (rc == 0)
			engine_kick(t->engine, n);
		goto out;
	}
	fd = spool_open(t->spool, n->ino, O_RDWR);
	if (fd < 0 || ftruncate(fd, size) < 0) {
		rc = fd < 0 ? fd : -errno;
		goto out;
	}
	upload_truncated(&n->up, (uint64_t)size);
	n->size = (uint64_t)size;
	clock_gettime(CLOCK_REALTIME, &n->mtime);
	n->ctime = n->mtime;
	journal_mark(t->journal, n);
	engine_kick(t->engine, n);
	engine_check(t->engine, n);
out:
	if (fd >= 0)
		close(fd);
	catalog_unlock(t->cat);
	return rc;
}
