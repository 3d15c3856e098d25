/*
 * The task answer parsers: good answers of each status, then one bad input
 * per rule (not JSON, wrong root, each field's wrong types, each segment
 * field missing or out of range), each with its exact reason, and the
 * progress answer likewise. A failed parse must leave the result empty;
 * ASan (the Sanitize build) checks that nothing leaks on any path.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "core/task.h"

#include <errno.h>

/* task_parse of a string literal. */
#define PARSE(s, r, why) task_parse(s, sizeof(s) - 1, r, why, sizeof(why))

static int is_empty(const struct task_result *r)
{
	return !r->error && !r->seg && !r->count && !r->root &&
	       !r->transcript.seg && !r->transcript.count &&
	       !r->transcript.metadata && !r->transcript.segments;
}

TEST(processing)
{
	static const char in[] =
	    "{\"status\": \"processing\", \"result\": null,"
	    " \"metadata\": {\"task_type\": \"full_process\","
	    " \"file_name\": \"recording.wav\", \"duration\": 12.5},"
	    " \"error\": null}";
	struct task_result r;
	char why[256];

	ASSERT_EQ(PARSE(in, &r, why), 0);
	ASSERT_EQ(r.status, TASK_PROCESSING);
	ASSERT(!r.error && !r.seg && r.count == 0);
	ASSERT(r.transcript.metadata == json_object_get(r.root, "metadata"));
	ASSERT(!r.transcript.segments);
	task_result_clear(&r);
	ASSERT(is_empty(&r));
	task_result_clear(&r); /* twice is harmless */
}

/* Only a wrong type of "result" matters before completion. */
TEST(processing_ignores_partial_result)
{
	static const char in[] = "{\"status\": \"processing\", \"result\":"
				 " {\"segments\": 5}, \"extra\": [1]}";
	struct task_result r;
	char why[256];

	ASSERT_EQ(PARSE(in, &r, why), 0);
	ASSERT_EQ(r.status, TASK_PROCESSING);
	ASSERT(!r.seg && r.count == 0 && !r.transcript.metadata);
	task_result_clear(&r);
}

TEST(completed_with_speakers)
{
	static const char in[] =
	    "{\"status\": \"completed\", \"result\": {\"segments\": ["
	    "{\"start\": 1.5, \"end\": 3.2, \"text\": \" Hello world\","
	    " \"speaker\": \"SPEAKER_00\", \"words\": [{\"word\": \"Hello\","
	    " \"start\": 1.5, \"end\": 2, \"score\": 0.9}]},"
	    "{\"start\": 3, \"end\": 4, \"text\": \"Hi\","
	    " \"speaker\": \"SPEAKER_01\"}],"
	    " \"language\": \"en\"},"
	    " \"metadata\": {\"language\": \"en\"}, \"error\": null}";
	struct task_result r;
	char why[256];

	ASSERT_EQ(PARSE(in, &r, why), 0);
	ASSERT_EQ(r.status, TASK_COMPLETED);
	ASSERT(!r.error);
	ASSERT_EQ(r.count, 2);
	ASSERT(r.seg[0].start == 1.5 && r.seg[0].end == 3.2);
	ASSERT_STREQ(r.seg[0].text, "Hello world");
	ASSERT_STREQ(r.seg[0].speaker, "SPEAKER_00");
	ASSERT(r.seg[1].start == 3 && r.seg[1].end == 4);
	ASSERT_STREQ(r.seg[1].text, "Hi");
	ASSERT_STREQ(r.seg[1].speaker, "SPEAKER_01");
	ASSERT(r.transcript.seg == r.seg && r.transcript.count == 2);
	ASSERT(r.transcript.metadata == json_object_get(r.root, "metadata"));
	ASSERT(r.transcript.segments ==
	       json_object_get(json_object_get(r.root, "result"), "segments"));
	task_result_clear(&r);
	ASSERT(is_empty(&r));
}

