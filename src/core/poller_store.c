/*
 * The transcript store: STATE/transcripts/<inode>.<suffix>, written under
 * a temporary name and renamed into place, opened for reading by the
 * sidecars, and swept of files no completed entry owns.
 */
#include "tusfs_setup.h"
#include "core/poller_int.h"
#include "core/poller.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/spool.h"
#include "core/task.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void file_name(const struct node *n, enum render_format f, bool tmp,
		      char *buf, size_t size)
{
	snprintf(buf, size, "%" PRIu64 ".%s%s", n->ino, render_suffix(f),
		 tmp ? ".new" : "");
}

void poller_remove_files(struct poller *p, const struct node *n, bool tmp)
{
	for (int f = 0; f < RENDER_FORMATS; f++) {
		char name[64];

		file_name(n, (enum render_format)f, tmp, name, sizeof(name));
		unlinkat(p->dirfd, name, 0);
	}
}

int poller_open_transcript(struct poller *p, const struct node *n,
			   enum render_format f)
{
	char name[64];
	int fd;

	file_name(n, f, false, name, sizeof(name));
	fd = openat(p->dirfd, name, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Renders r in every format into the temporaries of n, synced. */
int poller_store(struct poller *p, const struct node *n,
		 const struct task_result *r, uint64_t *sizes)
{
	int rc = 0;

	for (int f = 0; f < RENDER_FORMATS && rc == 0; f++) {
		char name[64], *buf = NULL;
		size_t len = 0;
		int fd;

		file_name(n, (enum render_format)f, true, name, sizeof(name));
		rc = render_transcript(&r->transcript, (enum render_format)f,
				       &buf, &len);
		if (rc < 0)
			break;
		fd = openat(p->dirfd, name,
			    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0) {
			rc = -errno;
		} else {
			rc = spool_pwrite(fd, buf, len, 0);
			if (rc == 0 && fdatasync(fd) < 0)
				rc = -errno;
			close(fd);
		}
		sizes[f] = len;
		free(buf);
	}
	if (rc < 0)
		poller_remove_files(p, n, true);
	return rc;
}

/* Moves the temporaries into place. Lock held (see DESIGN). */
int poller_install(struct poller *p, const struct node *n)
{
	for (int f = 0; f < RENDER_FORMATS; f++) {
		char tmp[64], name[64];

		file_name(n, (enum render_format)f, true, tmp, sizeof(tmp));
		file_name(n, (enum render_format)f, false, name, sizeof(name));
		if (renameat(p->dirfd, tmp, p->dirfd, name) < 0) {
			int rc = -errno;

			poller_remove_files(p, n, true);
			poller_remove_files(p, n, false);
			return rc;
		}
	}
	return 0;
}

/* Whether every transcript of a completed n is in the store. */
bool poller_stored(struct poller *p, const struct node *n)
{
	for (int f = 0; f < RENDER_FORMATS; f++) {
		char name[64];
		struct stat st;

		file_name(n, (enum render_format)f, false, name, sizeof(name));
		if (fstatat(p->dirfd, name, &st, 0) < 0 ||
		    (uint64_t)st.st_size != n->tr.sizes[f])
			return false;
	}
	return true;
}

/* The inodes of completed files, to keep their transcripts. */
struct inos {
	uint64_t *v;
	size_t count, cap;
	bool failed;
};

static void collect(struct node *n, void *arg)
{
	struct inos *in = arg;

	if (in->failed || n->tr.state != TR_COMPLETED)
		return;
	if (in->count == in->cap) {
		size_t cap = in->cap ? in->cap * 2 : 64;
		uint64_t *v = realloc(in->v, cap * sizeof(*v));

		if (!v) {
			in->failed = true;
			return;
		}
		in->v = v;
		in->cap = cap;
	}
	in->v[in->count++] = n->ino;
}

static int cmp_ino(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Removes transcript files that no completed entry owns. */
void poller_sweep(struct poller *p)
{
	struct inos keep = {0};
	int fd;
	DIR *d;
	const struct dirent *de;

	catalog_each_file(catalog_root(p->cat), collect, &keep);
	/* Without the list, removing nothing is the safe way to fail. */
	fd = keep.failed ? -1 : dup(p->dirfd);
	d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		free(keep.v);
		return;
	}
	if (keep.count)
		qsort(keep.v, keep.count, sizeof(*keep.v), cmp_ino);
	while ((de = readdir(d))) {
		char *end;
		uint64_t ino = strtoull(de->d_name, &end, 10);

		if (de->d_name[0] == '.')
			continue;
		if (end == de->d_name || *end != '.' || strstr(end, ".new") ||
		    !keep.count ||
		    !bsearch(&ino, keep.v, keep.count, sizeof(*keep.v),
			     cmp_ino))
			unlinkat(p->dirfd, de->d_name, 0);
	}
	closedir(d);
	free(keep.v);
}
