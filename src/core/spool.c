/*
 * Spool files live in one directory opened once; every file is reached
 * relative to its descriptor (openat/unlinkat), so a rename of the state
 * directory under a running daemon cannot send writes elsewhere.
 */
#include "tusfs_setup.h"
#include "core/spool.h"
#include "core/log.h"

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

/* Read size when hashing: large enough to stream at memory speed. */
#define HASH_BLOCK (1024 * 1024)

struct spool {
	int dirfd;
};

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[4096];
	int n = snprintf(buf, sizeof(buf), "%s", path);

	if (n < 0 || (size_t)n >= sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * The state directory holds recordings and their names: 0700 and ours,
 * even when it was made by hand (or by an older tusfs) with a looser mode.
 */
static int make_private(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
	} else if (st.st_uid != geteuid()) {
		log_error("state directory '%s' belongs to uid %u, not to "
			  "this user",
			  dir, (unsigned)st.st_uid);
		rc = -EPERM;
	} else if (st.st_mode & 077) {
		if (fchmod(fd, 0700) < 0)
			rc = -errno;
		else
			log_warn("state directory '%s' was mode %03o; it is "
				 "0700 now",
				 dir, (unsigned)(st.st_mode & 0777));
	}
	close(fd);
	return rc;
}

/* Calls fn for each spool file's id; stops at the first non-zero. */
static int each_id(int dirfd, int (*fn)(uint64_t id, void *arg), void *arg)
{
	int fd = dup(dirfd), rc = 0;
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while (rc == 0 && (de = readdir(d)) != NULL) {
		size_t len = strspn(de->d_name, "0123456789");

		if (len > 0 && len < 19 && de->d_name[len] == '\0')
			rc = fn(strtoull(de->d_name, NULL, 10), arg);
	}
	closedir(d);
	return rc;
}

static int note_max(uint64_t id, void *arg)
{
	uint64_t *max = arg;

	if (id > *max)
		*max = id;
	return 0;
}

static uint64_t scan_max_id(int dirfd)
{
	uint64_t max = 0;

	each_id(dirfd, note_max, &max);
	return max;
}

struct sweep {
	struct spool *s;
	bool (*keep)(uint64_t id, void *arg);
	void *arg;
	int removed;
};

static int sweep_one(uint64_t id, void *arg)
{
	struct sweep *sw = arg;

	if (sw->keep(id, sw->arg))
		return 0;
	if (spool_remove(sw->s, id) == 0)
		sw->removed++;
	return 0;
}

int spool_sweep(struct spool *s, bool (*keep)(uint64_t id, void *arg),
		void *arg)
{
	struct sweep sw = {.s = s, .keep = keep, .arg = arg};
	int rc = each_id(s->dirfd, sweep_one, &sw);

	return rc < 0 ? rc : sw.removed;
}

int64_t spool_size(struct spool *s, uint64_t id)
{
	char name[32];
	struct stat st;

	snprintf(name, sizeof(name), "%" PRIu64, id);
	if (fstatat(s->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return S_ISREG(st.st_mode) ? (int64_t)st.st_size : -EINVAL;
}

struct spool *spool_open_dir(const char *dir, uint64_t *max_id, int *err)
{
	struct spool *s;
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/spool", dir);

	if (n < 0 || (size_t)n >= sizeof(path)) {
		*err = -ENAMETOOLONG;
		return NULL;
	}
	*err = mkdir_p(path, 0700);
	if (*err == 0)
		*err = make_private(dir);
	if (*err < 0)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		*err = -ENOMEM;
		return NULL;
	}
	s->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		*err = -errno;
		free(s);
		return NULL;
	}
	*max_id = scan_max_id(s->dirfd);
	return s;
}

void spool_free(struct spool *s)
{
	if (!s)
		return;
	close(s->dirfd);
	free(s);
}

int spool_open(struct spool *s, uint64_t id, int flags)
{
	char name[32];
	int fd;

	snprintf(name, sizeof(name), "%" PRIu64, id);
	fd = openat(s->dirfd, name, flags | O_CLOEXEC, 0600);
	return fd < 0 ? -errno : fd;
}

int spool_remove(struct spool *s, uint64_t id)
{
	char name[32];

	snprintf(name, sizeof(name), "%" PRIu64, id);
	if (unlinkat(s->dirfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int spool_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

int spool_statfs(struct spool *s, struct statvfs *st)
{
	return fstatvfs(s->dirfd, st) < 0 ? -errno : 0;
}

int spool_hash(struct spool *s, uint64_t id, uint64_t len, uint64_t *hash,
	       const atomic_int *cancel)
{
	XXH3_state_t *state = XXH3_createState();
	char *buf = malloc(HASH_BLOCK);
	uint64_t off = 0;
	int fd = -1, rc = 0;

	if (!state || !buf) {
		rc = -ENOMEM;
		goto out;
	}
	fd = spool_open(s, id, O_RDONLY);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	XXH3_64bits_reset(state);
	while (off < len && rc == 0) {
		size_t want =
		    len - off < HASH_BLOCK ? (size_t)(len - off) : HASH_BLOCK;
		ssize_t r = pread(fd, buf, want, (off_t)off);

		if (cancel && atomic_load(cancel))
			rc = -ECANCELED;
		else if (r < 0 && errno != EINTR)
			rc = -errno;
		else if (r == 0)
			rc = -EIO;
		else if (r > 0 &&
			 XXH3_64bits_update(state, buf, (size_t)r) != XXH_OK)
			rc = -EINVAL;
		else if (r > 0)
			off += (uint64_t)r;
	}
	if (rc == 0)
		*hash = XXH3_64bits_digest(state);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	XXH3_freeState(state);
	return rc;
}

struct spool_stream {
	XXH3_state_t *state;
	uint64_t len;
};

struct spool_stream *spool_stream_new(void)
{
	struct spool_stream *s = calloc(1, sizeof(*s));

	if (s)
		s->state = XXH3_createState();
	if (!s || !s->state || XXH3_64bits_reset(s->state) != XXH_OK) {
		spool_stream_free(s);
		return NULL;
	}
	return s;
}

int spool_stream_feed(struct spool_stream *s, const void *buf, size_t n)
{
	if (XXH3_64bits_update(s->state, buf, n) != XXH_OK)
		return -EINVAL;
	s->len += n;
	return 0;
}

uint64_t spool_stream_len(const struct spool_stream *s)
{
	return s->len;
}

uint64_t spool_stream_digest(const struct spool_stream *s)
{
	return XXH3_64bits_digest(s->state);
}

void spool_stream_free(struct spool_stream *s)
{
	if (!s)
		return;
	XXH3_freeState(s->state);
	free(s);
}
