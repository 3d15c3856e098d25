/*
 * `tusfs wait MOUNTPOINT [--timeout S] [--transcripts]`: blocks until every
 * upload on a mount is confirmed by the server (and, with --transcripts,
 * every transcription has finished), or reports the ones that failed;
 * files under temporary names are not uploads and do not count. The walk
 * over the user.tusfs.* attributes is repeated every POLL_MS; a mount with
 * thousands of files costs a few milliseconds per walk.
 */
#include "tusfs_setup.h"
#include "cli/cli.h"
#include "core/attrs.h"
#include "core/log.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int visit(const char *path, const struct stat *st, int type,
		 struct FTW *ftw)
{
	char state[32], err[ATTR_MAX], tr[32], held[32];
	/* The name as printed: control characters escaped (log_escape). */
	static char name[PATH_MAX * 4 + 1];

	(void)st;
	(void)ftw;
	if (type != FTW_F ||
	    cli_attr(path, ATTR_PREFIX ATTR_STATE, state, sizeof(state)) < 0)
		return 0;
	/* A temporary name is not an upload (until renamed). */
	if (strcmp(state, WORD_HELD) == 0 &&
	    cli_attr(path, ATTR_PREFIX ATTR_HELD, held, sizeof(held)) >= 0 &&
	    strcmp(held, WORD_HELD_TEMPORARY) == 0)
		return 0;
	/* Once uploaded, the transcription's state is what counts. */
	if (tally.transcripts && strcmp(state, WORD_UPLOADED) == 0 &&
	    cli_attr(path, ATTR_PREFIX ATTR_TRANSCRIPTION, tr, sizeof(tr)) >=
		0 &&
	    strcmp(tr, TR_WORD_COMPLETED) != 0)
		snprintf(state, sizeof(state), "%s",
			 strcmp(tr, TR_WORD_FAILED) == 0 ||
				 strcmp(tr, TR_WORD_MISSING) == 0
			     ? "failed"
			     : tr);
	if (tally.report)
		log_escape(path + tally.prefix, name, sizeof(name));
	if (strcmp(state, WORD_FAILED) == 0) {
		tally.failed++;
		if (tally.report) {
			if (cli_attr(path, ATTR_PREFIX ATTR_ERROR, err,
				     sizeof(err)) < 0)
				strcpy(err, "no reason given");
			fprintf(stderr, "tusfs wait: %s: failed: %s\n", name,
				err);
		}
	} else if (strcmp(state, WORD_UPLOADED) != 0 &&
		   strcmp(state, WORD_EMPTY) != 0) {
		tally.pending++;
		if (tally.report)
			fprintf(stderr, "tusfs wait: %s: still %s\n", name,
				state);
	}
	return 0;
}

static int walk(const char *mnt, bool report)
{
	tally = (struct tally){.report = report,
			       .transcripts = tally.transcripts,
			       .prefix = cli_prefix(mnt)};
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
	struct timespec start, now;

	for (int i = 1; i < argc; i++) {
		char *end;

		if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			timeout = strtod(argv[++i], &end);
			if (*end || end == argv[i] || timeout < 0) {
				usage();
				return CLI_USAGE;
			}
		} else if (strcmp(argv[i], "--transcripts") == 0) {
			tally.transcripts = true;
		} else if (!cli_mount_arg(argv[i], &mnt)) {
			usage();
			return CLI_USAGE;
		}
	}
	mnt = cli_mount_given("wait", mnt, usage);
	if (!mnt)
		return CLI_USAGE;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		double elapsed;

		if (walk(mnt, false) != 0) {
			fprintf(stderr, "tusfs wait: cannot walk '%s': %s\n",
				mnt, strerror(errno));
			return CLI_USAGE;
		}
		if (tally.pending == 0) {
			if (tally.failed == 0)
				return CLI_DONE;
			walk(mnt, true);
			return CLI_FAILED;
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
			return CLI_TIMEOUT;
		}
		usleep(POLL_MS * 1000);
	}
}
