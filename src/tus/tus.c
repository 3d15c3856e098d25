/*
 * TUS 1.0.0 client over the http transport. Each request builds its header
 * lines, performs, and turns the response into a tus_outcome plus a
 * tus_status; the caller (the upload engine) owns all policy: backoff,
 * retries, restarts. Nothing here sleeps, retries or keeps state between
 * calls beyond the endpoint.
 *
 * What the server says is untrusted: offsets must be decimal and move
 * forward by no more than was sent, a Location must be short and free of
 * control characters, and a server message is shortened and cleaned before
 * it reaches a log.
 */
#include "tus_setup.h"
#include "tus/tus.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TUS_VERSION	"1.0.0"
#define OFFSET_CT	"Content-Type: application/offset+octet-stream"
#define RESUMABLE_HDR	"Tus-Resumable: " TUS_VERSION
#define MAX_REQ_HEADERS 8

struct tus_client {
	struct tus_http *http;
	char *endpoint;
};

/* Header lines of one request; each line is malloc'd. */
struct headers {
	char *lines[MAX_REQ_HEADERS + 1];
	int n;
	bool failed;
};

static void headers_add(struct headers *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void headers_add(struct headers *h, const char *fmt, ...)
{
	va_list ap;
	char *line;

	if (h->failed || h->n == MAX_REQ_HEADERS) {
		h->failed = true;
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		h->failed = true;
	else
		h->lines[h->n++] = line;
	va_end(ap);
}

static void headers_clear(struct headers *h)
{
	for (int i = 0; i < h->n; i++)
		free(h->lines[i]);
	h->n = 0;
}

struct tus_client *tus_client_create(struct tus_http *transport,
				     const char *endpoint, int *err)
{
	struct tus_client *c = calloc(1, sizeof(*c));

	if (!c || !(c->endpoint = strdup(endpoint))) {
		free(c);
		*err = -ENOMEM;
		return NULL;
	}
	c->http = transport;
	return c;
}

void tus_client_free(struct tus_client *c)
{
	if (!c)
		return;
	free(c->endpoint);
	free(c);
}

int tus_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		unsigned d;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

unsigned tus_parse_extensions(const char *list)
{
	static const struct {
		const char *name;
		unsigned flag;
	} known[] = {
	    {"creation", TUS_EXT_CREATION},
	    {"creation-with-upload", TUS_EXT_CREATION_WITH_UPLOAD},
	    {"creation-defer-length", TUS_EXT_CREATION_DEFER_LENGTH},
	    {"termination", TUS_EXT_TERMINATION},
	    {"expiration", TUS_EXT_EXPIRATION},
	    {"checksum", TUS_EXT_CHECKSUM},
	    {"concatenation", TUS_EXT_CONCATENATION},
	};
	unsigned flags = 0;
	const char *p = list;

	while (*p) {
		const char *end;
		size_t len;

		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		end = p;
		while (*end && *end != ',' && !isspace((unsigned char)*end))
			end++;
		len = (size_t)(end - p);
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (strlen(known[i].name) == len &&
			    strncmp(p, known[i].name, len) == 0)
				flags |= known[i].flag;
		p = end;
	}
	return flags;
}

int tus_resolve_location(const char *base, const char *location, char **out)
{
	CURLU *u;
	char *url = NULL, *scheme = NULL;
	int rc = -EPROTO;

	if (!*location || strlen(location) > TUS_MAX_URL)
		return -EPROTO;
	for (const char *p = location; *p; p++)
		if (iscntrl((unsigned char)*p) || *p == ' ')
			return -EPROTO;
	u = curl_url();
	if (!u)
		return -ENOMEM;
	/* Only http(s): a file:// or ftp:// upload URL would at best fail
	 * later with a less clear error. */
	if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
	    curl_url_get(u, CURLUPART_URL, &url, 0) == CURLUE_OK &&
	    strlen(url) <= TUS_MAX_URL) {
		/* Hand back memory the caller can free() rather than
		 * curl_free(). */
		*out = strdup(url);
		rc = *out ? 0 : -ENOMEM;
	}
	curl_free(scheme);
	curl_free(url);
	curl_url_cleanup(u);
	return rc;
}

static size_t base64_encode(const unsigned char *in, size_t n, char *out)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = tbl[(v >> 18) & 63];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = (char)(i + 1 < n ? tbl[(v >> 6) & 63] : '=');
		out[o++] = (char)(i + 2 < n ? tbl[v & 63] : '=');
	}
	return o;
}

