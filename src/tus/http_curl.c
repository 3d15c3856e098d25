/*
 * The libcurl transport: one easy handle per transport, reset before every
 * request so no option leaks from one request into the next, while libcurl
 * keeps its connection cache (connections are reused across requests and
 * files). Request bodies are pulled through the read callback straight from
 * their source, so memory stays at one upload buffer whatever the body size.
 *
 * The bearer token is attached here and only to the configured origin: the
 * TUS client never sees it, and a Location pointing elsewhere gets none.
 * Redirects are never followed.
 */
#include "tus_setup.h"
#include "tus/curl.h"
#include "tus/tus.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Bytes libcurl asks the read callback for at once. */
#define UPLOAD_BUFFER_SIZE (512 * 1024)
/* Bodies from this size on ask for 100-continue, so a refusal costs no body. */
#define EXPECT_THRESHOLD (1024 * 1024)

struct tus_http_curl {
	struct tus_http base;
	CURL *easy;
	char *token_header;
	char *auth_origin;
	char *cafile;
	bool insecure;
	long connect_timeout_s;
	long stall_timeout_s;
	const atomic_int *abort_all;
};

/* State of one transfer, shared with libcurl's callbacks. */
struct xfer {
	const struct tus_http_curl *hc;
	const struct tus_http_request *req;
	struct tus_http_response *resp;
	uint64_t sent;
	int read_err;
	bool headers_too_big;
	bool body_too_big;
	size_t headers_cap, body_cap;
	/* Stall detection: the byte counts last seen and when they moved. */
	curl_off_t last_ul, last_dl;
	struct timespec last_move;
	bool stalled;
	/* The whole body was sent when the answer bound ran out. */
	bool unanswered;
	size_t drained; /* body bytes seen, for TUS_HTTP_MAX_DRAIN */
};

/*
 * Appends n bytes to a NUL-terminated buffer of *cap bytes capped at max.
 * The buffer doubles, so a body of many megabytes costs a few copies, not
 * one per piece libcurl hands over.
 */
