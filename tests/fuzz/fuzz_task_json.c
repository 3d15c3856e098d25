/*
 * libFuzzer target for the task client's parsers and everything they
 * feed: each input is parsed as a GET /task/{id} answer and, when valid,
 * rendered in all four formats; it is also parsed as a progress answer and
 * used, bytes as they are, as the strings of a status document. Besides
 * the sanitizers' reports it checks the contracts the callers rely on:
 * a failed parse leaves the result empty, every rendering succeeds, has
 * its NUL at out[len] and ends in '\n', and TXT has one line per segment.
 *
 * Run with scripts/fuzz.sh.
 */
#include "tusfs_setup.h"
#include "fuzz.h"
#include "core/render.h"
#include "core/task.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Larger inputs only slow the fuzzer down; nothing depends on size. */
#define FUZZ_MAX_INPUT (256 * 1024)

static void render_all(const struct transcript *t)
{
	for (int f = 0; f < RENDER_FORMATS; f++) {
		char *out = NULL;
		size_t len = 0, lines = 0;

		check(render_transcript(t, f, &out, &len) == 0);
		check(out && out[len] == '\0');
		check(len == 0 ? f == RENDER_TXT || f == RENDER_SRT
			       : out[len - 1] == '\n');
		if (f == RENDER_TXT) {
			for (size_t i = 0; i < len; i++)
				lines += out[i] == '\n';
			check(lines == t->count && strlen(out) == len);
		}
		free(out);
	}
}

static void fuzz_status(const char *s, const struct task_progress *p,
			const char *why)
{
	struct status_view v = {
	    .state = s,
	    .confirmed = strlen(s),
	    .total = strlen(why),
	    .rate = (double)strlen(s) - 10,
	    .eta = (double)strlen(why) / 7,
	    .url = why,
	    .task_id = s,
	    .error = s,
	    .task_status = strlen(s) % 2 ? "processing" : NULL,
	    .task_stage = p->stage,
	    .task_percent = p->percent,
	    .task_error = why,
	    .poll_error = s,
	};
	char *out = NULL;
	size_t len = 0;

	check(render_status(&v, &out, &len) == 0);
	check(out && out[len] == '\0' && len && out[len - 1] == '\n');
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct task_result r;
	struct task_progress p;
	char why[256], ts[RENDER_TIME_MAX];
	char *s;
	double d;

	if (size > FUZZ_MAX_INPUT)
		return 0;

	if (task_parse(buf, size, &r, why, sizeof(why)) == 0) {
		check(r.transcript.seg == r.seg &&
		      r.transcript.count == r.count);
		render_all(&r.transcript);
		task_result_clear(&r);
	} else {
		check(!r.root && !r.seg && !r.count && !r.error);
		check(memchr(why, '\0', sizeof(why)) != NULL);
	}

	if (task_parse_progress(buf, size, &p, why, sizeof(why)) == 0)
		check(p.percent >= -1 && p.percent <= 100);
	else
		check(!p.stage[0] && p.percent == -1);
	check(memchr(p.stage, '\0', sizeof(p.stage)) != NULL);

	/* The raw bytes (up to a NUL) as status strings: any byte goes. */
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	fuzz_status(s, &p, why);
	free(s);

	if (size >= sizeof(d)) {
		memcpy(&d, data, sizeof(d));
		render_time(d, ',', ts);
		check(strlen(ts) >= 12 && strlen(ts) < RENDER_TIME_MAX);
	}
	return 0;
}
