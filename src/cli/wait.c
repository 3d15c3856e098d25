/*
 * `tusfs wait MOUNTPOINT [--timeout S] [--transcripts]`: blocks until every
 * upload on a mount is confirmed by the server (and, with --transcripts,
 * every transcription has finished), or reports the ones that failed;
 * files under temporary names are not uploads and do not count. It polls
 * the root's user.tusfs.summary every POLL_MS, one request however many
 * files the mount holds, and walks the files only to name the failed or
 * pending ones at the end.
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

#define POLL_MS 100

/* One poll's or walk's findings; nftw offers no argument, hence the static. */
static struct tally {
	unsigned long pending, failed;
	bool transcripts;
	size_t prefix;
} tally;

enum verdict { WAIT_SKIP, WAIT_DONE, WAIT_PENDING, WAIT_FAILED };

/*
 * How a file showing state counts, given detail: why it is held, or its
 * transcription once uploaded ("" if none). *shown is the word to report.
 * The one rule for both the summary and the walk.
 */
static enum verdict judge(const char *state, const char *detail,
			  const char **shown)
{
	*shown = state;
	/* A temporary name is not an upload (until renamed). */
	if (strcmp(state, WORD_HELD) == 0 &&
	    strcmp(detail, WORD_HELD_TEMPORARY) == 0)
		return WAIT_SKIP;
	/* Once uploaded, the transcription's state is what counts. */
	if (tally.transcripts && strcmp(state, WORD_UPLOADED) == 0 &&
	    detail[0] && strcmp(detail, TR_WORD_COMPLETED) != 0) {
		if (strcmp(detail, TR_WORD_FAILED) == 0 ||
		    strcmp(detail, TR_WORD_MISSING) == 0)
			return WAIT_FAILED;
		*shown = detail;
		return WAIT_PENDING;
	}
	if (strcmp(state, WORD_FAILED) == 0)
		return WAIT_FAILED;
	if (strcmp(state, WORD_UPLOADED) == 0 || strcmp(state, WORD_EMPTY) == 0)
		return WAIT_DONE;
	return WAIT_PENDING;
}

static void count(enum verdict v, unsigned long files)
{
	if (v == WAIT_PENDING)
		tally.pending += files;
	else if (v == WAIT_FAILED)
		tally.failed += files;
}

/* Tallies the mount from the root's summary ("COUNT\tSTATE\tDETAIL\n"
 * lines). -1 with errno if it cannot be read or makes no sense. */
static int poll_summary(const char *mnt)
{
	char buf[ATTR_MAX];
	char *line = buf, *next;

	tally.pending = tally.failed = 0;
	if (cli_attr(mnt, ATTR_PREFIX ATTR_SUMMARY, buf, sizeof(buf)) < 0)
		return -1;
	for (; *line; line = next) {
		char *state, *detail;
		const char *shown;
		unsigned long files = strtoul(line, &state, 10);

		next = strchr(line, '\n');
		if (!next || state == line || *state != '\t' ||
		    !(detail = strchr(++state, '\t')) || detail > next) {
			errno = EPROTO;
			return -1;
		}
		*detail++ = '\0';
		*next++ = '\0';
		count(judge(state, detail, &shown), files);
	}
	return 0;
}

static int visit(const char *path, const struct stat *st, int type,
		 struct FTW *ftw)
{
	char state[32], detail[32], err[ATTR_MAX];
	/* The name as printed: control characters escaped (log_escape). */
	static char name[PATH_MAX * 4 + 1];
	const char *shown;
	enum verdict v;

	(void)st;
	(void)ftw;
	if (type != FTW_F ||
	    cli_attr(path, ATTR_PREFIX ATTR_STATE, state, sizeof(state)) < 0)
		return 0;
	detail[0] = '\0';
	if (strcmp(state, WORD_HELD) == 0)
		cli_attr(path, ATTR_PREFIX ATTR_HELD, detail, sizeof(detail));
	else if (tally.transcripts && strcmp(state, WORD_UPLOADED) == 0)
		cli_attr(path, ATTR_PREFIX ATTR_TRANSCRIPTION, detail,
			 sizeof(detail));
	v = judge(state, detail, &shown);
	count(v, 1);
	if (v != WAIT_PENDING && v != WAIT_FAILED)
		return 0;
	log_escape(path + tally.prefix, name, sizeof(name));
	if (v == WAIT_FAILED) {
		if (cli_attr(path, ATTR_PREFIX ATTR_ERROR, err, sizeof(err)) <
		    0)
			strcpy(err, "no reason given");
		fprintf(stderr, "tusfs wait: %s: failed: %s\n", name, err);
	} else {
		fprintf(stderr, "tusfs wait: %s: still %s\n", name, shown);
	}
	return 0;
}

/* Names every failed and pending file on stderr, and counts them. */
static int report(const char *mnt)
{
	tally = (struct tally){.transcripts = tally.transcripts,
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

		if (poll_summary(mnt) < 0) {
			fprintf(stderr, "tusfs wait: cannot read '%s': %s\n",
				mnt, strerror(errno));
			return CLI_USAGE;
		}
		if (tally.pending == 0) {
			if (tally.failed == 0)
				return CLI_DONE;
			report(mnt);
			return CLI_FAILED;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		elapsed = (double)(now.tv_sec - start.tv_sec) +
			  (double)(now.tv_nsec - start.tv_nsec) / 1e9;
		if (timeout >= 0 && elapsed >= timeout) {
			report(mnt);
			fprintf(stderr,
				"tusfs wait: timed out with %lu files "
				"pending\n",
				tally.pending);
			return CLI_TIMEOUT;
		}
		usleep(POLL_MS * 1000);
	}
}
