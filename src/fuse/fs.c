/*
 * FUSE operations (libfuse high-level API). Each callback resolves its path
 * or handle to a node under the catalog lock, does local work only (spool
 * I/O happens outside the lock), tells the engine what changed, and returns
 * a negative errno. The one callback that waits on the network is fsync, by
 * contract. See docs/ARCHITECTURE.md for why the path-based API.
 *
 * Sidecars (NAME.status and the transcripts) are not nodes: a path that
 * names no entry is tried as FILE.SUFFIX. They are read-only; NAME.status
 * is rendered when opened, the transcripts are files in the state
 * directory. Both are opened with direct I/O, so a read never stops at a
 * size the kernel cached before the content changed.
 */
#include "tusfs_setup.h"
#include "fuse/fs.h"
#include "core/attrs.h"
#include "fuse/config.h"
#include "core/journal.h"
#include "core/log.h"
#include "core/render.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Spool space kept free so journal records can still be written when a
 * writer fills the disk. */
#define SPOOL_RESERVE (4 * 1024 * 1024)

/*
 * An open file: the node it pins and its own spool descriptor; or, for a
 * sidecar of that node, its kind and either the status rendered at open
 * or the stored transcript's descriptor.
 */
struct handle {
	struct node *n;
	int fd;
	bool writable;
	int sidecar; /* enum sidecar, or -1 for the file itself */
	char *buf;
	size_t len;
};

static struct tusfs *fs(void)
{
	return fuse_get_context()->private_data;
}

static struct handle *handle_of(const struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

static void *tfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	/* Inode numbers are ours (and will be stable across mounts). */
	cfg->use_ino = 1;
	/* Unlinked-but-open files are ours to keep; no .fuse_hidden files. */
	cfg->hard_remove = 1;
	cfg->nullpath_ok = 1;
	conn->max_write = FS_MAX_WRITE;
	/* Readdirplus for every batch of a listing, not only the first:
	 * the entries come with their attributes (tfs_readdir). */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	return fs();
}

static void fill_stat(const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = n->mode;
	st->st_nlink = S_ISDIR(n->mode) ? 2 + n->subdirs : 1;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_size = S_ISREG(n->mode) ? (off_t)n->size : 4096;
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_blksize = FS_MAX_WRITE;
	st->st_atim = n->atime;
	st->st_mtim = n->mtime;
	st->st_ctim = n->ctime;
}

/* How many sidecar kinds exist on this mount (1: .status alone). */
static int sidecar_kinds(const struct tusfs *t)
{
	return poller_transcripts(t->poller) ? SIDECAR_COUNT : 1;
}

/* Whether n shows sidecar k right now. Lock held. */
static bool sidecar_visible(const struct tusfs *t, const struct node *n, int k)
{
	return k == SIDECAR_STATUS ||
	       (k < sidecar_kinds(t) && n->tr.state == TR_COMPLETED);
}

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

/* The upload state as users see it. */
static const char *shown_state(const struct node *n)
{
	if (held_reason(n))
		return WORD_HELD;
	/* Paused until it has nothing left to send. */
	if (n->paused && n->up.state != UPLOAD_UPLOADED &&
	    n->up.state != UPLOAD_EMPTY && n->up.state != UPLOAD_FAILED)
		return WORD_PAUSED;
	return upload_state_name(n->up.state);
}

static double since(const struct timespec *t, const struct timespec *now)
{
	return (double)(now->tv_sec - t->tv_sec) +
	       (double)(now->tv_nsec - t->tv_nsec) / 1e9;
}

/* Renders n's NAME.status into *buf. Lock held. */
static int render_status_of(const struct tusfs *t, const struct node *n,
			    char **buf, size_t *len)
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
	if (poller_transcripts(t->poller) && up->state != UPLOAD_EMPTY) {
		v.task_status = tr_state_name(n->tr.state);
		v.task_stage = n->tr.stage[0] ? n->tr.stage : NULL;
		v.task_percent = n->tr.percent;
		v.task_error = n->tr.error;
		v.poll_error = n->tr.poll_error;
	}
	return render_status(&v, buf, len);
}

static void fill_sidecar_stat(const struct tusfs *t, const struct node *n,
			      int k, struct stat *st)
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

		if (render_status_of(t, n, &buf, &len) == 0)
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

