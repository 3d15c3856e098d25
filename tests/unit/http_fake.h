/*
 * A scripted HTTP transport for unit tests: it answers each request with
 * the next canned response and records what was asked (method, URL,
 * headers, body bytes), so tests can assert the exact TUS requests.
 */
#ifndef TUSFS_HTTP_FAKE_H
#define TUSFS_HTTP_FAKE_H

#include "tus/http.h"

#define FAKE_MAX 16

struct fake_reply {
	/* < 0: perform fails with this -errno; else the HTTP status. */
	long status;
	/* "Name: value\r\n" lines. */
	const char *headers;
	const char *body;
};

struct fake_request {
	char method[16];
	char url[512];
	char headers[2048];
	uint64_t body_len;
	char body[256];
};

struct http_fake {
	struct tus_http base;
	struct fake_reply replies[FAKE_MAX];
	int nreplies;
	struct fake_request requests[FAKE_MAX];
	int nrequests;
};

void fake_init(struct http_fake *f);
void fake_reply(struct http_fake *f, long status, const char *headers,
		const char *body);
/* Whether request i carried the header line (exact "Name: value"). */
int fake_has_header(const struct http_fake *f, int i, const char *line);

#endif
