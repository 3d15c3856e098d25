/*
 * The scripted fake transport (see http_fake.h).
 */
#include "tusfs_setup.h"
#include "http_fake.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fake_perform(struct tus_http *h, const struct tus_http_request *req,
			struct tus_http_response *resp)
{
	struct http_fake *f = (struct http_fake *)h;
	struct fake_request *r;
	const struct fake_reply *rep;
	size_t o = 0;

	memset(resp, 0, sizeof(*resp));
	if (f->nrequests >= FAKE_MAX || f->nrequests >= f->nreplies)
		return -EIO;
	r = &f->requests[f->nrequests];
	rep = &f->replies[f->nrequests++];
	snprintf(r->method, sizeof(r->method), "%s", req->method);
	snprintf(r->url, sizeof(r->url), "%s", req->url);
	for (const char *const *p = req->headers; p && *p; p++)
		o += (size_t)snprintf(r->headers + o, sizeof(r->headers) - o,
				      "%s\n", *p);
	if (req->body) {
		r->body_len = req->body->length;
		for (uint64_t off = 0; off < req->body->length;) {
			char buf[64];
			size_t want = sizeof(buf);
			ssize_t n;

			if (want > req->body->length - off)
				want = (size_t)(req->body->length - off);
			n = req->body->read(req->body->arg, buf, want, off);
			if (n <= 0)
				return -EIO;
			if (off < sizeof(r->body) - 1)
				memcpy(r->body + off, buf,
				       off + (size_t)n < sizeof(r->body) - 1
					   ? (size_t)n
					   : sizeof(r->body) - 1 - off);
			off += (uint64_t)n;
		}
	}
	if (rep->status < 0) {
		snprintf(resp->error, sizeof(resp->error), "scripted failure");
		return (int)rep->status;
	}
	resp->status = rep->status;
	resp->headers = strdup(rep->headers ? rep->headers : "");
	resp->headers_len = strlen(resp->headers);
	resp->body = strdup(rep->body ? rep->body : "");
	resp->body_len = strlen(resp->body);
	return 0;
}

static void fake_destroy(struct tus_http *h)
{
	(void)h;
}

static const struct tus_http_ops fake_ops = {
    .perform = fake_perform,
    .destroy = fake_destroy,
};

void fake_init(struct http_fake *f)
{
	memset(f, 0, sizeof(*f));
	f->base.ops = &fake_ops;
}

void fake_reply(struct http_fake *f, long status, const char *headers,
		const char *body)
{
	f->replies[f->nreplies++] = (struct fake_reply){status, headers, body};
}

int fake_has_header(const struct http_fake *f, int i, const char *line)
{
	const char *h = f->requests[i].headers;
	size_t n = strlen(line);

	for (const char *p = strstr(h, line); p; p = strstr(p + 1, line))
		if ((p == h || p[-1] == '\n') && p[n] == '\n')
			return 1;
	return 0;
}