/*
 * Resolves a path to an entry (*k = -1) or to a visible sidecar of file
 * *n (*k its kind). Lock held.
 */
static int lookup(struct tusfs *t, const char *path, struct node **n, int *k)
{
	struct node *dir;
	const char *name;
	int rc = catalog_lookup(t->cat, path, n);

	*k = -1;
	if (rc != -ENOENT ||
	    catalog_lookup_parent(t->cat, path, &dir, &name) < 0)
		return rc;
	*k = catalog_sidecar(dir, name, sidecar_kinds(t), n);
	if (*k < 0 || !sidecar_visible(t, *n, *k)) {
		*k = -1;
		return -ENOENT;
	}
	return 0;
}

/* Finds the node of an open handle or of a path; *k as lookup(). */
static int resolve(struct tusfs *t, const char *path,
		   const struct fuse_file_info *fi, struct node **n, int *k)
{
	if (fi && fi->fh) {
		*n = handle_of(fi)->n;
		*k = handle_of(fi)->sidecar;
		return 0;
	}
	if (!path)
		return -ENOENT;
	return lookup(t, path, n, k);
}

/*
 * Whether an entry called name (a directory when dir_levels is 1, or n
 * moved there) fits below dir: within max_depth directory levels, and its
 * paths within CATALOG_MAX_RELPATH, so that relativePath always goes to
 * the server whole. Lock held.
 */
static int check_room(const struct tusfs *t, const struct node *dir,
		      const char *name, unsigned levels, const struct node *n)
{
	char rel[CATALOG_MAX_RELPATH + 1];
	size_t longest = strlen(name);
	int len = 0;

	if (n) {
		catalog_extent(n, &levels, &longest);
		/* Its longest path, under its new name. */
		longest = longest - strlen(n->name) + strlen(name);
	}
	if (catalog_depth(dir) + levels > t->max_depth) {
		log_warn("'%s': refused: more than max_depth=%u directory "
			 "levels",
			 name, t->max_depth);
		return -ENAMETOOLONG;
	}
	if (dir->parent)
		len = catalog_relpath(dir, rel, sizeof(rel));
	if (len < 0 ||
	    (size_t)len + (len ? 1 : 0) + longest > CATALOG_MAX_RELPATH) {
		log_warn("'%s': refused: a path below the mount would be "
			 "longer than %d bytes",
			 name, CATALOG_MAX_RELPATH);
		return -ENAMETOOLONG;
	}
	return 0;
}

/*
 * Whether an entry called name may appear in dir (as n, when it is a
 * rename): not over a sidecar's name, and, for a file, not where a real
 * entry already has one of its sidecars' names. Lock held.
 */
static int check_name(const struct tusfs *t, const struct node *dir,
		      const char *name, bool file, const struct node *n)
{
	struct node *owner;

	if (catalog_sidecar(dir, name, sidecar_kinds(t), &owner) >= 0 &&
	    owner != n) {
		log_warn("'%s': refused: it is the name of a sidecar of '%s'",
			 name, owner->name);
		return -EEXIST;
	}
	if (file && catalog_sidecar_taken(dir, name, sidecar_kinds(t), n)) {
		log_warn("'%s': refused: an entry already has the name of "
			 "one of its sidecars",
			 name);
		return -EEXIST;
	}
	return 0;
}

static int handle_size(const struct handle *h, struct stat *st)
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

static int tfs_getattr(const char *path, struct stat *st,
		       struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = resolve(t, path, fi, &n, &k);
	if (rc == 0 && k >= 0)
		fill_sidecar_stat(t, n, k, st);
	else if (rc == 0)
		fill_stat(n, st);
	/* An open sidecar is as long as what its handle reads. */
	if (rc == 0 && k >= 0 && fi && fi->fh)
		rc = handle_size(handle_of(fi), st);
	catalog_unlock(t->cat);
	return rc;
}

/*
 * An open folder. Its listing is taken whole at offset 0 (a rewind takes
 * it again) and served by index, which is the offset the kernel resumes
 * at: a listing that spans many requests sees every entry that stays
 * exactly once, whatever is added or removed meanwhile. Entries pin their
 * file; a sidecar is its file's entry with its kind.
 */