char *tus_metadata_encode(const struct tus_meta_pair *pairs, size_t n)
{
	size_t cap = 1, o = 0;
	char *out;

	for (size_t i = 0; i < n; i++)
		cap += strlen(pairs[i].key) + 2 + (pairs[i].vlen + 2) / 3 * 4;
	out = malloc(cap);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t klen = strlen(pairs[i].key);

		if (i > 0)
			out[o++] = ',';
		memcpy(out + o, pairs[i].key, klen);
		o += klen;
		out[o++] = ' ';
		o += base64_encode((const unsigned char *)pairs[i].value,
				   pairs[i].vlen, out + o);
	}
	out[o] = '\0';
	return out;
}

enum tus_outcome tus_classify(long status)
{
	if (status >= 200 && status < 300)
		return TUS_OK;
	switch (status) {
	case 404:
	case 410:
		return TUS_GONE;
	case 409:
		return TUS_CONFLICT;
	case 408:
	case 423:
	case 429:
	case 460: /* checksum mismatch: the chunk was discarded, send again */
		return TUS_RETRY;
	default:
		return status >= 500 ? TUS_RETRY : TUS_FATAL;
	}
}

/* Copies the start of a server's body into dst, one line, printable only. */
static void excerpt(const struct tus_http_response *resp, char *dst, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < resp->body_len && o + 1 < n; i++) {
		unsigned char ch = (unsigned char)resp->body[i];

		dst[o++] = (char)((ch < 0x20 || ch == 0x7f) ? ' ' : ch);
	}
	while (o > 0 && dst[o - 1] == ' ')
		o--;
	dst[o] = '\0';
}

/* Seconds or an HTTP date, capped at TUS_RETRY_AFTER_MAX either way. */
static long parse_retry_after(const struct tus_http_response *resp)
{
	char v[64];
	uint64_t secs;
	time_t when, now;

	if (tus_http_response_header(resp, "Retry-After", v, sizeof(v)) < 0)
		return -1;
	if (tus_parse_u64(v, &secs) < 0) {
		when = curl_getdate(v, NULL);
		if (when < 0)
			return -1;
		now = time(NULL);
		secs = when > now ? (uint64_t)(when - now) : 0;
	}
	return secs > TUS_RETRY_AFTER_MAX ? TUS_RETRY_AFTER_MAX : (long)secs;
}

