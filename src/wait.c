/*
 * `tusfs wait MOUNTPOINT [--timeout S] [--transcripts]`: blocks until every
 * upload on a mount is confirmed by the server (and, with --transcripts,
 * every transcription has finished), or reports the ones that failed;
 * files under temporary names are not uploads and do not count. It
 * talks to the daemon only through the filesystem (the user.tusfs.*
 * attributes), so it needs no socket and works for whoever can read the
 * mount. The walk is repeated every POLL_MS; a mount with thousands of
 * files costs a few milliseconds per walk.
 */
#include "tusfs_setup.h"
#include "wait.h"
#include "tusfs/fs.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 200

/* One walk's findings; nftw offers no argument, hence the static. */
static struct tally {
	unsigned pending, failed;
	bool report; /* print failed (and pending) files this walk */
	bool transcripts;
	size_t prefix;
} tally;

static ssize_t attr(const char *path, const char *name, char *buf, size_t size)
{
	ssize_t n = getxattr(path, name, buf, size - 1);

	buf[n < 0 ? 0 : n] = '\0';
	return n;
}

static int visit(const char *path, const struct stat *st, int type,
		 struct FTW *ftw)
{
	char state[32], err[FS_XATTR_MAX], tr[32], held[32];

	(void)st;
	(void)ftw;
	if (type != FTW_F ||
	    attr(path, FS_XATTR_PREFIX "state", state, sizeof(state)) < 0)
		return 0;
	/* A temporary name is not an upload (until renamed). */
	if (strcmp(state, "held") == 0 &&
	    attr(path, FS_XATTR_PREFIX "held", held, sizeof(held)) >= 0 &&
	    strcmp(held, "temporary name") == 0)
		return 0;
	/* Once uploaded, the transcription's state is what counts. */
	if (tally.transcripts && strcmp(state, "uploaded") == 0 &&
	    attr(path, FS_XATTR_PREFIX "transcription", tr, sizeof(tr)) >= 0 &&
	    strcmp(tr, "completed") != 0)
		snprintf(state, sizeof(state), "%s",
			 strcmp(tr, "failed") == 0 || strcmp(tr, "missing") == 0
			     ? "failed"
			     : tr);
	if (strcmp(state, "failed") == 0) {
		tally.failed++;
		if (tally.report) {
			if (attr(path, FS_XATTR_PREFIX "error", err,
				 sizeof(err)) < 0)
				strcpy(err, "no reason given");
			fprintf(stderr, "tusfs wait: %s: failed: %s\n",
				path + tally.prefix, err);
		}
	} else if (strcmp(state, "uploaded") != 0 &&
		   strcmp(state, "empty") != 0) {
		tally.pending++;
		if (tally.report)
			fprintf(stderr, "tusfs wait: %s: still %s\n",
				path + tally.prefix, state);
	}
	return 0;
}

static int walk(const char *mnt, bool report)
{
	tally = (struct tally){.report = report,
			       .transcripts = tally.transcripts,
			       .prefix = strlen(mnt) + 1};
	return nftw(mnt, visit, 16, FTW_PHYS | FTW_MOUNT);
}

static void usage(void)
{
	fprintf(stderr, "usage: tusfs wait MOUNTPOINT [--timeout SECONDS] "
			"[--transcripts]\n");
}

int wait_main(int argc, char *argv[])
{
	const char *mnt = NULL;
	double timeout = -1;
	char version[64];
	struct timespec start, now;

	for (int i = 1; i < argc; i++) {
		char *end;

		if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			timeout = strtod(argv[++i], &end);
			if (*end || end == argv[i] || timeout < 0) {
				usage();
				return WAIT_USAGE;
			}
		} else if (strcmp(argv[i], "--transcripts") == 0) {
			tally.transcripts = true;
		} else if (!mnt && argv[i][0] != '-') {
			mnt = argv[i];
		} else {
			usage();
			return WAIT_USAGE;
		}
	}
	if (!mnt) {
		usage();
		return WAIT_USAGE;
	}
	if (attr(mnt, FS_XATTR_PREFIX "version", version, sizeof(version)) <
	    0) {
		fprintf(stderr, "tusfs wait: '%s' is not a tusfs mount: %s\n",
			mnt, strerror(errno));
		return WAIT_USAGE;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		double elapsed;

		if (walk(mnt, false) != 0) {
			fprintf(stderr, "tusfs wait: cannot walk '%s': %s\n",
				mnt, strerror(errno));
			return WAIT_USAGE;
		}
		if (tally.pending == 0) {
			if (tally.failed == 0)
				return WAIT_DONE;
			walk(mnt, true);
			return WAIT_FAILED;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		elapsed = (double)(now.tv_sec - start.tv_sec) +
			  (double)(now.tv_nsec - start.tv_nsec) / 1e9;
		if (timeout >= 0 && elapsed >= timeout) {
			walk(mnt, true);
			fprintf(stderr,
				"tusfs wait: timed out with %u files "
				"pending\n",
				tally.pending);
			return WAIT_TIMEOUT;
		}
		usleep(POLL_MS * 1000);
	}
}