struct dir_entry {
	struct node *n;
	int sidecar; /* enum sidecar, or -1 for n itself */
};

struct dir_handle {
	struct node *dir;
	struct dir_entry *v;
	size_t count;
};

static struct dir_handle *dir_handle_of(const struct fuse_file_info *fi)
{
	return (struct dir_handle *)(uintptr_t)fi->fh;
}

/* Drops a handle's entries. Lock held. */
static void dir_clear(struct tusfs *t, struct dir_handle *d)
{
	for (size_t i = 0; i < d->count; i++)
		if (d->v[i].sidecar < 0)
			catalog_put(t->cat, d->v[i].n);
	free(d->v);
	d->v = NULL;
	d->count = 0;
}

/* Whether c's sidecar k is listed: past NAME_MAX it cannot exist, and a
 * real entry of its name (older trees) hides it. Lock held. */
static bool sidecar_listed(const struct tusfs *t, const struct node *dir,
			   const struct node *c, int k)
{
	char name[512];

	if (!sidecar_visible(t, c, k))
		return false;
	if (snprintf(name, sizeof(name), "%s%s", c->name,
		     catalog_sidecar_suffix((enum sidecar)k)) > 255)
		return false;
	return !catalog_child(dir, name);
}

/* Takes d's listing. Lock held. 0 or -ENOMEM. */
static int dir_snapshot(struct tusfs *t, struct dir_handle *d)
{
	size_t cap = d->dir->nchildren + 16, count = 0;
	struct dir_entry *v = malloc(cap * sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (struct node *c = d->dir->children; c; c = c->next) {
		for (int k = -1; k < SIDECAR_COUNT; k++) {
			if (k >= 0 && (!S_ISREG(c->mode) ||
				       !sidecar_listed(t, d->dir, c, k)))
				continue;
			if (count == cap) {
				struct dir_entry *w =
				    realloc(v, 2 * cap * sizeof(*v));

				if (!w) {
					d->v = v;
					d->count = count;
					dir_clear(t, d);
					return -ENOMEM;
				}
				v = w;
				cap *= 2;
			}
			if (k < 0)
				catalog_get(c);
			v[count++] = (struct dir_entry){c, k};
		}
	}
	d->v = v;
	d->count = count;
	return 0;
}

/* An entry's name (into buf) and attributes. Lock held. */
static const char *dir_entry_fill(const struct tusfs *t,
				  const struct dir_entry *e, bool plus,
				  char *buf, size_t size, struct stat *st)
{
	if (e->sidecar < 0) {
		fill_stat(e->n, st);
		return e->n->name;
	}
	snprintf(buf, size, "%s%s", e->n->name,
		 catalog_sidecar_suffix((enum sidecar)e->sidecar));
	/* Without readdirplus only st_ino and the type count, and a status
	 * need not be rendered for its size. */
	if (plus) {
		fill_sidecar_stat(t, e->n, e->sidecar, st);
	} else {
		memset(st, 0, sizeof(*st));
		st->st_ino =
		    catalog_sidecar_ino(e->n->ino, (enum sidecar)e->sidecar);
		st->st_mode = S_IFREG | 0444;
	}
	return buf;
}

static int tfs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	struct dir_handle *d;
	struct node *dir;
	int rc;

	catalog_lock(t->cat);
	rc = catalog_lookup(t->cat, path, &dir);
	if (rc == 0 && !S_ISDIR(dir->mode))
		rc = -ENOTDIR;
	d = rc == 0 ? calloc(1, sizeof(*d)) : NULL;
	if (d) {
		/* Pinned, so a handle outlives a rename or rmdir of its path.
		 */
		catalog_get(dir);
		d->dir = dir;
		fi->fh = (uintptr_t)d;
	} else if (rc == 0) {
		rc = -ENOMEM;
	}
	catalog_unlock(t->cat);
	return rc;
}

/*
 * Offsets: 1 and 2 are "." and "..", 3 + i the listing's entry i. With
 * readdirplus every entry carries its attributes, so `ls -l` of a large
 * folder costs no lookup per entry.
 */
