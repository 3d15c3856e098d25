/*
 * Renderers: a parsed transcript to TXT, SRT, VTT or JSON bytes, and an
 * upload's state to the NAME.status document (layouts in BACKEND.md
 * section 3 and render.h).
 *
 * Text formats are built in a growing buffer (struct out) that remembers
 * an allocation failure and reports it once at the end, so the format code
 * reads as a straight sequence of appends. JSON documents are built as
 * jansson trees and dumped through a callback into the same buffer, so
 * every output is allocated with malloc whatever jansson's allocator is.
 *
 * Nothing here validates the transcript: task.c did. The only defence is
 * for strings that reach a JSON document: bytes that are not UTF-8 (a
 * hand-built segment, an error message quoting a file name) become U+FFFD
 * rather than making jansson refuse the string.
 */
#include "tusfs_setup.h"
#include "core/render.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Times are clamped here before conversion to milliseconds. It is
 * TASK_MAX_SECONDS (task.h), repeated so that render does not depend on
 * the task client; far below the 9.2e15 s where milliseconds overflow.
 */
#define TIME_MAX_SECONDS 1e9

/* Flags of every JSON document tusfs writes. */
#define DUMP_FLAGS                                                             \
	(JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))

/* A growing, always NUL-terminated output buffer. */
struct out {
	char *p;
	size_t len, cap; /* cap counts the NUL's byte */
	int failed;	 /* an allocation failed; p is stale */
};

