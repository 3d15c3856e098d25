/*
 * Folder listings: a node's children and their sidecars, taken whole when
 * a listing starts and served by offset, with readdirplus attributes.
 */
#include "tusfs_setup.h"
#include "fuse/fs_int.h"
#include "core/catalog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

	if (!fs_sidecar_visible(t, c, k))
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
		fs_fill_stat(e->n, st);
		return e->n->name;
	}
	snprintf(buf, size, "%s%s", e->n->name,
		 catalog_sidecar_suffix((enum sidecar)e->sidecar));
	/* Without readdirplus only st_ino and the type count, and a status
	 * need not be rendered for its size. */
	if (plus) {
		fs_fill_sidecar_stat(t, e->n, e->sidecar, st);
	} else {
		memset(st, 0, sizeof(*st));
		st->st_ino =
		    catalog_sidecar_ino(e->n->ino, (enum sidecar)e->sidecar);
		st->st_mode = S_IFREG | 0444;
	}
	return buf;
}

int tfs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
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
int tfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct tusfs *t = fs_this();
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
		fs_fill_stat(d->dir, &st);
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

		/* Gone since the listing was taken, or moved to another
		 * folder: not listed here. */
		if (e->n->unlinked || e->n->parent != d->dir ||
		    (e->sidecar >= 0 &&
		     !fs_sidecar_visible(t, e->n, e->sidecar)))
			continue;
		n = dir_entry_fill(t, e, plus, name, sizeof(name), &st);
		if (filler(buf, n, &st, (off_t)i + 3, fill))
			break;
	}
out:
	catalog_unlock(t->cat);
	return rc;
}

int tfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	struct tusfs *t = fs_this();
	struct dir_handle *d = dir_handle_of(fi);

	(void)path;
	catalog_lock(t->cat);
	dir_clear(t, d);
	catalog_put(t->cat, d->dir);
	catalog_unlock(t->cat);
	free(d);
	return 0;
}