static int tfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		       off_t off, struct fuse_file_info *fi,
		       enum fuse_readdir_flags flags)
{
	struct tusfs *t = fs();
	struct dir_handle *d = dir_handle_of(fi);
	bool plus = flags & FUSE_READDIR_PLUS;
	enum fuse_fill_dir_flags fill = plus ? FUSE_FILL_DIR_PLUS : 0;
	struct stat st;
	char name[512];
	int rc = 0;

	(void)path;
	catalog_lock(t->cat);
	if (off == 0) {
		dir_clear(t, d);
		rc = dir_snapshot(t, d);
		if (rc < 0)
			goto out;
		fill_stat(d->dir, &st);
		if (filler(buf, ".", &st, 1, fill))
			goto out;
		off = 1;
	}
	if (off == 1) {
		memset(&st, 0, sizeof(st));
		st.st_mode = S_IFDIR;
		if (filler(buf, "..", &st, 2, 0))
			goto out;
		off = 2;
	}
	for (size_t i = (size_t)off - 2; i < d->count; i++) {
		const struct dir_entry *e = &d->v[i];
		const char *n;

		/* Gone since the listing was taken: not listed. */
		if (e->n->unlinked ||
		    (e->sidecar >= 0 && !sidecar_visible(t, e->n, e->sidecar)))
			continue;
		n = dir_entry_fill(t, e, plus, name, sizeof(name), &st);
		if (filler(buf, n, &st, (off_t)i + 3, fill))
			break;
	}
out:
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	struct dir_handle *d = dir_handle_of(fi);

	(void)path;
	catalog_lock(t->cat);
	dir_clear(t, d);
	catalog_put(t->cat, d->dir);
	catalog_unlock(t->cat);
	free(d);
	return 0;
}

/*
 * n was added to or taken out of dir: both records change, since a
 * directory's times follow its entries. Lock held.
 */
static void entry_changed(struct tusfs *t, struct node *n, struct node *dir)
{
	journal_mark(t->journal, n);
	journal_mark(t->journal, dir);
}

