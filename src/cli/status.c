/*
 * `tusfs status MOUNTPOINT [--json]`: one row per file on a mount, read
 * from its NAME.status: size, upload state with a progress bar, rate, ETA
 * and the transcription's state, with any error on a line below. --json
 * prints the NAME.status objects as one array, each with its "path", for
 * scripts. Sidecars are not files of their own: they have no
 * user.tusfs.state, which is how the walk tells them apart.
 */
#include "tusfs_setup.h"
#include "cli/cli.h"
#include "core/attrs.h"
#include "core/log.h"

#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAR_WIDTH  20
#define PATH_WIDTH 48

struct row {
	char *path; /* relative to the mount */
	json_t *st; /* NAME.status, or {"state"} when it cannot be read */
};

/* One walk's findings; nftw offers no argument, hence the static. */
static struct {
	struct row *v;
	size_t n, cap;
	size_t prefix;
	bool oom;
} rows;

/* A JSON string for a file name that may not be UTF-8 (bytes it cannot
 * hold become '?'). */
static json_t *name_string(const char *s)
{
	json_t *j = json_string(s);
	char *copy;

	if (j || !(copy = strdup(s)))
		return j;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

/* A path as the table shows it: control characters escaped (log_escape),
 * so a name cannot split its row or drive the terminal. The result lives
 * until the next call. */
static const char *shown(const char *path)
{
	static char buf[PATH_MAX * 4 + 1];

	log_escape(path, buf, sizeof(buf));
	return buf;
}

static json_t *read_status(const char *path, const char *state)
{
	char file[PATH_MAX + 16];
	json_t *st = NULL;

	if (snprintf(file, sizeof(file), "%s.status", path) < (int)sizeof(file))
		st = json_load_file(file, 0, NULL);
	if (!json_is_object(st)) {
		/* A name too long for a sidecar, or unlinked meanwhile. */
		json_decref(st);
		st = json_pack("{ss}", "state", state);
	}
	return st;
}

static int visit(const char *path, const struct stat *sb, int type,
		 struct FTW *ftw)
{
	char state[32];
	struct row r;

	(void)sb;
	(void)ftw;
	if (type != FTW_F ||
	    cli_attr(path, ATTR_PREFIX ATTR_STATE, state, sizeof(state)) < 0)
		return 0;
	if (rows.n == rows.cap) {
		size_t cap = rows.cap ? rows.cap * 2 : 64;
		struct row *v = realloc(rows.v, cap * sizeof(*v));

		if (!v)
			return rows.oom = true;
		rows.v = v;
		rows.cap = cap;
	}
	r.path = strdup(path + rows.prefix);
	r.st = read_status(path, state);
	if (!r.path || !r.st) {
		free(r.path);
		json_decref(r.st);
		return rows.oom = true;
	}
	rows.v[rows.n++] = r;
	return 0;
}

static int by_path(const void *a, const void *b)
{
	return strcmp(((const struct row *)a)->path,
		      ((const struct row *)b)->path);
}

/* "1.5 GiB", "300 B". */
static void human(double v, const char *unit, char *out, size_t size)
{
	static const char *const prefix[] = {"", "Ki", "Mi", "Gi", "Ti"};
	size_t k = 0;

	while (v >= 1024 && k + 1 < sizeof(prefix) / sizeof(*prefix)) {
		v /= 1024;
		k++;
	}
	if (k == 0)
		snprintf(out, size, "%.0f %s", v, unit);
	else
		snprintf(out, size, "%.1f %s%s", v, prefix[k], unit);
}

static void eta(json_int_t s, char *out, size_t size)
{
	if (s < 60)
		snprintf(out, size, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(out, size, "%lldm%02llds", (long long)(s / 60),
			 (long long)(s % 60));
	else
		snprintf(out, size, "%lldh%02lldm", (long long)(s / 3600),
			 (long long)(s % 3600 / 60));
}

/* "[######--------------]  30.5%", blank for an empty file. */
static void bar(const json_t *percent, char *out, size_t size)
{
	char cells[BAR_WIDTH + 1];
	double p;
	int full;

	if (!json_is_number(percent)) {
		snprintf(out, size, "%*s", BAR_WIDTH + 9, "");
		return;
	}
	p = json_number_value(percent);
	full = (int)lround(p / 100 * BAR_WIDTH);
	full = full < 0 ? 0 : full > BAR_WIDTH ? BAR_WIDTH : full;
	memset(cells, '#', (size_t)full);
	memset(cells + full, '-', (size_t)(BAR_WIDTH - full));
	cells[BAR_WIDTH] = '\0';
	snprintf(out, size, "[%s] %5.1f%%", cells, p);
}

/* "processing: transcribing 40%", "completed", "-". */
static void transcription(const json_t *tr, char *out, size_t size)
{
	const char *status = json_string_value(json_object_get(tr, "status"));
	const char *stage = json_string_value(json_object_get(tr, "stage"));
	const json_t *pct = json_object_get(tr, "percent");

	if (!status)
		snprintf(out, size, "-");
	else if (strcmp(status, "processing") != 0 || !stage)
		snprintf(out, size, "%s", status);
	else if (json_is_integer(pct))
		snprintf(out, size, "%s: %s %lld%%", status, stage,
			 (long long)json_integer_value(pct));
	else
		snprintf(out, size, "%s: %s", status, stage);
}

static void print_row(const struct row *r, int width)
{
	const json_t *st = r->st;
	const json_t *tr = json_object_get(st, "transcription");
	const json_t *rate = json_object_get(st, "rate_bytes_per_s");
	const json_t *left = json_object_get(st, "eta_s");
	const char *state = json_string_value(json_object_get(st, "state"));
	const char *err = json_string_value(json_object_get(st, "error"));
	const char *tr_err = json_string_value(json_object_get(tr, "error"));
	const char *poll_err =
	    json_string_value(json_object_get(tr, "poll_error"));
	const char *path = shown(r->path);
	char size[32] = "-", speed[32] = "-", when[32] = "-", prog[64],
	     trs[160];
	size_t len = strlen(path);

	if (json_is_integer(json_object_get(st, "bytes_total")))
		human((double)json_integer_value(
			  json_object_get(st, "bytes_total")),
		      "B", size, sizeof(size));
	if (json_is_number(rate))
		human(json_number_value(rate), "B/s", speed, sizeof(speed));
	if (json_is_integer(left))
		eta(json_integer_value(left), when, sizeof(when));
	bar(json_object_get(st, "percent"), prog, sizeof(prog));
	transcription(tr, trs, sizeof(trs));
	if (len > (size_t)width) {
		path += len - (size_t)(width - 3);
		/* Not from inside a UTF-8 character. */
		while (((unsigned char)*path & 0xc0) == 0x80)
			path++;
		printf("...%-*s", width - 3, path);
	} else
		printf("%-*s", width, path);
	printf("  %10s  %-9s  %s  %12s  %6s  %s\n", size, state ? state : "-",
	       prog, speed, when, trs);
	if (err)
		printf("    error: %s\n", err);
	if (tr_err && (!err || strcmp(err, tr_err) != 0))
		printf("    transcription error: %s\n", tr_err);
	if (poll_err)
		printf("    last poll: %s\n", poll_err);
}

static void print_table(const char *mnt)
{
	char limit[32];
	int width = 4;

	/* The bandwidth limit (-o max_rate, tusfs limit), when there is one. */
	if (cli_attr(mnt, ATTR_PREFIX ATTR_MAX_RATE, limit, sizeof(limit)) >
		0 &&
	    strcmp(limit, "off") != 0) {
		char speed[32];

		human(strtod(limit, NULL), "B/s", speed, sizeof(speed));
		printf("bandwidth limit: %s\n", speed);
	}

	for (size_t i = 0; i < rows.n; i++) {
		size_t len = strlen(shown(rows.v[i].path));

		if (len > (size_t)width)
			width = len > PATH_WIDTH ? PATH_WIDTH : (int)len;
	}
	printf("%-*s  %10s  %-9s  %-*s  %12s  %6s  %s\n", width, "FILE", "SIZE",
	       "STATE", BAR_WIDTH + 9, "PROGRESS", "RATE", "ETA",
	       "TRANSCRIPTION");
	for (size_t i = 0; i < rows.n; i++)
		print_row(&rows.v[i], width);
}

static int print_json(void)
{
	json_t *all = json_array();
	char *text;

	for (size_t i = 0; all && i < rows.n; i++) {
		json_t *path = name_string(rows.v[i].path);

		if (!path || json_object_set_new(rows.v[i].st, "path", path) ||
		    json_array_append(all, rows.v[i].st)) {
			json_decref(all);
			all = NULL;
		}
	}
	text =
	    all ? json_dumps(all, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(all);
	if (!text)
		return -1;
	puts(text);
	free(text);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: tusfs status MOUNTPOINT [--json]\n");
}

int status_main(int argc, char *argv[])
{
	const char *mnt = NULL;
	bool json = false;
	int rc = CLI_DONE;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (!cli_mount_arg(argv[i], &mnt)) {
			usage();
			return CLI_USAGE;
		}
	}
	mnt = cli_mount_given("status", mnt, usage);
	if (!mnt)
		return CLI_USAGE;
	rows.prefix = cli_prefix(mnt);
	if (nftw(mnt, visit, 16, FTW_PHYS | FTW_MOUNT) != 0 || rows.oom) {
		fprintf(stderr, "tusfs status: cannot walk '%s': %s\n", mnt,
			rows.oom ? "out of memory" : strerror(errno));
		rc = CLI_USAGE;
	} else {
		if (rows.n > 0) /* rows.v is NULL on an empty mount */
			qsort(rows.v, rows.n, sizeof(*rows.v), by_path);
		if (!json)
			print_table(mnt);
		else if (print_json() < 0) {
			fprintf(stderr, "tusfs status: out of memory\n");
			rc = CLI_USAGE;
		}
	}
	for (size_t i = 0; i < rows.n; i++) {
		free(rows.v[i].path);
		json_decref(rows.v[i].st);
	}
	free(rows.v);
	return rc;
}
