/*
 * The namespace tree. Children are a singly linked list per directory:
 * lookups are linear, which costs microseconds for the hundreds of files a
 * recording folder holds; a hash can replace the list behind the same
 * functions if directories grow into the tens of thousands.
 *
 * Nothing here does I/O or knows about uploads beyond holding their state.
 */
#include "tusfs_setup.h"
#include "core/attrs.h"
#include "core/catalog.h"
#include "core/spool.h"
#include "tus/tus.h"

#include <xxhash.h>

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct catalog {
	pthread_mutex_t lock;
	struct node *root;
	uint64_t next_ino; /* protected by lock */
	catalog_free_fn *free_fn;
	void *free_arg;
};

const char *upload_state_name(enum upload_state s)
{
	static const char *const names[] = {
	    [UPLOAD_QUEUED] = WORD_QUEUED,
	    [UPLOAD_UPLOADING] = WORD_UPLOADING,
	    [UPLOAD_RETRYING] = WORD_RETRYING,
	    [UPLOAD_UPLOADED] = WORD_UPLOADED,
	    [UPLOAD_FAILED] = WORD_FAILED,
	    [UPLOAD_EMPTY] = WORD_EMPTY,
	};
	return names[s];
}

const char *tr_state_name(enum tr_state s)
{
	static const char *const names[] = {
	    [TR_NONE] = TR_WORD_WAITING,
	    [TR_QUEUED] = TR_WORD_QUEUED,
	    [TR_PROCESSING] = TR_WORD_PROCESSING,
	    [TR_COMPLETED] = TR_WORD_COMPLETED,
	    [TR_FAILED] = TR_WORD_FAILED,
	    [TR_MISSING] = TR_WORD_MISSING,
	    [TR_STARTING] = TR_WORD_STARTING,
	};
	return names[s];
}

struct node *catalog_new_node(struct catalog *cat, uint64_t ino,
			      const char *name, mode_t mode, uid_t uid,
			      gid_t gid)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->ino = ino ? ino : cat->next_ino++;
	n->mode = mode;
	n->uid = uid;
	n->gid = gid;
	n->refs = 1;
	upload_init(&n->up);
	n->tr.percent = -1;
	catalog_touch(n);
	return n;
}

static void node_free(struct node *n)
{
	free(n->up.url);
	free(n->up.message);
	spool_stream_free(n->up.stream);
	free(n->tr.error);
	free(n->tr.poll_error);
	free(n->hslots);
	free(n->name);
	free(n);
}

struct catalog *catalog_create(uid_t uid, gid_t gid, uint64_t first_ino,
			       catalog_free_fn *free_fn, void *arg)
{
	struct catalog *cat = calloc(1, sizeof(*cat));

	if (!cat)
		return NULL;
	pthread_mutex_init(&cat->lock, NULL);
	cat->next_ino = CATALOG_ROOT_INO;
	cat->root = catalog_new_node(cat, 0, "", S_IFDIR | 0755, uid, gid);
	if (!cat->root) {
		free(cat);
		return NULL;
	}
	cat->next_ino =
	    first_ino > CATALOG_ROOT_INO ? first_ino : CATALOG_ROOT_INO + 1;
	cat->free_fn = free_fn;
	cat->free_arg = arg;
	return cat;
}

static void free_tree(struct node *n)
{
	struct node *c = n->children;

	while (c) {
		struct node *next = c->next;

		free_tree(c);
		c = next;
	}
	node_free(n);
}

void catalog_free(struct catalog *cat)
{
	if (!cat)
		return;
	free_tree(cat->root);
	pthread_mutex_destroy(&cat->lock);
	free(cat);
}

pthread_mutex_t *catalog_mutex(struct catalog *cat)
{
	return &cat->lock;
}

void catalog_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &attr);
	pthread_condattr_destroy(&attr);
}

void catalog_lock(struct catalog *cat)
{
	pthread_mutex_lock(&cat->lock);
}

void catalog_unlock(struct catalog *cat)
{
	pthread_mutex_unlock(&cat->lock);
}

struct node *catalog_root(struct catalog *cat)
{
	return cat->root;
}

static size_t slot_of(const char *name, size_t hsize)
{
	return (size_t)XXH3_64bits(name, strlen(name)) & (hsize - 1);
}

/*
 * Files dir's children by name in a table twice as large (or 16). False
 * when it cannot: the chains of the table it has just grow longer.
 */
static bool rehash(struct node *dir)
{
	size_t size = dir->hsize ? dir->hsize * 2 : 16;
	struct node **slots = calloc(size, sizeof(struct node *));

	if (!slots)
		return false;
	for (struct node *c = dir->children; c; c = c->next) {
		size_t i = slot_of(c->name, size);

		c->hnext = slots[i];
		slots[i] = c;
	}
	free(dir->hslots);
	dir->hslots = slots;
	dir->hsize = size;
	return true;
}