static int tfs_mkdir(const char *path, mode_t mode)
{
	struct tusfs *t = fs();
	const struct fuse_context *ctx = fuse_get_context();
	struct node *parent, *n;
	const char *name;
	int rc;

	catalog_lock(t->cat);
	rc = catalog_lookup_parent(t->cat, path, &parent, &name);
	if (rc == 0)
		rc = check_name(t, parent, name, false, NULL);
	if (rc == 0)
		rc = check_room(t, parent, name, 1, NULL);
	if (rc == 0)
		rc = catalog_add(t->cat, parent, name, S_IFDIR | (mode & 07777),
				 ctx->uid, ctx->gid, &n);
	if (rc == 0)
		entry_changed(t, n, parent);
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_rmdir(const char *path)
{
	struct tusfs *t = fs();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = lookup(t, path, &n, &k);
	if (rc == 0 && (k >= 0 || !S_ISDIR(n->mode)))
		rc = -ENOTDIR;
	else if (rc == 0 && n == catalog_root(t->cat))
		rc = -EBUSY;
	else if (rc == 0 && n->children)
		rc = -ENOTEMPTY;
	if (rc == 0) {
		entry_changed(t, n, n->parent);
		catalog_unlink(t->cat, n);
	}
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_unlink(const char *path)
{
	struct tusfs *t = fs();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = lookup(t, path, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -EPERM; /* a sidecar goes with its file */
	else if (rc == 0 && S_ISDIR(n->mode))
		rc = -EISDIR;
	if (rc == 0) {
		/* Stop the bytes on the wire; the engine ends the upload. */
		catalog_get(n);
		poller_delete_task(t->poller, n);
		atomic_store(&n->up.cancel, 1);
		entry_changed(t, n, n->parent);
		catalog_unlink(t->cat, n);
		engine_kick(t->engine, n);
		catalog_put(t->cat, n);
	}
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_rename(const char *from, const char *to, unsigned int flags)
{
	struct tusfs *t = fs();
	struct node *n, *dir, *victim;
	const struct node *p;
	const char *name;
	int rc, k;

	if (flags & ~RENAME_NOREPLACE)
		return -EINVAL;
	catalog_lock(t->cat);
	rc = lookup(t, from, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -EPERM; /* sidecars follow their file, never alone */
	if (rc == 0)
		rc = catalog_lookup_parent(t->cat, to, &dir, &name);
	if (rc == 0)
		rc = check_name(t, dir, name, S_ISREG(n->mode), n);
	if (rc != 0)
		goto out;
	/* Not into its own subtree (a do loop: dir is never NULL). */
	p = dir;
	do {
		if (p == n)
			rc = -EINVAL;
		p = p->parent;
	} while (p && rc == 0);
	if (rc == 0)
		rc = check_room(t, dir, name, 0, n);
	if (rc < 0)
		goto out;
	victim = catalog_child(dir, name);
	if (victim && victim != n) {
		if (flags & RENAME_NOREPLACE)
			rc = -EEXIST;
		else if (S_ISDIR(victim->mode) && !S_ISDIR(n->mode))
			rc = -EISDIR;
		else if (!S_ISDIR(victim->mode) && S_ISDIR(n->mode))
			rc = -ENOTDIR;
		else if (S_ISDIR(victim->mode) && victim->children)
			rc = -ENOTEMPTY;
		if (rc < 0)
			goto out;
		journal_mark(t->journal, victim);
		if (S_ISREG(victim->mode)) {
			poller_delete_task(t->poller, victim);
			atomic_store(&victim->up.cancel, 1);
			engine_kick(t->engine, victim);
		}
	}
	journal_mark(t->journal, n->parent);
	rc = catalog_rename(t->cat, n, dir, name);
	if (rc == 0) {
		entry_changed(t, n, dir);
		engine_renamed(t->engine, n);
	}
out:
	catalog_unlock(t->cat);
	return rc;
}

/*
 * Opens a spool descriptor and wraps it in a handle pinning n; writable
 * handles count as n's writers. Lock held.
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
	fi->fh = (uintptr_t)h;
	return 0;
}

static int tfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	const struct fuse_context *ctx = fuse_get_context();
	struct node *parent, *n = NULL;
	const char *name;
	int rc;

	catalog_lock(t->cat);
	rc = catalog_lookup_parent(t->cat, path, &parent, &name);
	if (rc == 0)
		rc = check_name(t, parent, name, true, NULL);
	if (rc == 0)
		rc = check_room(t, parent, name, 0, NULL);
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
		entry_changed(t, n, parent);
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
		rc = render_status_of(t, n, &h->buf, &h->len);
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

static int tfs_open(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = lookup(t, path, &n, &k);
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
		rc = reset_file(t, n, handle_of(fi)->fd);
		if (rc < 0) {
			log_error("'%s': cannot truncate: %s", n->name,
				  strerror(-rc));
			put_handle(t, handle_of(fi));
		}
	}
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_read(const char *path, char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	const struct handle *h = handle_of(fi);
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

static int tfs_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	struct handle *h = handle_of(fi);
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
static int tfs_flush(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	const struct handle *h = handle_of(fi);
	int rc;

	(void)path;
	if (!h->writable)
		return 0;
	catalog_lock(t->cat);
	rc = h->n->up.err;
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_release(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();

	(void)path;
	catalog_lock(t->cat);
	put_handle(t, handle_of(fi));
	catalog_unlock(t->cat);
	return 0;
}

static int tfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	struct handle *h = handle_of(fi);
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

static int tfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	struct node *n;
	int fd = -1, rc, k;

	catalog_lock(t->cat);
	rc = resolve(t, path, fi, &n, &k);
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

static int tfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = resolve(t, path, fi, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -EPERM;
	if (rc == 0) {
		n->mode = (n->mode & S_IFMT) | (mode & 07777);
		clock_gettime(CLOCK_REALTIME, &n->ctime);
		journal_mark(t->journal, n);
	}
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_chown(const char *path, uid_t uid, gid_t gid,
		     struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	const struct fuse_context *ctx = fuse_get_context();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = resolve(t, path, fi, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -EPERM;
	/* As on any filesystem, only root gives a file away. */
	if (rc == 0 && ctx->uid != 0 &&
	    ((uid != (uid_t)-1 && uid != n->uid) || ctx->uid != n->uid))
		rc = -EPERM;
	if (rc == 0) {
		if (uid != (uid_t)-1)
			n->uid = uid;
		if (gid != (gid_t)-1)
			n->gid = gid;
		clock_gettime(CLOCK_REALTIME, &n->ctime);
		journal_mark(t->journal, n);
	}
	catalog_unlock(t->cat);
	return rc;
}

static void set_time(struct timespec *dst, const struct timespec *src)
{
	if (src->tv_nsec == UTIME_OMIT)
		return;
	if (src->tv_nsec == UTIME_NOW)
		clock_gettime(CLOCK_REALTIME, dst);
	else
		*dst = *src;
}

static int tfs_utimens(const char *path, const struct timespec tv[2],
		       struct fuse_file_info *fi)
{
	struct tusfs *t = fs();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = resolve(t, path, fi, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -EPERM;
	if (rc == 0) {
		set_time(&n->atime, &tv[0]);
		set_time(&n->mtime, &tv[1]);
		clock_gettime(CLOCK_REALTIME, &n->ctime);
		journal_mark(t->journal, n);
	}
	catalog_unlock(t->cat);
	return rc;
}

/*
 * Upload state as extended attributes, for `tusfs wait`, scripts and file
 * managers. Values are computed under the lock into buf. Returns the
 * length, or -ENODATA when the attribute does not apply.
 */
static int xattr_value(const struct tusfs *t, const struct node *n, bool root,
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
	} else if (!S_ISREG(n->mode))
		return -ENODATA;
	else if (strcmp(name, ATTR_STATE) == 0)
		v = shown_state(n);
	else if (strcmp(name, ATTR_HELD) == 0)
		v = held_reason(n);
	else if (strcmp(name, ATTR_TRANSCRIPTION) == 0)
		v = poller_transcripts(t->poller) &&
			    n->up.state != UPLOAD_EMPTY && n->up.task_id[0]
			? tr_state_name(n->tr.state)
			: NULL;
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

static int tfs_getxattr(const char *path, const char *name, char *value,
			size_t size)
{
	struct tusfs *t = fs();
	char buf[ATTR_MAX];
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = lookup(t, path, &n, &k);
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
static int tfs_setxattr(const char *path, const char *name, const char *value,
			size_t size, int flags)
{
	struct tusfs *t = fs();
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
		rc = lookup(t, path, &n, &k);
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

static int tfs_listxattr(const char *path, char *list, size_t size)
{
	static const char *const names[] = {
	    ATTR_STATE,	   ATTR_HELD,  ATTR_PROGRESS,	   ATTR_URL,
	    ATTR_TASK_ID,  ATTR_ERROR, ATTR_TRANSCRIPTION, ATTR_VERSION,
	    ATTR_MAX_RATE, ATTR_PAUSED};
	struct tusfs *t = fs();
	char buf[ATTR_MAX], all[256];
	size_t len = 0;
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = lookup(t, path, &n, &k);
	for (size_t i = 0;
	     rc == 0 && k < 0 && i < sizeof(names) / sizeof(*names); i++) {
		char full[64];

		snprintf(full, sizeof(full), ATTR_PREFIX "%s", names[i]);
		if (xattr_value(t, n, n == catalog_root(t->cat), full, buf,
				sizeof(buf)) < 0)
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

static int tfs_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return spool_statfs(fs()->spool, st);
}

static const struct fuse_operations ops = {
    .init = tfs_init,
    .getattr = tfs_getattr,
    .opendir = tfs_opendir,
    .readdir = tfs_readdir,
    .releasedir = tfs_releasedir,
    .mkdir = tfs_mkdir,
    .rmdir = tfs_rmdir,
    .unlink = tfs_unlink,
    .rename = tfs_rename,
    .create = tfs_create,
    .open = tfs_open,
    .read = tfs_read,
    .write = tfs_write,
    .flush = tfs_flush,
    .release = tfs_release,
    .fsync = tfs_fsync,
    .truncate = tfs_truncate,
    .chmod = tfs_chmod,
    .chown = tfs_chown,
    .utimens = tfs_utimens,
    .statfs = tfs_statfs,
    .getxattr = tfs_getxattr,
    .setxattr = tfs_setxattr,
    .listxattr = tfs_listxattr,
};

const struct fuse_operations *fs_operations(void)
{
	return &ops;
}