TEST(completed_without_speakers)
{
	static const char in[] =
	    "{\"status\": \"completed\", \"result\": {\"segments\": ["
	    "{\"start\": 0, \"end\": 1, \"text\": \" one\"},"
	    "{\"start\": 1, \"end\": 2, \"text\": \"two \", \"speaker\": null},"
	    "{\"start\": 2, \"end\": 3, \"text\": \"three\", \"speaker\": "
	    "\"\"},"
	    "{\"start\": 3, \"end\": 4, \"text\": \"four\","
	    " \"speaker\": \" \\t\\n\"}]}}";
	struct task_result r;
	char why[256];

	ASSERT_EQ(PARSE(in, &r, why), 0);
	ASSERT_EQ(r.count, 4);
	ASSERT(!r.transcript.metadata);
	ASSERT_STREQ(r.seg[0].text, "one");
	ASSERT_STREQ(r.seg[1].text, "two");
	ASSERT_STREQ(r.seg[2].text, "three");
	ASSERT_STREQ(r.seg[3].text, "four");
	for (int i = 0; i < 4; i++)
		ASSERT(r.seg[i].speaker == NULL);
	task_result_clear(&r);
}

TEST(completed_empty)
{
	static const char in[] =
	    "{\"status\": \"completed\", \"result\": {\"segments\": []}}";
	struct task_result r;
	char why[256];

	ASSERT_EQ(PARSE(in, &r, why), 0);
	ASSERT_EQ(r.status, TASK_COMPLETED);
	ASSERT(!r.seg && r.count == 0);
	ASSERT(json_is_array(r.transcript.segments));
	task_result_clear(&r);
}

TEST(text_normalized)
{
	static const char in[] =
	    "{\"status\": \"completed\", \"result\": {\"segments\": ["
	    "{\"start\": 0, \"end\": 1, \"text\": \" \\r\\n a\\r\\nb\\n\\nc"
	    "\\rd \\u000b\\f\\t\", \"speaker\": \"\\nSPEAKER\\r\\n00 \"},"
	    "{\"start\": 0, \"end\": 1, \"text\": \"\\n\\n\"},"
	    "{\"start\": 0, \"end\": 1, \"text\": \"\"},"
	    "{\"start\": 0, \"end\": 1, \"text\": \"x\\ty  z\"}]}}";
	struct task_result r;
	char why[256];

	ASSERT_EQ(PARSE(in, &r, why), 0);
	ASSERT_STREQ(r.seg[0].text, "a b c d");
	ASSERT_STREQ(r.seg[0].speaker, "SPEAKER 00");
	ASSERT_STREQ(r.seg[1].text, "");
	ASSERT_STREQ(r.seg[2].text, "");
	ASSERT_STREQ(r.seg[3].text, "x\ty  z");
	/* The tree holds the same strings, for the JSON sidecar. */
	ASSERT(r.seg[0].text ==
	       json_string_value(json_object_get(
		   json_array_get(r.transcript.segments, 0), "text")));
	task_result_clear(&r);
}

TEST(failed_with_error)
{
	static const char in[] = "{\"status\": \"failed\", \"result\": null,"
				 " \"error\": \"CUDA out of memory\"}";
	struct task_result r;
	char why[256];

	ASSERT_EQ(PARSE(in, &r, why), 0);
	ASSERT_EQ(r.status, TASK_FAILED);
	ASSERT_STREQ(r.error, "CUDA out of memory");
	ASSERT(!r.seg && r.count == 0);
	task_result_clear(&r);
	ASSERT(is_empty(&r));

	ASSERT_EQ(PARSE("{\"status\": \"failed\"}", &r, why), 0);
	ASSERT(!r.error);
	task_result_clear(&r);
}