struct node *catalog_child(const struct node *dir, const char *name)
{
	struct node *c = dir->hslots ? dir->hslots[slot_of(name, dir->hsize)]
				     : dir->children;

	for (; c; c = dir->hslots ? c->hnext : c->next)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

/* Walks len bytes of path from the root. */
static int walk(struct catalog *cat, const char *path, size_t len,
		struct node **out)
{
	struct node *n = cat->root;
	const char *p = path, *end = path + len;

	while (p < end) {
		const char *slash;
		char name[256];
		size_t nlen;

		while (p < end && *p == '/')
			p++;
		if (p == end)
			break;
		slash = memchr(p, '/', (size_t)(end - p));
		nlen = (size_t)((slash ? slash : end) - p);
		if (nlen >= sizeof(name))
			return -ENAMETOOLONG;
		if (!S_ISDIR(n->mode))
			return -ENOTDIR;
		memcpy(name, p, nlen);
		name[nlen] = '\0';
		n = catalog_child(n, name);
		if (!n)
			return -ENOENT;
		p += nlen;
	}
	*out = n;
	return 0;
}

int catalog_lookup(struct catalog *cat, const char *path, struct node **out)
{
	return walk(cat, path, strlen(path), out);
}

int catalog_lookup_parent(struct catalog *cat, const char *path,
			  struct node **parent, const char **name)
{
	const char *slash = strrchr(path, '/');
	int rc;

	if (!slash || slash[1] == '\0')
		return -EINVAL;
	rc = walk(cat, path, (size_t)(slash - path), parent);
	if (rc < 0)
		return rc;
	if (!S_ISDIR((*parent)->mode))
		return -ENOTDIR;
	*name = slash + 1;
	return 0;
}

int catalog_attach(struct node *dir, struct node *n)
{
	if (catalog_child(dir, n->name))
		return -EEXIST;
	n->parent = dir;
	n->prev = NULL;
	n->next = dir->children;
	if (n->next)
		n->next->prev = n;
	dir->children = n;
	if (S_ISDIR(n->mode))
		dir->subdirs++;
	/* A new table files every child, n too. */
	if (++dir->nchildren > dir->hsize && rehash(dir))
		return 0;
	if (dir->hslots) {
		size_t k = slot_of(n->name, dir->hsize);

		n->hnext = dir->hslots[k];
		dir->hslots[k] = n;
	}
	return 0;
}

void catalog_reserve_ino(struct catalog *cat, uint64_t ino)
{
	if (cat->next_ino <= ino)
		cat->next_ino = ino + 1;
}

int catalog_set_name(struct node *n, const char *name)
{
	char *copy = strdup(name);

	if (!copy)
		return -ENOMEM;
	free(n->name);
	n->name = copy;
	return 0;
}

int catalog_add(struct catalog *cat, struct node *dir, const char *name,
		mode_t mode, uid_t uid, gid_t gid, struct node **out)
{
	struct node *n;

	if (catalog_child(dir, name))
		return -EEXIST;
	n = catalog_new_node(cat, 0, name, mode, uid, gid);
	if (!n)
		return -ENOMEM;
	/* Made in a paused folder: paused too. */
	n->paused = dir->paused;
	catalog_attach(dir, n);
	catalog_touch(dir);
	*out = n;
	return 0;
}

void catalog_detach(struct node *n)
{
	struct node *dir = n->parent;

	if (n->prev)
		n->prev->next = n->next;
	else
		dir->children = n->next;
	if (n->next)
		n->next->prev = n->prev;
	if (dir->hslots) {
		struct node **pp = &dir->hslots[slot_of(n->name, dir->hsize)];

		while (*pp != n)
			pp = &(*pp)->hnext;
		*pp = n->hnext;
	}
	if (S_ISDIR(n->mode))
		dir->subdirs--;
	dir->nchildren--;
	n->next = n->prev = n->hnext = NULL;
	n->parent = NULL;
}

void catalog_discard(struct node *n)
{
	node_free(n);
}

/* Detaches n; a directory's times change with its entries. */
static void detach(struct node *n)
{
	struct node *dir = n->parent;

	catalog_detach(n);
	catalog_touch(dir);
}

void catalog_unlink(struct catalog *cat, struct node *n)
{
	detach(n);
	n->unlinked = true;
	catalog_put(cat, n);
}

int catalog_rename(struct catalog *cat, struct node *n, struct node *dir,
		   const char *name)
{
	struct node *victim = catalog_child(dir, name);
	char *copy;

	if (victim == n)
		return 0;
	copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	if (victim)
		catalog_unlink(cat, victim);
	detach(n);
	free(n->name);
	n->name = copy;
	catalog_attach(dir, n);
	catalog_touch(dir);
	n->ctime = dir->mtime;
	return 0;
}

void catalog_get(struct node *n)
{
	n->refs++;
}

void catalog_put(struct catalog *cat, struct node *n)
{
	if (--n->refs > 0)
		return;
	if (cat->free_fn && S_ISREG(n->mode))
		cat->free_fn(n, cat->free_arg);
	node_free(n);
}

int catalog_relpath(const struct node *n, char *buf, size_t size)
{
	size_t len = 0;

	/* Build from the leaf backwards at the end of buf, then move. */
	if (size == 0)
		return -ENAMETOOLONG;
	buf[size - 1] = '\0';
	for (const struct node *p = n; p && p->parent; p = p->parent) {
		size_t nlen = strlen(p->name) + (len ? 1 : 0);

		if (len + nlen + 1 > size)
			return -ENAMETOOLONG;
		len += nlen;
		memcpy(buf + size - 1 - len, p->name, strlen(p->name));
		if (nlen > strlen(p->name))
			buf[size - 1 - len + strlen(p->name)] = '/';
	}
	memmove(buf, buf + size - 1 - len, len + 1);
	return (int)len;
}

unsigned catalog_depth(const struct node *dir)
{
	unsigned d = 0;

	for (const struct node *p = dir; p && p->parent; p = p->parent)
		d++;
	return d;
}

void catalog_extent(const struct node *n, unsigned *levels, size_t *longest)
{
	*levels = S_ISDIR(n->mode) ? 1 : 0;
	*longest = strlen(n->name);
	for (const struct node *c = n->children; c; c = c->next) {
		unsigned cl;
		size_t clen;

		catalog_extent(c, &cl, &clen);
		if (1 + cl > *levels)
			*levels = 1 + cl;
		if (strlen(n->name) + 1 + clen > *longest)
			*longest = strlen(n->name) + 1 + clen;
	}
}

void catalog_touch(struct node *n)
{
	clock_gettime(CLOCK_REALTIME, &n->mtime);
	n->atime = n->mtime;
	n->ctime = n->mtime;
}

const char *catalog_sidecar_suffix(enum sidecar k)
{
	static const char *const suffixes[] = {
	    [SIDECAR_STATUS] = ".status", [SIDECAR_TXT] = ".txt",
	    [SIDECAR_SRT] = ".srt",	  [SIDECAR_VTT] = ".vtt",
	    [SIDECAR_JSON] = ".json",
	};
	return suffixes[k];
}

int catalog_sidecar(const struct node *dir, const char *name, int kinds,
		    struct node **file)
{
	size_t len = strlen(name);

