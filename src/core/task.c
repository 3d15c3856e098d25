/*
 * The task client's parsers: GET /task/{id} and GET /tasks/{id}/progress
 * answers (BACKEND.md section 2) into checked C values.
 *
 * The body is hostile until proven otherwise. jansson does the lexing and
 * already refuses invalid UTF-8, "\u0000", numbers that overflow and (with
 * JSON_REJECT_DUPLICATES) repeated keys; this file checks the shape: every
 * field's type, the status among the three known, segment times finite
 * and within [0, TASK_MAX_SECONDS]. Anything else is -EBADMSG with a
 * one-line reason naming the field, never a guess. Unknown fields are
 * ignored (the server may add some), and kept for the JSON sidecar.
 *
 * Segment text and speakers are normalized in the parsed tree itself
 * (trimmed, inner line breaks as one space each run), so the segment array
 * borrows its strings from the tree and the JSON sidecar shows the same
 * text as the other formats.
 *
 * Nothing here does I/O or keeps state between calls.
 */
#include "tusfs_setup.h"
#include "core/task.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest piece of a server string quoted in a reason. */
#define QUOTE_MAX 40

/* Sets why from fmt, control bytes shown as '?'. Returns -EBADMSG. */
static int bad(char *why, size_t whysz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(char *why, size_t whysz, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whysz)
		return -EBADMSG;
	va_start(ap, fmt);
	vsnprintf(why, whysz, fmt, ap);
	va_end(ap);
	for (char *c = why; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return -EBADMSG;
}

/* What v is, for a reason: "5", "1.5", "null", "a string", "an array". */
static const char *describe(const json_t *v, char *buf, size_t size)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		snprintf(buf, size, "%" JSON_INTEGER_FORMAT,
			 json_integer_value(v));
		return buf;
	case JSON_REAL:
		snprintf(buf, size, "%.15g", json_real_value(v));
		return buf;
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	case JSON_NULL:
		break;
	}
	return "null";
}

/* "<where>'<name>' is <v>, expected <what>"; returns -EBADMSG. */
static int type_error(char *why, size_t whysz, const char *where,
		      const char *name, const json_t *v, const char *what)
{
	char num[64];

	return bad(why, whysz, "%s'%s' is %s, expected %s", where, name,
		   describe(v, num, sizeof(num)), what);
}

/*
 * obj[name] into *out when it has type t; NULL when it is null or absent.
 * -EBADMSG for any other type.
 */
static int optional(json_t *obj, const char *name, json_type t,
		    const char *where, json_t **out, char *why, size_t whysz)
{
	json_t *v = json_object_get(obj, name);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (json_typeof(v) != t)
		return type_error(why, whysz, where, name, v,
				  t == JSON_STRING   ? "a string or null"
				  : t == JSON_OBJECT ? "an object or null"
						     : "an array or null");
	*out = v;
	return 0;
}

static int is_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static int is_break(char c)
{
	return c == '\r' || c == '\n';
}

/*
 * Trims str (a jansson string) of ASCII white space and turns each run of
 * '\r' and '\n' inside into one space, in place. 0 or -ENOMEM.
 */
static int normalize(json_t *str)
{
	const char *s = json_string_value(str);
	size_t a = 0, b = json_string_length(str), n = b, k = 0;
	char *tmp;
	int rc;

	while (a < b && is_space(s[a]))
		a++;
	while (b > a && is_space(s[b - 1]))
		b--;
	if (!memchr(s + a, '\r', b - a) && !memchr(s + a, '\n', b - a)) {
		if (a == 0 && b == n)
			return 0;
		/* jansson copies the new value before freeing the old. */
		return json_string_setn_nocheck(str, s + a, b - a) < 0 ? -ENOMEM
								       : 0;
	}
	/* Not empty: memchr found a line break in it. */
	assert(b > a);
	tmp = malloc(b - a);
	if (!tmp)
		return -ENOMEM;
	for (size_t i = a; i < b; i++) {
		if (!is_break(s[i]))
			tmp[k++] = s[i];
		else if (!is_break(s[i - 1]))
			tmp[k++] = ' ';
	}
	rc = json_string_setn_nocheck(str, tmp, k) < 0 ? -ENOMEM : 0;
	free(tmp);
	return rc;
}

