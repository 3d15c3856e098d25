/*
 * The journal's mount-time load: scan the record files, take each node's
 * newest valid copy, rebuild the tree (parents before children, orphans
 * into lost+found), and restore every file's upload against its spool.
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
	body = (size_t)journal_get_le((const unsigned char *)p + 8, 4);
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