static enum tus_outcome fail(struct tus_status *st, enum tus_outcome o, int err,
			     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum tus_outcome fail(struct tus_status *st, enum tus_outcome o, int err,
			     const char *fmt, ...)
{
	va_list ap;

	st->err = err;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
	/* Messages quote what the server sent; they go to logs and .status
	 * files, where a control byte could forge a line or a terminal
	 * escape. */
	for (char *c = st->message; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return o;
}

/*
 * Performs one request and classifies the answer. On TUS_OK the response is
 * left in resp for the caller to read (and clear); otherwise it is cleared
 * and st says why.
 */
static enum tus_outcome perform(struct tus_client *c,
				const struct tus_http_request *base,
				struct headers *h,
				struct tus_http_response *resp,
				struct tus_status *st)
{
	struct tus_http_request req = *base;
	const char *method = req.method;
	enum tus_outcome o;
	char text[160];
	int rc;

	memset(st, 0, sizeof(*st));
	st->retry_after = -1;
	/* Cleared on every path, this early one included. */
	memset(resp, 0, sizeof(*resp));
	if (h->failed) {
		headers_clear(h);
		return fail(st, TUS_RETRY, -ENOMEM, "%s: out of memory",
			    method);
	}
	h->lines[h->n] = NULL;
	req.headers = (const char *const *)h->lines;
	rc = tus_http_perform(c->http, &req, resp);
	headers_clear(h);
	if (rc == -ECANCELED) {
		tus_http_response_clear(resp);
		return fail(st, TUS_CANCELED, rc, "%s canceled", method);
	}
	if (rc < 0) {
		/* Oversized headers or a broken TLS peer will not mend by
		 * retrying. */
		o = (rc == -E2BIG || rc == -EKEYREJECTED || rc == -EPROTO)
			? TUS_FATAL
			: TUS_RETRY;
		fail(st, o, rc, "%s failed: %s", method, resp->error);
		tus_http_response_clear(resp);
		return o;
	}
	st->http_status = resp->status;
	o = tus_classify(resp->status);
	if (o == TUS_OK)
		return o;
	st->retry_after = parse_retry_after(resp);
	excerpt(resp, text, sizeof(text));
	fail(st, o, -EIO, "%s: HTTP %ld%s%s", method, resp->status,
	     text[0] ? ": " : "", text);
	tus_http_response_clear(resp);
	return o;
}

/* Reads the Upload-Offset header; FATAL if missing or malformed. */
static enum tus_outcome read_offset(const char *method,
				    const struct tus_http_response *resp,
				    uint64_t *offset, struct tus_status *st)
{
	char v[32];

	if (tus_http_response_header(resp, "Upload-Offset", v, sizeof(v)) < 0)
		return fail(st, TUS_FATAL, -EPROTO,
			    "%s: response has no valid Upload-Offset", method);
	if (tus_parse_u64(v, offset) < 0)
		return fail(st, TUS_FATAL, -EPROTO,
			    "%s: malformed Upload-Offset '%.32s'", method, v);
	return TUS_OK;
}

enum tus_outcome tus_discover(struct tus_client *c, struct tus_server *srv,
			      struct tus_status *st)
{
	struct headers h = {0};
	struct tus_http_response resp;
	enum tus_outcome o;
	char v[512];

	memset(srv, 0, sizeof(*srv));
	o = perform(
	    c,
	    &(struct tus_http_request){.method = "OPTIONS", .url = c->endpoint},
	    &h, &resp, st);
	if (o != TUS_OK) {
		if (st->http_status == 401 || st->http_status == 403)
			snprintf(st->message, sizeof(st->message),
				 "server refused the credentials (HTTP %ld)",
				 st->http_status);
		/* Any refusal of OPTIONS means this is not a usable endpoint.
		 */
		return o == TUS_RETRY ? o : TUS_FATAL;
	}
	if (tus_http_response_header(&resp, "Tus-Version", v, sizeof(v)) < 0 &&
	    tus_http_response_header(&resp, "Tus-Resumable", v, sizeof(v)) <
		0) {
		o = fail(st, TUS_FATAL, -EPROTO,
			 "not a TUS server (HTTP %ld without Tus-Version or "
			 "Tus-Resumable)",
			 resp.status);
		goto out;
	}
	if (!strstr(v, TUS_VERSION)) {
		o = fail(st, TUS_FATAL, -EPROTO,
			 "server speaks TUS '%.64s', not " TUS_VERSION, v);
		goto out;
	}
	if (tus_http_response_header(&resp, "Tus-Extension", v, sizeof(v)) >= 0)
		srv->extensions = tus_parse_extensions(v);
	if (tus_http_response_header(&resp, "Tus-Max-Size", v, sizeof(v)) >=
		0 &&
	    tus_parse_u64(v, &srv->max_size) < 0) {
		o = fail(st, TUS_FATAL, -EPROTO,
			 "malformed Tus-Max-Size '%.32s'", v);
		goto out;
	}
	if (!(srv->extensions & TUS_EXT_CREATION))
		o = fail(st, TUS_FATAL, -EPROTO,
			 "server does not offer the creation extension");
out:
	tus_http_response_clear(&resp);
	return o;
}

enum tus_outcome tus_create(struct tus_client *c,
			    const struct tus_create_req *req, char **url,
			    uint64_t *offset, struct tus_status *st)
{
	struct headers h = {0};
	struct tus_http_response resp;
	enum tus_outcome o;
	char *loc;
	int rc;

	headers_add(&h, RESUMABLE_HDR);
	if (req->length == TUS_LENGTH_UNKNOWN)
		headers_add(&h, "Upload-Defer-Length: 1");
	else
		headers_add(&h, "Upload-Length: %lld", (long long)req->length);
	if (req->metadata && *req->metadata)
		headers_add(&h, "Upload-Metadata: %s", req->metadata);
	if (req->body)
		headers_add(&h, OFFSET_CT);
	o = perform(c,
		    &(struct tus_http_request){.method = "POST",
					       .url = c->endpoint,
					       .body = req->body,
					       .cancel = req->cancel},
		    &h, &resp, st);
	/* A missing creation URL is no reason to start over: it is final. */
	if (o == TUS_GONE || o == TUS_CONFLICT)
		o = TUS_FATAL;
	if (o != TUS_OK)
		return o;

	*offset = 0;
	loc = malloc(TUS_MAX_URL + 2);
	if (!loc) {
		o = fail(st, TUS_RETRY, -ENOMEM, "POST: out of memory");
		goto out;
	}
	rc = tus_http_response_header(&resp, "Location", loc, TUS_MAX_URL + 2);
	if (rc >= 0)
		rc = tus_resolve_location(c->endpoint, loc, url);
	free(loc);
	if (rc < 0) {
		o = fail(st, TUS_FATAL, -EPROTO,
			 "POST: HTTP %ld with a missing or invalid Location",
			 resp.status);
		goto out;
	}
	if (req->body) {
		o = read_offset("POST", &resp, offset, st);
		if (o == TUS_OK && *offset > req->body->length)
			o = fail(st, TUS_FATAL, -EPROTO,
				 "POST: server claims offset %llu after %llu "
				 "bytes",
				 (unsigned long long)*offset,
				 (unsigned long long)req->body->length);
		if (o != TUS_OK) {
			free(*url);
			*url = NULL;
		}
	}
out:
	tus_http_response_clear(&resp);
	return o;
}

enum tus_outcome tus_patch(struct tus_client *c,
			   const struct tus_patch_req *req, uint64_t *offset,
			   struct tus_status *st)
{
	struct headers h = {0};
	struct tus_http_response resp;
	enum tus_outcome o;
	uint64_t sent = req->body ? req->body->length : 0;

	headers_add(&h, RESUMABLE_HDR);
	headers_add(&h, OFFSET_CT);
	headers_add(&h, "Upload-Offset: %llu", (unsigned long long)req->offset);
	if (req->length != TUS_LENGTH_UNKNOWN)
		headers_add(&h, "Upload-Length: %lld", (long long)req->length);
	o = perform(c,
		    &(struct tus_http_request){.method = "PATCH",
					       .url = req->url,
					       .body = req->body,
					       .cancel = req->cancel,
					       .answer_timeout_s =
						   req->answer_timeout_s},
		    &h, &resp, st);
	if (o != TUS_OK)
		return o;
	o = read_offset("PATCH", &resp, offset, st);
	if (o == TUS_OK &&
	    (*offset < req->offset || *offset - req->offset > sent))
		o = fail(st, TUS_FATAL, -EPROTO,
			 "PATCH: server moved the offset from %llu to %llu "
			 "after %llu bytes",
			 (unsigned long long)req->offset,
			 (unsigned long long)*offset, (unsigned long long)sent);
	tus_http_response_clear(&resp);
	return o;
}

enum tus_outcome tus_head(struct tus_client *c, const char *url,
			  uint64_t *offset, int64_t *length,
			  struct tus_status *st)
{
	struct headers h = {0};
	struct tus_http_response resp;
	enum tus_outcome o;
	uint64_t len;
	char v[32];

	headers_add(&h, RESUMABLE_HDR);
	o = perform(c, &(struct tus_http_request){.method = "HEAD", .url = url},
		    &h, &resp, st);
	/* HEAD answers 403 for an unknown upload on some servers. */
	if (o == TUS_FATAL && st->http_status == 403)
		o = TUS_GONE;
	if (o != TUS_OK)
		return o;
	o = read_offset("HEAD", &resp, offset, st);
	*length = TUS_LENGTH_UNKNOWN;
	if (o == TUS_OK && tus_http_response_header(&resp, "Upload-Length", v,
						    sizeof(v)) >= 0) {
		if (tus_parse_u64(v, &len) < 0 || len > INT64_MAX)
			o = fail(st, TUS_FATAL, -EPROTO,
				 "HEAD: malformed Upload-Length '%.32s'", v);
		else
			*length = (int64_t)len;
	}
	tus_http_response_clear(&resp);
	return o;
}

enum tus_outcome tus_terminate(struct tus_client *c, const char *url,
			       struct tus_status *st)
{
	struct headers h = {0};
	struct tus_http_response resp;
	enum tus_outcome o;

	headers_add(&h, RESUMABLE_HDR);
	o = perform(c,
		    &(struct tus_http_request){.method = "DELETE", .url = url},
		    &h, &resp, st);
	if (o == TUS_GONE)
		return TUS_OK;
	if (o == TUS_OK)
		tus_http_response_clear(&resp);
	return o;
}

int tus_url_origin(const char *url, char *out, size_t outsz)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	int rc = -EINVAL;
	int n;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
		CURLUE_OK)
		goto out;
	for (char *c = host; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	n = snprintf(out, outsz, "%s://%s:%s", scheme, host, port);
	rc = (n < 0 || (size_t)n >= outsz) ? -E2BIG : 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}