static int append(char **buf, size_t *len, size_t *cap, const char *data,
		  size_t n, size_t max)
{
	if (*len + n > max)
		return -E2BIG;
	if (*len + n + 1 > *cap) {
		size_t want = *cap ? *cap : 4096;
		char *p;

		while (want < *len + n + 1)
			want *= 2;
		if (want > max + 1)
			want = max + 1;
		p = realloc(*buf, want);
		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = want;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *arg)
{
	struct xfer *x = arg;
	struct tus_http_response *resp = x->resp;
	size_t n = size * nitems;

	/* A new status line (after 100 Continue) starts a new header block. */
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
		resp->headers_len = 0;
	if (append(&resp->headers, &resp->headers_len, &x->headers_cap, data, n,
		   TUS_HTTP_MAX_HEADERS) < 0) {
		x->headers_too_big = true;
		return 0;
	}
	return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	struct tus_http_response *resp = x->resp;
	size_t n = size * nmemb;
	size_t max = x->req->max_body ? x->req->max_body : TUS_HTTP_MAX_BODY;
	size_t room = max - resp->body_len;
	int rc;

	if (x->req->max_body) {
		rc = append(&resp->body, &resp->body_len, &x->body_cap, data, n,
			    max);
		x->body_too_big = rc == -E2BIG;
		return rc < 0 ? 0 : n;
	}
	/* Past the cap the rest is read and dropped, not treated as an error,
	 * up to TUS_HTTP_MAX_DRAIN. */
	x->drained += n;
	if (x->drained > TUS_HTTP_MAX_DRAIN) {
		x->body_too_big = true;
		return 0;
	}
	if (room > 0 && append(&resp->body, &resp->body_len, &x->body_cap, data,
			       n < room ? n : room, max) < 0)
		return 0;
	return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *arg)
{
	struct xfer *x = arg;
	const struct tus_http_body *body = x->req->body;
	uint64_t left = body->length - x->sent;
	size_t want = size * nitems;
	ssize_t r;

	if (left == 0)
		return 0;
	if (want > left)
		want = (size_t)left;
	r = body->read(body->arg, buf, want, x->sent);
	if (r <= 0) {
		/* A source shorter than it promised is an error, not an EOF. */
		x->read_err = r < 0 ? (int)r : -EIO;
		return CURL_READFUNC_ABORT;
	}
	x->sent += (uint64_t)r;
	return (size_t)r;
}

static int on_seek(void *arg, curl_off_t offset, int origin)
{
	struct xfer *x = arg;

	if (origin != SEEK_SET || offset < 0 ||
	    (uint64_t)offset > x->req->body->length)
		return CURL_SEEKFUNC_CANTSEEK;
	x->sent = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

/*
 * Called about once a second and on every transfer: aborts on request
 * (unlink, shutdown) and when no byte has moved either way for
 * stall_timeout_s. libcurl's own low-speed check averages over a window of
 * several seconds, so a stall would take that much longer to notice. Once
 * the whole body of a request with an answer bound is sent, the quiet is
 * the server working, and the bound counts instead.
 */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	struct xfer *x = arg;
	const struct tus_http_request *req = x->req;
	uint64_t body = req->body ? req->body->length : 0;
	bool answering = req->answer_timeout_s > 0 && dlnow == 0 &&
			 ulnow >= 0 && (uint64_t)ulnow >= body;
	struct timespec now;

	(void)dltotal;
	(void)ultotal;
	if (x->hc->abort_all && atomic_load(x->hc->abort_all))
		return 1;
	if (req->cancel && atomic_load(req->cancel))
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (ulnow != x->last_ul || dlnow != x->last_dl ||
	    x->last_move.tv_sec == 0) {
		x->last_ul = ulnow;
		x->last_dl = dlnow;
		x->last_move = now;
		return 0;
	}
	if (now.tv_sec - x->last_move.tv_sec >=
	    (answering ? req->answer_timeout_s : x->hc->stall_timeout_s)) {
		x->stalled = true;
		x->unanswered = answering;
		return 1;
	}
	return 0;
}

static int map_curl_error(CURLcode code, const struct xfer *x)
{
	/* The read callback's abort shows as ABORTED_BY_CALLBACK too. */
	if (x->read_err)
		return x->read_err;
	if (x->stalled)
		return -ETIMEDOUT;
	switch (code) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_ABORTED_BY_CALLBACK:
		return -ECANCELED;
	case CURLE_WRITE_ERROR:
		if (x->body_too_big)
			return -EMSGSIZE;
		return x->headers_too_big ? -E2BIG : -ENOMEM;
	case CURLE_READ_ERROR:
		return -EIO;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		return -EKEYREJECTED;
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EPROTO;
	default:
		return -EIO;
	}
}

/* Whether url's origin is the one the token belongs to. */
static bool wants_token(const struct tus_http_curl *hc, const char *url)
{
	char origin[512];

	return hc->token_header &&
	       tus_url_origin(url, origin, sizeof(origin)) == 0 &&
	       strcmp(origin, hc->auth_origin) == 0;
}

static struct curl_slist *build_headers(const struct tus_http_curl *hc,
					const struct tus_http_request *req,
					bool has_body, uint64_t body_len)
{
	struct curl_slist *list = NULL, *tmp;
	const char *expect = (has_body && body_len >= EXPECT_THRESHOLD)
				 ? "Expect: 100-continue"
				 : "Expect:";

	for (const char *const *h = req->headers; h && *h; h++) {
		tmp = curl_slist_append(list, *h);
		if (!tmp)
			goto fail;
		list = tmp;
	}
	tmp = curl_slist_append(list, expect);
	if (!tmp)
		goto fail;
	list = tmp;
	if (wants_token(hc, req->url)) {
		tmp = curl_slist_append(list, hc->token_header);
		if (!tmp)
			goto fail;
		list = tmp;
	}
	return list;
fail:
	curl_slist_free_all(list);
	return NULL;
}

static void set_body(CURL *easy, const struct tus_http_request *req,
		     struct xfer *x)
{
	uint64_t len = req->body ? req->body->length : 0;

	curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(easy, CURLOPT_UPLOAD_BUFFERSIZE,
			 (long)UPLOAD_BUFFER_SIZE);
	if (req->body) {
		curl_easy_setopt(easy, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(easy, CURLOPT_READDATA, x);
		curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(easy, CURLOPT_SEEKDATA, x);
	}
}

static int curl_perform(struct tus_http *h, const struct tus_http_request *req,
			struct tus_http_response *resp)
{
	struct tus_http_curl *hc = (struct tus_http_curl *)h;
	CURL *easy = hc->easy;
	struct xfer x = {.hc = hc, .req = req, .resp = resp};
	char errbuf[CURL_ERROR_SIZE] = "";
	bool is_head = strcmp(req->method, "HEAD") == 0;
	/* POST and PATCH always carry a Content-Length, if only of 0. */
	bool has_body = req->body || strcmp(req->method, "POST") == 0 ||
			strcmp(req->method, "PATCH") == 0;
	struct curl_slist *headers;
	CURLcode code;
	int rc = 0;

	memset(resp, 0, sizeof(*resp));
	headers =
	    build_headers(hc, req, has_body, req->body ? req->body->length : 0);
	if (!headers)
		return -ENOMEM;

	curl_easy_reset(easy);
	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, hc->connect_timeout_s);
	/* on_progress alone watches a request whose answer may be slow. */
	if (req->answer_timeout_s == 0) {
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT,
				 (long)TUS_HTTP_LOW_SPEED);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME,
				 hc->stall_timeout_s);
	}
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &x);
	if (hc->cafile)
		curl_easy_setopt(easy, CURLOPT_CAINFO, hc->cafile);
	if (hc->insecure) {
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (is_head)
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	else if (has_body)
		set_body(easy, req, &x);
	if (!is_head)
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);

	code = curl_easy_perform(easy);
	if (code == CURLE_OK) {
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &resp->status);
	} else {
		rc = map_curl_error(code, &x);
		if (x.unanswered)
			snprintf(resp->error, sizeof(resp->error),
				 "no answer %ld s after the last byte",
				 req->answer_timeout_s);
		else if (x.stalled)
			snprintf(resp->error, sizeof(resp->error),
				 "stalled: no progress for %ld s",
				 hc->stall_timeout_s);
		else if (x.body_too_big)
			snprintf(resp->error, sizeof(resp->error),
				 "answer larger than %zu bytes",
				 req->max_body ? req->max_body
					       : (size_t)TUS_HTTP_MAX_DRAIN);
		else if (x.headers_too_big)
			snprintf(resp->error, sizeof(resp->error),
				 "answer headers larger than %d bytes",
				 TUS_HTTP_MAX_HEADERS);
		else
			snprintf(resp->error, sizeof(resp->error), "%s",
				 errbuf[0] ? errbuf : curl_easy_strerror(code));
	}
	/* The slist and error buffer die with this call; unhook them. */
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(headers);
	return rc;
}

static void curl_destroy(struct tus_http *h)
{
	struct tus_http_curl *hc = (struct tus_http_curl *)h;

	curl_easy_cleanup(hc->easy);
	if (hc->token_header) {
		explicit_bzero(hc->token_header, strlen(hc->token_header));
		free(hc->token_header);
	}
	free(hc->auth_origin);
	free(hc->cafile);
	free(hc);
}

static const struct tus_http_ops curl_ops = {
    .perform = curl_perform,
    .destroy = curl_destroy,
};

struct tus_http *tus_http_curl_create(const struct tus_http_curl_config *cfg)
{
	struct tus_http_curl *hc = calloc(1, sizeof(*hc));

	if (!hc)
		return NULL;
	hc->base.ops = &curl_ops;
	hc->easy = curl_easy_init();
	hc->insecure = cfg->insecure;
	hc->connect_timeout_s = cfg->connect_timeout_s;
	hc->stall_timeout_s = cfg->stall_timeout_s;
	hc->abort_all = cfg->abort_all;
	if (!hc->easy)
		goto fail;
	if (cfg->token && *cfg->token) {
		if (asprintf(&hc->token_header, "Authorization: Bearer %s",
			     cfg->token) < 0) {
			hc->token_header = NULL;
			goto fail;
		}
		hc->auth_origin = strdup(cfg->auth_origin);
		if (!hc->auth_origin)
			goto fail;
	}
	if (cfg->cafile) {
		hc->cafile = strdup(cfg->cafile);
		if (!hc->cafile)
			goto fail;
	}
	return &hc->base;
fail:
	curl_destroy(&hc->base);
	return NULL;
}
