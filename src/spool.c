/*
 * Spool files live in one directory opened once; every file is reached
 * relative to its descriptor (openat/unlinkat), so a rename of the state
 * directory under a running daemon cannot send writes elsewhere.
 */
#include "tusfs_setup.h"
#include "tusfs/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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

static uint64_t scan_max_id(int dirfd)
{
	int fd = dup(dirfd);
	uint64_t max = 0;
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return 0;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return 0;
	}
	while ((de = readdir(d)) != NULL) {
		char *end;
		unsigned long long v = strtoull(de->d_name, &end, 10);

		if (*end == '\0' && end != de->d_name && v > max)
			max = v;
	}
	closedir(d);
	return max;
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