static void out_add(struct out *o, const char *s, size_t n)
{
	if (o->failed)
		return;
	if (n >= o->cap - o->len) {
		size_t cap = o->cap ? o->cap : 256;
		char *p;

		while (n >= cap - o->len) {
			if (cap > SIZE_MAX / 2) {
				o->failed = 1;
				return;
			}
			cap *= 2;
		}
		p = realloc(o->p, cap);
		if (!p) {
			o->failed = 1;
			return;
		}
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void out_str(struct out *o, const char *s)
{
	out_add(o, s, strlen(s));
}

/* s with '&', '<' and '>' as WebVTT character references. */
static void out_escaped(struct out *o, const char *s)
{
	for (;;) {
		size_t n = strcspn(s, "&<>");

		out_add(o, s, n);
		switch (s[n]) {
		case '\0':
			return;
		case '&':
			out_str(o, "&amp;");
			break;
		case '<':
			out_str(o, "&lt;");
			break;
		default:
			out_str(o, "&gt;");
			break;
		}
		s += n + 1;
	}
}

/* Hands the buffer to the caller: 0, or -ENOMEM with nothing allocated. */
static int out_take(struct out *o, char **out, size_t *len)
{
	if (!o->failed && !o->p) {
		o->p = malloc(1);
		if (o->p)
			o->p[0] = '\0';
		else
			o->failed = 1;
	}
	if (o->failed) {
		free(o->p);
		*out = NULL;
		*len = 0;
		return -ENOMEM;
	}
	*out = o->p;
	*len = o->len;
	return 0;
}

const char *render_suffix(enum render_format f)
{
	switch (f) {
	case RENDER_TXT:
		return "txt";
	case RENDER_SRT:
		return "srt";
	case RENDER_VTT:
		return "vtt";
	case RENDER_JSON:
		return "json";
	case RENDER_FORMATS:
		break;
	}
	return "";
}

void render_time(double seconds, char sep, char *buf)
{
	long long ms = 0;

	/* !(x > 0) is also true for NaN. */
	if (isfinite(seconds) && seconds > 0) {
		if (seconds > TIME_MAX_SECONDS)
			seconds = TIME_MAX_SECONDS;
		ms = llround(seconds * 1000);
	}
	snprintf(buf, RENDER_TIME_MAX, "%02lld:%02lld:%02lld%c%03lld",
		 ms / 3600000, ms / 60000 % 60, ms / 1000 % 60, sep, ms % 1000);
}

static void out_times(struct out *o, const struct segment *s, char sep)
{
	char a[RENDER_TIME_MAX], b[RENDER_TIME_MAX];

	render_time(s->start, sep, a);
	render_time(s->end, sep, b);
	out_str(o, a);
	out_str(o, " --> ");
	out_str(o, b);
	out_str(o, "\n");
}

static void render_txt(const struct transcript *t, struct out *o)
{
	for (size_t i = 0; i < t->count; i++) {
		const struct segment *s = &t->seg[i];

		if (s->speaker) {
			out_str(o, "[");
			out_str(o, s->speaker);
			out_str(o, "]: ");
		}
		out_str(o, s->text);
		out_str(o, "\n");
	}
}

static void render_srt(const struct transcript *t, struct out *o)
{
	for (size_t i = 0; i < t->count; i++) {
		const struct segment *s = &t->seg[i];
		char num[32];

		snprintf(num, sizeof(num), "%s%zu\n", i ? "\n" : "", i + 1);
		out_str(o, num);
		out_times(o, s, ',');
		if (s->speaker) {
			out_str(o, "[");
			out_str(o, s->speaker);
			out_str(o, "] ");
		}
		out_str(o, s->text);
		out_str(o, "\n");
	}
}

static void render_vtt(const struct transcript *t, struct out *o)
{
	out_str(o, "WEBVTT\n");
	for (size_t i = 0; i < t->count; i++) {
		const struct segment *s = &t->seg[i];

		out_str(o, "\n");
		out_times(o, s, '.');
		if (s->speaker) {
			out_str(o, "<v ");
			out_escaped(o, s->speaker);
			out_str(o, ">");
			out_escaped(o, s->text);
			out_str(o, "</v>");
		} else {
			out_escaped(o, s->text);
		}
		out_str(o, "\n");
	}
}

/*
 * Length of the valid UTF-8 sequence at s (1 to 4), or 0 if s does not
 * start one (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF).
 */
static size_t utf8_seq(const unsigned char *s)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xBF;
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return n;
}

/*
 * A JSON string for s: null for NULL, U+FFFD for each byte that does not
 * start valid UTF-8. NULL only when out of memory.
 */
static json_t *jstr(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, n;
	struct out o = {0};
	char *fixed;
	size_t len;
	json_t *j;

	if (!s)
		return json_null();
	while (u[i]) {
		n = utf8_seq(u + i);
		if (!n)
			break;
		i += n;
	}
	if (!u[i])
		return json_string_nocheck(s);

	out_add(&o, s, i);
	while (u[i]) {
		n = utf8_seq(u + i);
		if (n) {
			out_add(&o, s + i, n);
			i += n;
		} else {
			out_str(&o, "\xEF\xBF\xBD");
			i++;
		}
	}
	if (out_take(&o, &fixed, &len) < 0)
		return NULL;
	j = json_stringn_nocheck(fixed, len);
	free(fixed);
	return j;
}

static int dump_cb(const char *buf, size_t size, void *data)
{
	struct out *o = data;

	out_add(o, buf, size);
	return o->failed ? -1 : 0;
}

/* Dumps j (taken: always released) as a document ending in '\n'. */
static int dump_take(json_t *j, char **out, size_t *len)
{
	struct out o = {0};

	if (!j || json_dump_callback(j, dump_cb, &o, DUMP_FLAGS) < 0)
		o.failed = 1;
	out_str(&o, "\n");
	json_decref(j);
	return out_take(&o, out, len);
}

/* seg as {"start", "end", "text"[, "speaker"]}; NULL when out of memory. */
static json_t *segment_new(const struct segment *seg)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "start", json_real(seg->start)) < 0 ||
	    json_object_set_new(o, "end", json_real(seg->end)) < 0 ||
	    json_object_set_new(o, "text", jstr(seg->text)) < 0 ||
	    (seg->speaker &&
	     json_object_set_new(o, "speaker", jstr(seg->speaker)) < 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/*
 * The server's segment object src with "text" replaced by seg->text (added
 * last if src has none). The other values are shared with src, not copied;
 * NULL when out of memory.
 */
static json_t *segment_copy(const json_t *src, const struct segment *seg)
{
	json_t *o = json_object();
	json_t *text = jstr(seg->text);
	const char *key;
	size_t klen;
	json_t *v;

	if (!o || !text)
		goto fail;
	json_object_keylen_foreach((json_t *)src, key, klen, v)
	{
		if (klen == 4 && memcmp(key, "text", 4) == 0)
			v = text;
		if (json_object_setn_nocheck(o, key, klen, v) < 0)
			goto fail;
	}
	if (!json_object_get(o, "text") &&
	    json_object_set_nocheck(o, "text", text) < 0)
		goto fail;
	json_decref(text);
	return o;
fail:
	json_decref(text);
	json_decref(o);
	return NULL;
}

/* Whether t->segments holds one object per segment, to render those. */
static int server_segments(const struct transcript *t)
{
	if (!json_is_array(t->segments) ||
	    json_array_size(t->segments) != t->count)
		return 0;
	for (size_t i = 0; i < t->count; i++)
		if (!json_is_object(json_array_get(t->segments, i)))
			return 0;
	return 1;
}

static int render_json(const struct transcript *t, char **out, size_t *len)
{
	json_t *root = json_object();
	json_t *segs;
	int server = server_segments(t);

	/* json_*_set_new and _append_new release the value when they fail. */
	if (!root ||
	    json_object_set_new(root, "metadata",
				t->metadata ? json_incref((json_t *)t->metadata)
					    : json_object()) < 0)
		goto fail;
	segs = json_array();
	if (json_object_set_new(root, "segments", segs) < 0)
		goto fail;
	for (size_t i = 0; i < t->count; i++) {
		json_t *s = server
				? segment_copy(json_array_get(t->segments, i),
					       &t->seg[i])
				: segment_new(&t->seg[i]);

		if (json_array_append_new(segs, s) < 0)
			goto fail;
	}
	return dump_take(root, out, len);
fail:
	json_decref(root);
	*out = NULL;
	*len = 0;
	return -ENOMEM;
}

int render_transcript(const struct transcript *t, enum render_format f,
		      char **out, size_t *len)
{
	struct out o = {0};

	switch (f) {
	case RENDER_TXT:
		render_txt(t, &o);
		break;
	case RENDER_SRT:
		render_srt(t, &o);
		break;
	case RENDER_VTT:
		render_vtt(t, &o);
		break;
	case RENDER_JSON:
		return render_json(t, out, len);
	case RENDER_FORMATS:
		break;
	}
	return out_take(&o, out, len);
}

/* A whole number for x, or null when x is negative or not finite. */
static json_t *count_or_null(double x, int round_up)
{
	if (!isfinite(x) || x < 0)
		return json_null();
	if (x > 1e18)
		x = 1e18;
	return json_integer(round_up ? (json_int_t)ceil(x)
				     : (json_int_t)llround(x));
}

/* A byte count; past INT64_MAX (never, in practice) it saturates. */
static json_t *bytes_new(uint64_t n)
{
	return json_integer(n > INT64_MAX ? INT64_MAX : (json_int_t)n);
}

/* confirmed * 100 / total floored to a tenth; null when total is 0. */
static json_t *percent_new(uint64_t confirmed, uint64_t total)
{
	uint64_t whole, rem, permille;

	if (!total)
		return json_null();
	whole = confirmed / total;
	rem = confirmed % total;
	/* rem * 1000 must not overflow: scale both (past 18 PB only). */
	while (total > UINT64_MAX / 1000) {
		total >>= 1;
		rem >>= 1;
	}
	if (whole > UINT64_MAX / 1000)
		return json_real((double)whole * 100);
	permille = whole * 1000 + rem * 1000 / total;
	return json_real((double)permille / 10);
}

static json_t *transcription_new(const struct status_view *v)
{
	json_t *o;

	if (!v->task_status)
		return json_null();
	o = json_object();
	if (!o || json_object_set_new(o, "status", jstr(v->task_status)) < 0 ||
	    json_object_set_new(o, "stage", jstr(v->task_stage)) < 0 ||
	    json_object_set_new(o, "percent",
				v->task_percent < 0
				    ? json_null()
				    : json_integer(v->task_percent)) < 0 ||
	    json_object_set_new(o, "error", jstr(v->task_error)) < 0 ||
	    json_object_set_new(o, "poll_error", jstr(v->poll_error)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int render_status(const struct status_view *v, char **out, size_t *len)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "state", jstr(v->state)) < 0 ||
	    json_object_set_new(o, "bytes_confirmed", bytes_new(v->confirmed)) <
		0 ||
	    json_object_set_new(o, "bytes_total", bytes_new(v->total)) < 0 ||
	    json_object_set_new(o, "percent",
				percent_new(v->confirmed, v->total)) < 0 ||
	    json_object_set_new(o, "rate_bytes_per_s",
				count_or_null(v->rate, 0)) < 0 ||
	    json_object_set_new(o, "eta_s", count_or_null(v->eta, 1)) < 0 ||
	    json_object_set_new(o, "url", jstr(v->url)) < 0 ||
	    json_object_set_new(o, "taskId", jstr(v->task_id)) < 0 ||
	    json_object_set_new(o, "error", jstr(v->error)) < 0 ||
	    json_object_set_new(o, "transcription", transcription_new(v)) < 0) {
		json_decref(o);
		*out = NULL;
		*len = 0;
		return -ENOMEM;
	}
	return dump_take(o, out, len);
}
