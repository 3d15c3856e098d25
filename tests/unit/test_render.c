/*
 * Renderers against golden files. Each golden case is an answer of
 * GET /task/{id} (golden/<case>.in.json) parsed by task_parse and rendered
 * in the four formats, compared byte for byte with golden/<case>.<suffix>;
 * the NAME.status documents compare with golden/status_<case>.json. The
 * golden files are written by hand from BACKEND.md section 3, never copied
 * from the renderer. On a mismatch the test prints where the first
 * difference is and leaves the output as <file>.actual in its working
 * directory for a diff.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "core/render.h"
#include "core/task.h"

#include <errno.h>
#include <math.h>

#ifndef TUSFS_GOLDEN_DIR
#error "TUSFS_GOLDEN_DIR must name tests/unit/golden"
#endif

/* golden/<name> into a malloc'd, NUL-terminated buffer; NULL if absent. */
static char *golden_read(const char *name, size_t *len)
{
	char path[512];
	char *buf = NULL;
	long n = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", TUSFS_GOLDEN_DIR, name);
	f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "  cannot open '%s'\n", path);
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0)
		n = ftell(f);
	if (n >= 0 && fseek(f, 0, SEEK_SET) == 0)
		buf = malloc((size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
		buf[n] = '\0';
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

/* Prints line number `line` of s (1-based), escaped, as a diff hint. */
static void print_line(const char *label, const char *s, size_t len,
		       size_t line)
{
	size_t i = 0, at = 1;

	while (i < len && at < line)
		if (s[i++] == '\n')
			at++;
	fprintf(stderr, "    %s: \"", label);
	for (size_t k = 0; i < len && s[i] != '\n' && k < 100; i++, k++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
	fprintf(stderr, "\"%s\n", i < len ? "\\n" : " (end of file)");
}

/*
 * 0 if got (len bytes) equals golden/<name>; otherwise prints the first
 * difference and writes got to <name>.actual.
 */
static int golden_check(const char *name, const char *got, size_t len)
{
	size_t want_len = 0, i = 0, line = 1, col = 1;
	char *want = golden_read(name, &want_len);
	char actual[256];
	FILE *f;

	if (!want)
		return -1;
	if (want_len == len && memcmp(want, got, len) == 0) {
		free(want);
		return 0;
	}
	while (i < len && i < want_len && got[i] == want[i]) {
		if (got[i++] == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	fprintf(stderr,
		"  golden/%s: %zu bytes expected, %zu rendered; first "
		"difference at byte %zu (line %zu, column %zu)\n",
		name, want_len, len, i, line, col);
	print_line("expected", want, want_len, line);
	print_line("rendered", got, len, line);
	snprintf(actual, sizeof(actual), "%s.actual", name);
	f = fopen(actual, "wb");
	if (f) {
		fwrite(got, 1, len, f);
		fclose(f);
		fprintf(stderr, "    diff -u %s/%s %s\n", TUSFS_GOLDEN_DIR,
			name, actual);
	}
	free(want);
	return -1;
}

/* Parses golden/<name>.in.json and checks all four renderings. */
static int golden_case(const char *name)
{
	char file[128], why[256];
	struct task_result r;
	size_t len;
	char *in = NULL;
	int bad = 0;

	snprintf(file, sizeof(file), "%s.in.json", name);
	in = golden_read(file, &len);
	if (!in)
		return -1;
	if (task_parse(in, len, &r, why, sizeof(why)) < 0) {
		fprintf(stderr, "  %s: %s\n", file, why);
		free(in);
		return -1;
	}
	for (int f = 0; f < RENDER_FORMATS; f++) {
		char *out;

		if (render_transcript(&r.transcript, f, &out, &len) < 0) {
			bad = 1;
			continue;
		}
		if (strlen(out) != len) {
			fprintf(stderr, "  %s: length is not the NUL's place\n",
				render_suffix(f));
			bad = 1;
		}
		snprintf(file, sizeof(file), "%s.%s", name, render_suffix(f));
		if (golden_check(file, out, len) < 0)
			bad = 1;
		free(out);
	}
	task_result_clear(&r);
	free(in);
	return bad ? -1 : 0;
}

TEST(suffixes)
{
	ASSERT_STREQ(render_suffix(RENDER_TXT), "txt");
	ASSERT_STREQ(render_suffix(RENDER_SRT), "srt");
	ASSERT_STREQ(render_suffix(RENDER_VTT), "vtt");
	ASSERT_STREQ(render_suffix(RENDER_JSON), "json");
}

/* Mixed speakers (absent, null, empty), metadata kept, extra fields. */
TEST(golden_basic)
{
	ASSERT_EQ(golden_case("basic"), 0);
}

/* No segments: empty TXT and SRT, a bare header for VTT. */
TEST(golden_empty)
{
	ASSERT_EQ(golden_case("empty"), 0);
}

/* Accents, CJK, emoji (raw and \u-escaped), metadata absent. */
TEST(golden_unicode)
{
	ASSERT_EQ(golden_case("unicode"), 0);
}

/* Rounding to the millisecond, hours past 24 and 99, the largest time. */
TEST(golden_times)
{
	ASSERT_EQ(golden_case("times"), 0);
}

/* Trimming, inner line breaks, blank speakers, an all-space text. */
TEST(golden_text)
{
	ASSERT_EQ(golden_case("text"), 0);
}

/* '&', '<', '>' escaped in VTT only. */
TEST(golden_escape)
{
	ASSERT_EQ(golden_case("escape"), 0);
}

TEST(time_format)
{
	static const struct {
		double s;
		char sep;
		const char *want;
	} cases[] = {
	    {0, ',', "00:00:00,000"},
	    {1.5, '.', "00:00:01.500"},
	    {0.0004, ',', "00:00:00,000"},
	    {0.0005, ',', "00:00:00,001"},
	    {0.0015, ',', "00:00:00,002"},
	    {59.9994, ',', "00:00:59,999"},
	    {59.9996, ',', "00:01:00,000"},
	    {59.9996, '.', "00:01:00.000"},
	    {3599.9996, ',', "01:00:00,000"},
	    {86399.9999, ',', "24:00:00,000"},
	    {90000.5, ',', "25:00:00,500"},
	    {359999.999, ',', "99:59:59,999"},
	    {360000, ',', "100:00:00,000"},
	    {1e9, ',', "277777:46:40,000"},
	    /* Past 1e9 s the time is clamped, so nothing overflows. */
	    {1e300, ',', "277777:46:40,000"},
	    {HUGE_VAL, ',', "00:00:00,000"},
	    {-HUGE_VAL, ',', "00:00:00,000"},
	    {NAN, ',', "00:00:00,000"},
	    {-1, ',', "00:00:00,000"},
	    {-0.0, ',', "00:00:00,000"},
	    {-1e300, ',', "00:00:00,000"},
	};
	char buf[RENDER_TIME_MAX];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(buf, 'x', sizeof(buf));
		render_time(cases[i].s, cases[i].sep, buf);
		if (strcmp(buf, cases[i].want) != 0)
			FAIL_AT("render_time(%.17g) is \"%s\", expected \"%s\"",
				cases[i].s, buf, cases[i].want);
	}
}

/* With t->segments NULL, JSON is built from seg[] alone. */
TEST(json_from_segments)
{
	static const struct segment seg[] = {
	    {1.5, 2, "one", "SPEAKER_00"},
	    {2, 3.25, "two", NULL},
	};
	static const char want[] = "{\n"
				   "  \"metadata\": {},\n"
				   "  \"segments\": [\n"
				   "    {\n"
				   "      \"start\": 1.5,\n"
				   "      \"end\": 2.0,\n"
				   "      \"text\": \"one\",\n"
				   "      \"speaker\": \"SPEAKER_00\"\n"
				   "    },\n"
				   "    {\n"
				   "      \"start\": 2.0,\n"
				   "      \"end\": 3.25,\n"
				   "      \"text\": \"two\"\n"
				   "    }\n"
				   "  ]\n"
				   "}\n";
	struct transcript t = {seg, 2, NULL, NULL};
	json_t *wrong = json_array();
	char *out;
	size_t len;

	ASSERT(wrong);
	ASSERT_EQ(render_transcript(&t, RENDER_JSON, &out, &len), 0);
	ASSERT_EQ(len, strlen(want));
	ASSERT_STREQ(out, want);
	free(out);

	/* A segments array that does not match seg[] is not trusted. */
	t.segments = wrong;
	ASSERT_EQ(render_transcript(&t, RENDER_JSON, &out, &len), 0);
	json_decref(wrong);
	ASSERT_STREQ(out, want);
	free(out);
}

/* Bytes that are not UTF-8 cannot make a JSON document fail. */
TEST(json_invalid_utf8)
{
	static const struct segment seg[] = {
	    {0, 1, "caf\xc3 \xff\xfe ok \xed\xa0\x80 \xf0\x9f\x98\x80", NULL},
	};
	struct transcript t = {seg, 1, NULL, NULL};
	struct status_view v = {.state = "failed",
				.error = "cannot open 'a\xff.wav'",
				.rate = -1,
				.eta = -1};
	char *out;
	size_t len;

	ASSERT_EQ(render_transcript(&t, RENDER_JSON, &out, &len), 0);
	ASSERT(strstr(out, "\"text\": \"caf\xef\xbf\xbd \xef\xbf\xbd"
			   "\xef\xbf\xbd ok \xef\xbf\xbd\xef\xbf\xbd"
			   "\xef\xbf\xbd \xf0\x9f\x98\x80\""));
	free(out);
	ASSERT_EQ(render_status(&v, &out, &len), 0);
	ASSERT(strstr(out, "\"error\": \"cannot open 'a\xef\xbf\xbd.wav'\""));
	free(out);
}

static const char task_id[] = "0b6f8a52-8c1e-4d7a-9a3c-2f1e5d4c3b2a";
static const char url[] = "http://127.0.0.1:1080/files/3f2a";

static int status_case(const char *name, const struct status_view *v)
{
	char file[128];
	char *out;
	size_t len;
	int rc;

	if (render_status(v, &out, &len) < 0)
		return -1;
	snprintf(file, sizeof(file), "status_%s.json", name);
	rc = golden_check(file, out, len);
	free(out);
	return rc;
}

TEST(status_uploading)
{
	struct status_view v = {
	    .state = "uploading",
	    .confirmed = 45875200,
	    .total = 104857600, /* 43.75% floors to 43.7 */
	    .rate = 1048576.4,
	    .eta = 56.2, /* rounds up */
	    .url = url,
	    .task_id = task_id,
	};

	ASSERT_EQ(status_case("uploading", &v), 0);
}

TEST(status_completed)
{
	struct status_view v = {
	    .state = "uploaded",
	    .confirmed = 1000,
	    .total = 1000,
	    .rate = -1,
	    .eta = -1,
	    .url = url,
	    .task_id = task_id,
	    .task_status = "completed",
	    .task_stage = "complete",
	    .task_percent = 100,
	};

	ASSERT_EQ(status_case("completed", &v), 0);
}

TEST(status_failed)
{
	struct status_view v = {
	    .state = "failed",
	    .total = 5000000,
	    .rate = -1,
	    .eta = -1,
	    .task_id = task_id,
	    .error = "server refused the upload: HTTP 413 \"Payload Too "
		     "Large\"",
	};

	ASSERT_EQ(status_case("failed", &v), 0);
}

TEST(status_task_failed)
{
	struct status_view v = {
	    .state = "uploaded",
	    .confirmed = 2048,
	    .total = 2048,
	    .rate = -1,
	    .eta = -1,
	    .url = url,
	    .task_id = task_id,
	    .task_status = "failed",
	    .task_percent = -1,
	    .task_error = "CUDA out of memory",
	};

	ASSERT_EQ(status_case("task_failed", &v), 0);
}

TEST(status_polling)
{
	struct status_view v = {
	    .state = "uploaded",
	    .confirmed = 2048,
	    .total = 2048,
	    .rate = -1,
	    .eta = -1,
	    .url = url,
	    .task_id = task_id,
	    .task_status = "processing",
	    .task_stage = "transcribing",
	    .task_percent = 40,
	    .poll_error = "HTTP 502 from the task service",
	};

	ASSERT_EQ(status_case("polling", &v), 0);
}

/* render_status(v) contains want. */
static int status_has(const struct status_view *v, const char *want)
{
	char *out;
	size_t len;
	int found;

	if (render_status(v, &out, &len) < 0)
		return 0;
	found = strstr(out, want) != NULL && len == strlen(out) &&
		out[len - 1] == '\n';
	if (!found)
		fprintf(stderr, "  no '%s' in:\n%s", want, out);
	free(out);
	return found;
}

TEST(status_numbers)
{
	struct status_view v = {.state = "queued", .rate = -1, .eta = -1};

	ASSERT(status_has(&v, "\"percent\": null,"));
	v.total = 3;
	v.confirmed = 1;
	ASSERT(status_has(&v, "\"percent\": 33.3,"));
	v.confirmed = 2;
	ASSERT(status_has(&v, "\"percent\": 66.6,")); /* floored */
	v.total = 1000;
	v.confirmed = 999;
	ASSERT(status_has(&v, "\"percent\": 99.9,"));
	v.total = UINT64_MAX;
	v.confirmed = UINT64_MAX / 2;
	ASSERT(status_has(&v, "\"percent\": 49.9,"));
	v.confirmed = UINT64_MAX;
	ASSERT(status_has(&v, "\"percent\": 100.0,"));
	ASSERT(status_has(&v, "\"bytes_total\": 9223372036854775807,"));

	v.rate = 0;
	v.eta = 0.2;
	ASSERT(status_has(&v, "\"rate_bytes_per_s\": 0,"));
	ASSERT(status_has(&v, "\"eta_s\": 1,"));
	v.rate = NAN;
	v.eta = HUGE_VAL;
	ASSERT(status_has(&v, "\"rate_bytes_per_s\": null,"));
	ASSERT(status_has(&v, "\"eta_s\": null,"));
	v.rate = 1e30;
	ASSERT(status_has(&v, "\"rate_bytes_per_s\": 1000000000000000000,"));

	v.task_status = "processing";
	v.task_percent = -1;
	ASSERT(status_has(&v, "\"stage\": null,\n    \"percent\": null,"));
}

/*
 * jansson's allocations fail one after another (the n-th for n = 1, 2,
 * ...): every call must then return -ENOMEM with nothing allocated, and
 * leak nothing (ASan checks that at exit).
 */
static long fail_countdown;

static void *failing_malloc(size_t n)
{
	if (fail_countdown > 0 && --fail_countdown == 0)
		return NULL;
	return malloc(n);
}

TEST(json_out_of_memory)
{
	struct status_view v = {.state = "uploaded",
				.total = 10,
				.url = url,
				.task_status = "completed",
				.task_stage = "complete",
				.task_error = "x\xff"};
	struct task_result r;
	char why[256];
	size_t len, inlen;
	char *in = golden_read("basic.in.json", &inlen);
	char *out;
	int rc = -1, done = 0;

	ASSERT(in);
	ASSERT_EQ(task_parse(in, inlen, &r, why, sizeof(why)), 0);
	json_set_alloc_funcs(failing_malloc, free);
	for (long n = 1; n < 10000 && done != 3; n++) {
		done = 0;
		fail_countdown = n;
		rc = render_transcript(&r.transcript, RENDER_JSON, &out, &len);
		if (rc == 0) {
			free(out);
			done |= 1;
		} else if (rc != -ENOMEM || out) {
			break;
		}
		fail_countdown = n;
		rc = render_status(&v, &out, &len);
		if (rc == 0) {
			free(out);
			done |= 2;
		} else if (rc != -ENOMEM || out) {
			break;
		}
	}
	fail_countdown = 0;
	json_set_alloc_funcs(malloc, free);
	task_result_clear(&r);
	free(in);
	ASSERT_EQ(done, 3);
}

TEST_MAIN