/* Each bad answer and its reason. */
static const struct {
	const char *in;
	const char *why;
} bad_answers[] = {
    /* Not JSON, or not an object. */
    {"", "not JSON: unexpected token near end of file (line 1)"},
    {"<html><body>502 Bad Gateway</body></html>",
     "not JSON: invalid token near '<' (line 1)"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": [{\"start\": 1",
     "not JSON: '}' expected near end of file (line 1)"},
    {"{\n\"status\":\n}", "not JSON: unexpected token near '}' (line 3)"},
    {"{\"status\": \"processing\"} x",
     "not JSON: end of file expected near 'x' (line 1)"},
    {"{\"status\": \"processing\", \"status\": \"completed\"}",
     "not JSON: duplicate object key near '\"status\"' (line 1)"},
    {"{\"status\": \"failed\", \"error\": \"\xff\"}",
     "not JSON: unable to decode byte 0xff near '\"' (line 1)"},
    {"{\"status\": \"failed\", \"error\": \"\\u0000\"}",
     "not JSON: \\u0000 is not allowed without JSON_ALLOW_NUL near "
     "'\"\\u0000\"' (line 1)"},
    {"[]", "not a JSON object"},
    {"null", "not a JSON object"},
    {"\"completed\"", "not a JSON object"},
    {"5", "not a JSON object"},
    /* "status". */
    {"{}", "'status' is missing"},
    {"{\"status\": 5}", "'status' is 5, expected a string"},
    {"{\"status\": null}", "'status' is null, expected a string"},
    {"{\"status\": [\"completed\"]}",
     "'status' is an array, expected a string"},
    {"{\"status\": \"weird\"}", "unknown status 'weird'"},
    {"{\"status\": \"Completed\"}", "unknown status 'Completed'"},
    {"{\"status\": \"a\\tb\\nc\"}", "unknown status 'a?b?c'"},
    {"{\"status\": \"0123456789012345678901234567890123456789XYZ\"}",
     "unknown status '0123456789012345678901234567890123456789'"},
    /* "error", "metadata", "result". */
    {"{\"status\": \"failed\", \"error\": 5}",
     "'error' is 5, expected a string or null"},
    {"{\"status\": \"failed\", \"error\": {}}",
     "'error' is an object, expected a string or null"},
    {"{\"status\": \"processing\", \"metadata\": \"x\"}",
     "'metadata' is a string, expected an object or null"},
    {"{\"status\": \"processing\", \"metadata\": []}",
     "'metadata' is an array, expected an object or null"},
    {"{\"status\": \"processing\", \"result\": true}",
     "'result' is true, expected an object or null"},
    {"{\"status\": \"failed\", \"result\": 1.5}",
     "'result' is 1.5, expected an object or null"},
    /* "result.segments". */
    {"{\"status\": \"completed\"}",
     "completed, but 'result.segments' is missing"},
    {"{\"status\": \"completed\", \"result\": null}",
     "completed, but 'result.segments' is missing"},
    {"{\"status\": \"completed\", \"result\": {}}",
     "completed, but 'result.segments' is missing"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": {}}}",
     "'result.segments' is an object, expected an array"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": null}}",
     "'result.segments' is null, expected an array"},
    /* Segments. */
    {"{\"status\": \"completed\", \"result\": {\"segments\": [5]}}",
     "segment 1 is 5, expected an object"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1, \"text\": \"a\"}, \"x\"]}}",
     "segment 2 is a string, expected an object"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"end\": 1, \"text\": \"a\"}]}}",
     "segment 1: 'start' is missing"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1, \"text\": \"a\"},"
     "{\"start\": 0, \"end\": 1, \"text\": \"b\"},"
     "{\"start\": 0, \"text\": \"c\"}]}}",
     "segment 3: 'end' is missing"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": \"1.5\", \"end\": 2, \"text\": \"a\"}]}}",
     "segment 1: 'start' is a string, expected a number"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": null, \"end\": 2, \"text\": \"a\"}]}}",
     "segment 1: 'start' is null, expected a number"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": false, \"text\": \"a\"}]}}",
     "segment 1: 'end' is false, expected a number"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": -1, \"end\": 2, \"text\": \"a\"}]}}",
     "segment 1: 'start' is -1, out of range [0, 1000000000]"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": -0.5, \"text\": \"a\"}]}}",
     "segment 1: 'end' is -0.5, out of range [0, 1000000000]"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1e10, \"text\": \"a\"}]}}",
     "segment 1: 'end' is 10000000000, out of range [0, 1000000000]"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1000000001, \"text\": \"a\"}]}}",
     "segment 1: 'end' is 1000000001, out of range [0, 1000000000]"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1e308, \"text\": \"a\"}]}}",
     "segment 1: 'end' is 1e+308, out of range [0, 1000000000]"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1e400, \"text\": \"a\"}]}}",
     "not JSON: real number overflow near '1e400' (line 1)"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 99999999999999999999, \"text\": \"a\"}]}}",
     "not JSON: too big integer near '99999999999999999999' (line 1)"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": NaN, \"end\": 1, \"text\": \"a\"}]}}",
     "not JSON: invalid token near 'NaN' (line 1)"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": Infinity, \"text\": \"a\"}]}}",
     "not JSON: invalid token near 'Infinity' (line 1)"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1}]}}",
     "segment 1: 'text' is missing"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1, \"text\": \"a\"},"
     "{\"start\": 0, \"end\": 1, \"text\": 5}]}}",
     "segment 2: 'text' is 5, expected a string"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1, \"text\": null}]}}",
     "segment 1: 'text' is null, expected a string"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1, \"text\": \"a\", \"speaker\": 0}]}}",
     "segment 1: 'speaker' is 0, expected a string or null"},
    {"{\"status\": \"completed\", \"result\": {\"segments\": ["
     "{\"start\": 0, \"end\": 1, \"text\": \"a\", \"speaker\": []}]}}",
     "segment 1: 'speaker' is an array, expected a string or null"},
    /* A later failure after "error" and the segments were allocated. */
    {"{\"status\": \"completed\", \"error\": \"x\", \"result\": "
     "{\"segments\": [{\"start\": 0, \"end\": 1, \"text\": \" a \"},"
     "{\"start\": 0, \"end\": 1, \"text\": \"b\", \"speaker\": 1}]}}",
     "segment 2: 'speaker' is 1, expected a string or null"},
};

