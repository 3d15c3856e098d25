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
#include "fuse/fs_int.h"
#include "core/catalog.h"
#include "core/engine.h"
#include "core/journal.h"
#include "core/log.h"
#include "core/poller.h"
#include "core/spool.h"
#include "fuse/config.h"

#include <errno.h>
#include <fuse.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

struct tusfs *fs_this(void)
{
	return fuse_get_context()->private_data;
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
	return fs_this();
}

void fs_fill_stat(const struct node *n, struct stat *st)
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
bool fs_sidecar_visible(const struct tusfs *t, const struct node *n, int k)
{
	return k == SIDECAR_STATUS ||
	       (k < sidecar_kinds(t) && n->tr.state == TR_COMPLETED);
}

/*
 * Resolves a path to an entry (*k = -1) or to a visible sidecar of file
 * *n (*k its kind). Lock held.
 */
int fs_lookup(struct tusfs *t, const char *path, struct node **n, int *k)
{
	struct node *dir;
	const char *name;
	int rc = catalog_lookup(t->cat, path, n);

	*k = -1;
	if (rc != -ENOENT ||
	    catalog_lookup_parent(t->cat, path, &dir, &name) < 0)
		return rc;
	*k = catalog_sidecar(dir, name, sidecar_kinds(t), n);
	if (*k < 0 || !fs_sidecar_visible(t, *n, *k)) {
		*k = -1;
		return -ENOENT;
	}
	return 0;
}

/* Finds the node of an open handle or of a path; *k as lookup(). */
int fs_resolve(struct tusfs *t, const char *path,
	       const struct fuse_file_info *fi, struct node **n, int *k)
{
	if (fi && fi->fh) {
		*n = fs_handle_of(fi)->n;
		*k = fs_handle_of(fi)->sidecar;
		return 0;
	}
	if (!path)
		return -ENOENT;
	return fs_lookup(t, path, n, k);
}

/*
 * Whether an entry called name (a directory when dir_levels is 1, or n
 * moved there) fits below dir: within max_depth directory levels, and its
 * paths within CATALOG_MAX_RELPATH, so that relativePath always goes to
 * the server whole. Lock held.
 */
int fs_check_room(const struct tusfs *t, const struct node *dir,
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
int fs_check_name(const struct tusfs *t, const struct node *dir,
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

static int tfs_getattr(const char *path, struct stat *st,
		       struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = fs_resolve(t, path, fi, &n, &k);
	if (rc == 0 && k >= 0)
		fs_fill_sidecar_stat(t, n, k, st);
	else if (rc == 0)
		fs_fill_stat(n, st);
	/* An open sidecar is as long as what its handle reads. */
	if (rc == 0 && k >= 0 && fi && fi->fh)
		rc = fs_handle_size(fs_handle_of(fi), st);
	catalog_unlock(t->cat);
	return rc;
}

/*
 * n was added to or taken out of dir: both records change, since a
 * directory's times follow its entries. Lock held.
 */
void fs_entry_changed(struct tusfs *t, struct node *n, struct node *dir)
{
	journal_mark(t->journal, n);
	journal_mark(t->journal, dir);
}

static int tfs_mkdir(const char *path, mode_t mode)
{
	struct tusfs *t = fs_this();
	const struct fuse_context *ctx = fuse_get_context();
	struct node *parent, *n;
	const char *name;
	int rc;

	catalog_lock(t->cat);
	rc = catalog_lookup_parent(t->cat, path, &parent, &name);
	if (rc == 0)
		rc = fs_check_name(t, parent, name, false, NULL);
	if (rc == 0)
		rc = fs_check_room(t, parent, name, 1, NULL);
	if (rc == 0)
		rc = catalog_add(t->cat, parent, name, S_IFDIR | (mode & 07777),
				 ctx->uid, ctx->gid, &n);
	if (rc == 0)
		fs_entry_changed(t, n, parent);
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_rmdir(const char *path)
{
	struct tusfs *t = fs_this();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = fs_lookup(t, path, &n, &k);
	if (rc == 0 && (k >= 0 || !S_ISDIR(n->mode)))
		rc = -ENOTDIR;
	else if (rc == 0 && n == catalog_root(t->cat))
		rc = -EBUSY;
	else if (rc == 0 && n->children)
		rc = -ENOTEMPTY;
	if (rc == 0) {
		fs_entry_changed(t, n, n->parent);
		catalog_unlink(t->cat, n);
	}
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_unlink(const char *path)
{
	struct tusfs *t = fs_this();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = fs_lookup(t, path, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -EPERM; /* a sidecar goes with its file */
	else if (rc == 0 && S_ISDIR(n->mode))
		rc = -EISDIR;
	if (rc == 0) {
		/* Stop the bytes on the wire; the engine ends the upload. */
		catalog_get(n);
		poller_delete_task(t->poller, n);
		atomic_store(&n->up.cancel, 1);
		fs_entry_changed(t, n, n->parent);
		catalog_unlink(t->cat, n);
		engine_kick(t->engine, n);
		catalog_put(t->cat, n);
	}
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_rename(const char *from, const char *to, unsigned int flags)
{
	struct tusfs *t = fs_this();
	struct node *n, *dir, *victim;
	const struct node *p;
	const char *name;
	int rc, k;

	if (flags & ~RENAME_NOREPLACE)
		return -EINVAL;
	catalog_lock(t->cat);
	rc = fs_lookup(t, from, &n, &k);
	if (rc == 0 && k >= 0)
		rc = -EPERM; /* sidecars follow their file, never alone */
	if (rc == 0)
		rc = catalog_lookup_parent(t->cat, to, &dir, &name);
	if (rc == 0)
		rc = fs_check_name(t, dir, name, S_ISREG(n->mode), n);
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
		rc = fs_check_room(t, dir, name, 0, n);
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
		fs_entry_changed(t, n, dir);
		engine_renamed(t->engine, n);
	}
out:
	catalog_unlock(t->cat);
	return rc;
}

static int tfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = fs_resolve(t, path, fi, &n, &k);
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
	struct tusfs *t = fs_this();
	const struct fuse_context *ctx = fuse_get_context();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = fs_resolve(t, path, fi, &n, &k);
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
	struct tusfs *t = fs_this();
	struct node *n;
	int rc, k;

	catalog_lock(t->cat);
	rc = fs_resolve(t, path, fi, &n, &k);
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

static int tfs_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return spool_statfs(fs_this()->spool, st);
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