/* A segment's "start" or "end": a number in [0, TASK_MAX_SECONDS]. */
static int seg_time(json_t *s, const char *name, const char *where, double *out,
		    char *why, size_t whysz)
{
	json_t *v = json_object_get(s, name);
	char num[64];

	if (!v)
		return bad(why, whysz, "%s'%s' is missing", where, name);
	if (!json_is_number(v))
		return type_error(why, whysz, where, name, v, "a number");
	*out = json_number_value(v);
	if (!isfinite(*out) || *out < 0 || *out > TASK_MAX_SECONDS)
		return bad(why, whysz, "%s'%s' is %s, out of range [0, %.0f]",
			   where, name, describe(v, num, sizeof(num)),
			   TASK_MAX_SECONDS);
	return 0;
}

/* Checks and normalizes segment i (0-based) of a completed answer. */
static int parse_segment(json_t *s, size_t i, struct segment *seg, char *why,
			 size_t whysz)
{
	char where[48];
	json_t *text, *speaker;
	char num[64];
	int rc;

	snprintf(where, sizeof(where), "segment %zu: ", i + 1);
	if (!json_is_object(s))
		return bad(why, whysz, "segment %zu is %s, expected an object",
			   i + 1, describe(s, num, sizeof(num)));
	rc = seg_time(s, "start", where, &seg->start, why, whysz);
	if (rc < 0)
		return rc;
	rc = seg_time(s, "end", where, &seg->end, why, whysz);
	if (rc < 0)
		return rc;

	text = json_object_get(s, "text");
	if (!text)
		return bad(why, whysz, "%s'text' is missing", where);
	if (!json_is_string(text))
		return type_error(why, whysz, where, "text", text, "a string");
	rc = optional(s, "speaker", JSON_STRING, where, &speaker, why, whysz);
	if (rc < 0)
		return rc;

	rc = normalize(text);
	if (rc < 0)
		return rc;
	seg->text = json_string_value(text);
	seg->speaker = NULL;
	if (speaker) {
		rc = normalize(speaker);
		if (rc < 0)
			return rc;
		if (json_string_length(speaker))
			seg->speaker = json_string_value(speaker);
	}
	return 0;
}

static int parse_status(json_t *root, enum task_status *st, char *why,
			size_t whysz)
{
	static const struct {
		const char *name;
		enum task_status st;
	} names[] = {
	    {"processing", TASK_PROCESSING},
	    {"completed", TASK_COMPLETED},
	    {"failed", TASK_FAILED},
	};
	json_t *v = json_object_get(root, "status");

	if (!v)
		return bad(why, whysz, "'status' is missing");
	if (!json_is_string(v))
		return type_error(why, whysz, "", "status", v, "a string");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(json_string_value(v), names[i].name) == 0) {
			*st = names[i].st;
			return 0;
		}
	}
	return bad(why, whysz, "unknown status '%.*s'", QUOTE_MAX,
		   json_string_value(v));
}