TEST(bad_answers)
{
	for (size_t i = 0; i < sizeof(bad_answers) / sizeof(bad_answers[0]);
	     i++) {
		struct task_result r;
		char why[256];
		const char *in = bad_answers[i].in;
		int rc = task_parse(in, strlen(in), &r, why, sizeof(why));

		if (rc != -EBADMSG || !is_empty(&r) ||
		    strcmp(why, bad_answers[i].why) != 0)
			FAIL_AT("%s\n    returned %d, why \"%s\"\n    "
				"expected %d, why \"%s\"",
				in, rc, why, -EBADMSG, bad_answers[i].why);
		task_result_clear(&r);
	}
}

TEST(bad_answer_edges)
{
	struct task_result r;
	char why[256], tiny[8];
	static const char prefix[] =
	    "{\"status\": \"processing\", \"metadata\": {\"a\": ";
	char *deep, *huge;
	size_t n = 100000;

	ASSERT_EQ(task_parse(NULL, 0, &r, why, sizeof(why)), -EBADMSG);
	ASSERT_STREQ(why, "not JSON: unexpected token near end of file "
			  "(line 1)");
	ASSERT(is_empty(&r));

	/* A short why buffer is truncated; none at all is allowed. */
	ASSERT_EQ(PARSE("{}", &r, tiny), -EBADMSG);
	ASSERT_STREQ(tiny, "'status");
	ASSERT_EQ(task_parse("{}", 2, &r, NULL, 0), -EBADMSG);

	/* Nesting far deeper than jansson's limit is an error, not a crash. */
	deep = malloc(sizeof(prefix) + n);
	ASSERT(deep);
	memcpy(deep, prefix, sizeof(prefix) - 1);
	memset(deep + sizeof(prefix) - 1, '[', n);
	ASSERT_EQ(
	    task_parse(deep, sizeof(prefix) - 1 + n, &r, why, sizeof(why)),
	    -EBADMSG);
	free(deep);
	ASSERT_STREQ(why, "not JSON: maximum parsing depth reached near '[' "
			  "(line 1)");

	/* Over TASK_MAX_BODY is refused before parsing. */
	huge = malloc((size_t)TASK_MAX_BODY + 1);
	ASSERT(huge);
	memset(huge, ' ', (size_t)TASK_MAX_BODY + 1);
	ASSERT_EQ(
	    task_parse(huge, (size_t)TASK_MAX_BODY + 1, &r, why, sizeof(why)),
	    -EBADMSG);
	free(huge);
	ASSERT_STREQ(why,
		     "answer is 268435457 bytes, over the 268435456 limit");
	ASSERT(is_empty(&r));
}