	for (int k = 0; k < kinds; k++) {
		const char *suffix = catalog_sidecar_suffix((enum sidecar)k);
		size_t slen = strlen(suffix);
		char base[256];
		struct node *f;

		if (len <= slen || len - slen >= sizeof(base) ||
		    strcmp(name + len - slen, suffix) != 0)
			continue;
		memcpy(base, name, len - slen);
		base[len - slen] = '\0';
		f = catalog_child(dir, base);
		if (f && S_ISREG(f->mode)) {
			*file = f;
			return k;
		}
	}
	return -1;
}

bool catalog_sidecar_taken(const struct node *dir, const char *name, int kinds,
			   const struct node *except)
{
	for (int k = 0; k < kinds; k++) {
		char full[512];
		const struct node *c;

		snprintf(full, sizeof(full), "%s%s", name,
			 catalog_sidecar_suffix((enum sidecar)k));
		c = catalog_child(dir, full);
		if (c && c != except)
			return true;
	}
	return false;
}

/*
 * Copies the pattern at *p into pat and moves *p past it and its '/'.
 * -EINVAL for an empty pattern, one longer than NAME_MAX, or a trailing
 * '/'.
 */
static int next_pattern(const char **p, char pat[NAME_MAX + 1])
{
	size_t len = strcspn(*p, "/");
	bool slash = (*p)[len] == '/';

	if (len == 0 || len > NAME_MAX || (slash && !(*p)[len + 1]))
		return -EINVAL;
	memcpy(pat, *p, len);
	pat[len] = '\0';
	*p += len + slash;
	return 0;
}

int catalog_temp_names_check(const char *patterns)
{
	char pat[NAME_MAX + 1];

	for (const char *p = patterns; *p;)
		if (next_pattern(&p, pat) < 0)
			return -EINVAL;
	return 0;
}

bool catalog_temp_name(const char *patterns, const char *name)
{
	char pat[NAME_MAX + 1];

	/* The patterns were checked at mount (catalog_temp_names_check). */
	for (const char *p = patterns; p && *p;) {
		if (next_pattern(&p, pat) < 0)
			return false;
		if (fnmatch(pat, name, 0) == 0)
			return true;
	}
	return false;
}

void catalog_each_file(struct node *dir, void (*fn)(struct node *, void *),
		       void *arg)
{
	for (struct node *n = dir->children; n; n = n->next) {
		if (S_ISDIR(n->mode))
			catalog_each_file(n, fn, arg);
		else
			fn(n, arg);
	}
}