/* Loads buf as a JSON object into *root. */
static int load(const char *buf, size_t len, json_t **root, char *why,
		size_t whysz)
{
	json_error_t err;

	*root = NULL;
	if (len > TASK_MAX_BODY)
		return bad(why, whysz, "answer is %zu bytes, over the %d limit",
			   len, TASK_MAX_BODY);
	*root = json_loadb(buf ? buf : "", buf ? len : 0,
			   JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
	if (!*root) {
		/* When lexer setup fails jansson leaves err unset. */
		if (json_error_code(&err) == json_error_out_of_memory ||
		    !err.text[0])
			return -ENOMEM;
		return bad(why, whysz, "not JSON: %s (line %d)", err.text,
			   err.line);
	}
	if (!json_is_object(*root)) {
		json_decref(*root);
		*root = NULL;
		return bad(why, whysz, "not a JSON object");
	}
	return 0;
}

static int parse_segments(json_t *result, struct task_result *r, char *why,
			  size_t whysz)
{
	json_t *segs = json_object_get(result, "segments");
	size_t n;
	int rc;

	if (!segs)
		return bad(why, whysz,
			   "completed, but 'result.segments' is missing");
	if (!json_is_array(segs))
		return type_error(why, whysz, "", "result.segments", segs,
				  "an array");
	n = json_array_size(segs);
	if (n) {
		r->seg = calloc(n, sizeof(*r->seg));
		if (!r->seg)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		rc = parse_segment(json_array_get(segs, i), i, &r->seg[i], why,
				   whysz);
		if (rc < 0)
			return rc;
	}
	r->count = n;
	r->transcript.segments = segs;
	return 0;
}

int task_parse(const char *buf, size_t len, struct task_result *r, char *why,
	       size_t whysz)
{
	json_t *err, *meta, *result;
	int rc;

	memset(r, 0, sizeof(*r));
	if (why && whysz)
		why[0] = '\0';
	rc = load(buf, len, &r->root, why, whysz);
	if (rc < 0)
		return rc;

	rc = parse_status(r->root, &r->status, why, whysz);
	if (rc < 0)
		goto fail;
	rc = optional(r->root, "error", JSON_STRING, "", &err, why, whysz);
	if (rc < 0)
		goto fail;
	rc = optional(r->root, "metadata", JSON_OBJECT, "", &meta, why, whysz);
	if (rc < 0)
		goto fail;
	rc = optional(r->root, "result", JSON_OBJECT, "", &result, why, whysz);
	if (rc < 0)
		goto fail;

	if (err) {
		r->error = strdup(json_string_value(err));
		if (!r->error) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	if (r->status == TASK_COMPLETED) {
		if (!result) {
			rc = bad(why, whysz,
				 "completed, but 'result.segments' is missing");
			goto fail;
		}
		rc = parse_segments(result, r, why, whysz);
		if (rc < 0)
			goto fail;
	}
	r->transcript.seg = r->seg;
	r->transcript.count = r->count;
	r->transcript.metadata = meta;
	return 0;
fail:
	task_result_clear(r);
	return rc;
}

void task_result_clear(struct task_result *r)
{
	free(r->error);
	free(r->seg);
	json_decref(r->root);
	memset(r, 0, sizeof(*r));
}

int task_parse_progress(const char *buf, size_t len, struct task_progress *p,
			char *why, size_t whysz)
{
	json_t *root, *v;
	double pct;
	char num[64];
	int rc;

	p->stage[0] = '\0';
	p->percent = -1;
	if (why && whysz)
		why[0] = '\0';
	rc = load(buf, len, &root, why, whysz);
	if (rc < 0)
		return rc;

	rc = optional(root, "status", JSON_STRING, "", &v, why, whysz);
	if (rc < 0)
		goto out;
	rc = optional(root, "error", JSON_STRING, "", &v, why, whysz);
	if (rc < 0)
		goto out;
	rc = optional(root, "progress_stage", JSON_STRING, "", &v, why, whysz);
	if (rc < 0)
		goto out;
	if (v && json_string_length(v) >= sizeof(p->stage)) {
		rc = bad(why, whysz, "'progress_stage' is %zu bytes, over %zu",
			 json_string_length(v), sizeof(p->stage) - 1);
		goto out;
	}
	/* A stage is a word like "aligning"; it is shown and journaled, so
	 * nothing but printable ASCII is taken. */
	for (size_t i = 0; v && i < json_string_length(v); i++) {
		unsigned char c = (unsigned char)json_string_value(v)[i];

		if (c < 0x20 || c >= 0x7f) {
			rc = bad(why, whysz,
				 "'progress_stage' has a byte 0x%02x; only "
				 "printable ASCII is accepted",
				 c);
			goto out;
		}
	}
	if (v)
		memcpy(p->stage, json_string_value(v),
		       json_string_length(v) + 1);

	v = json_object_get(root, "progress_percentage");
	if (v && !json_is_null(v)) {
		if (!json_is_number(v)) {
			rc = type_error(why, whysz, "", "progress_percentage",
					v, "a number or null");
			goto out;
		}
		pct = json_number_value(v);
		if (!(pct >= 0 && pct <= 100)) {
			rc = bad(why, whysz,
				 "'progress_percentage' is %s, out of range "
				 "[0, 100]",
				 describe(v, num, sizeof(num)));
			goto out;
		}
		p->percent = (int)lround(pct);
	}
out:
	if (rc < 0) {
		p->stage[0] = '\0';
		p->percent = -1;
	}
	json_decref(root);
	return rc;
}