/* About 2 MB of segments parse, and render in every format. */
TEST(big_answer)
{
	size_t cap = 3 * 1024 * 1024, len = 0, n = 0;
	char *buf = malloc(cap);
	struct task_result r;
	char why[256];

	ASSERT(buf);
	len += (size_t)snprintf(buf, cap,
				"{\"status\": \"completed\", \"metadata\": "
				"{\"language\": \"en\"}, \"result\": "
				"{\"segments\": [");
	while (len < 2 * 1024 * 1024) {
		len += (size_t)snprintf(
		    buf + len, cap - len,
		    "%s{\"start\": %zu.25, \"end\": %zu.75, \"text\": "
		    "\" segment %zu, caf\\u00e9 \\ud83d\\ude00 & <b>\", "
		    "\"speaker\": \"SPEAKER_%02zu\"}",
		    n ? ", " : "", n, n, n, n % 7);
		n++;
	}
	len += (size_t)snprintf(buf + len, cap - len, "]}}");
	ASSERT_EQ(task_parse(buf, len, &r, why, sizeof(why)), 0);
	free(buf);
	ASSERT_EQ(r.count, n);
	ASSERT(r.seg[n - 1].start == (double)(n - 1) + 0.25);
	snprintf(why, sizeof(why), "SPEAKER_%02zu", (n - 1) % 7);
	ASSERT_STREQ(r.seg[n - 1].speaker, why);
	for (int f = 0; f < RENDER_FORMATS; f++) {
		char *out;
		size_t outlen;

		ASSERT_EQ(render_transcript(&r.transcript, f, &out, &outlen),
			  0);
		ASSERT(outlen > n * 20 && strlen(out) == outlen &&
		       out[outlen - 1] == '\n');
		free(out);
	}
	task_result_clear(&r);
}

/*
 * Allocation failures after the body is loaded: the normalized strings
 * (jansson's allocator, failed by count) must give -ENOMEM, an empty result
 * and no leak. Failures inside json_loadb itself are not injected: jansson
 * 2.14's lexer ignores a failed buffer growth and may then assert or read
 * past its buffer, which no caller can defend against.
 */
static long allocs, fail_at;

static void *counting_malloc(size_t n)
{
	if (++allocs == fail_at)
		return NULL;
	return malloc(n);
}

TEST(parse_out_of_memory)
{
	static const char in[] =
	    "{\"status\": \"completed\", \"error\": \"e\", \"metadata\": "
	    "{\"a\": [1, 2.5, \"x\"]}, \"result\": {\"segments\": ["
	    "{\"start\": 0, \"end\": 1, \"text\": \" a\\nb \","
	    " \"speaker\": \" S \"},"
	    "{\"start\": 1, \"end\": 2, \"text\": \"c \"}]}}";
	struct task_result r;
	char why[256];
	long loaded, n;
	int rc = -1;
	json_t *root;

	json_set_alloc_funcs(counting_malloc, free);
	allocs = 0;
	fail_at = 0;
	root = json_loadb(in, sizeof(in) - 1,
			  JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
	loaded = allocs;
	json_decref(root);
	for (n = loaded + 1; n < loaded + 100; n++) {
		allocs = 0;
		fail_at = n;
		rc = PARSE(in, &r, why);
		if (rc != -ENOMEM || !is_empty(&r))
			break;
	}
	fail_at = 0;
	json_set_alloc_funcs(malloc, free);
	ASSERT(root);
	if (rc != 0)
		FAIL_AT("allocation %ld: %d %s", n, rc, why);
	ASSERT_EQ(n, loaded + 4); /* three strings to normalize */
	ASSERT_STREQ(r.seg[0].text, "a b");
	ASSERT_STREQ(r.seg[0].speaker, "S");
	ASSERT_STREQ(r.seg[1].text, "c");
	task_result_clear(&r);
}

TEST(progress_good)
{
	static const struct {
		const char *in;
		const char *stage;
		int percent;
	} cases[] = {
	    {"{\"identifier\": \"0b6f8a52-8c1e-4d7a-9a3c-2f1e5d4c3b2a\","
	     " \"status\": \"processing\", \"progress_percentage\": 40,"
	     " \"progress_stage\": \"transcribing\", \"error\": null}",
	     "transcribing", 40},
	    {"{\"progress_percentage\": null, \"progress_stage\": null}", "",
	     -1},
	    {"{}", "", -1},
	    {"{\"progress_percentage\": 0}", "", 0},
	    {"{\"progress_percentage\": 100, \"status\": \"completed\"}", "",
	     100},
	    {"{\"progress_percentage\": 39.5}", "", 40},
	    {"{\"progress_percentage\": 99.4}", "", 99},
	    {"{\"progress_stage\": \"0123456789012345678901234567890\"}",
	     "0123456789012345678901234567890", -1},
	    {"{\"progress_stage\": \"\", \"error\": \"slow\"}", "", -1},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct task_progress p;
		char why[256];
		int rc = task_parse_progress(cases[i].in, strlen(cases[i].in),
					     &p, why, sizeof(why));

		if (rc != 0 || strcmp(p.stage, cases[i].stage) != 0 ||
		    p.percent != cases[i].percent)
			FAIL_AT("%s: returned %d (%s), stage \"%s\", %d%%",
				cases[i].in, rc, rc ? why : "", p.stage,
				p.percent);
	}
}

TEST(progress_bad)
{
	static const struct {
		const char *in;
		const char *why;
	} cases[] = {
	    {"", "not JSON: unexpected token near end of file (line 1)"},
	    {"<html>", "not JSON: invalid token near '<' (line 1)"},
	    {"[40]", "not a JSON object"},
	    {"{\"progress_stage\": \"a\", \"progress_stage\": \"b\"}",
	     "not JSON: duplicate object key near '\"progress_stage\"' "
	     "(line 1)"},
	    {"{\"progress_stage\": 5}",
	     "'progress_stage' is 5, expected a string or null"},
	    {"{\"progress_stage\": \"01234567890123456789012345678901\"}",
	     "'progress_stage' is 32 bytes, over 31"},
	    {"{\"progress_stage\": \"aligning\", \"progress_percentage\": "
	     "\"40\"}",
	     "'progress_percentage' is a string, expected a number or null"},
	    {"{\"progress_stage\": \"aligning\", \"progress_percentage\": 101}",
	     "'progress_percentage' is 101, out of range [0, 100]"},
	    {"{\"progress_percentage\": -0.5}",
	     "'progress_percentage' is -0.5, out of range [0, 100]"},
	    {"{\"progress_percentage\": 1e300}",
	     "'progress_percentage' is 1e+300, out of range [0, 100]"},
	    {"{\"status\": 1}", "'status' is 1, expected a string or null"},
	    {"{\"error\": [\"x\"]}",
	     "'error' is an array, expected a string or null"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct task_progress p;
		char why[256];
		int rc = task_parse_progress(cases[i].in, strlen(cases[i].in),
					     &p, why, sizeof(why));

		/* Left empty even when a field before the bad one was good. */
		if (rc != -EBADMSG || p.stage[0] || p.percent != -1 ||
		    strcmp(why, cases[i].why) != 0)
			FAIL_AT("%s\n    returned %d, why \"%s\"\n    "
				"expected why \"%s\"",
				cases[i].in, rc, why, cases[i].why);
	}
}

TEST_MAIN
