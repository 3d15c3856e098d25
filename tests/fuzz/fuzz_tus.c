/*
 * libFuzzer target for everything the TUS client reads from a server: the
 * input is one answer (a status and a header block, also used as the body)
 * handed through a one-shot transport to OPTIONS, POST, PATCH, HEAD or
 * DELETE, and its text is also fed straight to the header parsers. Besides
 * the sanitizers' reports it checks the promises the engine relies on: an
 * accepted Location is absolute, short and free of control characters and
 * spaces; an accepted offset moves forward by no more than was sent; a
 * status message is one printable line; tus_parse_u64 agrees with strtoull
 * on strict decimals.
 *
 * Run with scripts/fuzz.sh.
 */
#include "tusfs_setup.h"
#include "fuzz.h"
#include "tus/tus.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ENDPOINT "http://127.0.0.1:1080/files/"
#define SENT	 1000
#define START	 5000

/* A transport that answers once with status and text as headers and body. */
struct answer {
	struct tus_http http;
	long status;
	const char *text;
	size_t len;
};

static int answer_perform(struct tus_http *h,
			  const struct tus_http_request *req,
			  struct tus_http_response *resp)
{
	const struct answer *a = (const struct answer *)h;

	(void)req;
	memset(resp, 0, sizeof(*resp));
	resp->status = a->status;
	resp->headers = strndup(a->text, a->len);
	resp->body = malloc(a->len + 1);
	if (!resp->headers || !resp->body) {
		tus_http_response_clear(resp);
		return -ENOMEM;
	}
	memcpy(resp->body, a->text, a->len);
	resp->body[a->len] = '\0';
	resp->headers_len = strlen(resp->headers);
	resp->body_len = a->len;
	return 0;
}

static void answer_destroy(struct tus_http *h)
{
	(void)h;
}

static const struct tus_http_ops answer_ops = {answer_perform, answer_destroy};

static ssize_t no_read(void *arg, char *buf, size_t n, uint64_t off)
{
	(void)arg, (void)buf, (void)n, (void)off;
	return -EIO;
}

static bool clean(const char *s, bool spaces)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f ||
		    (!spaces && *s == ' '))
			return false;
	return true;
}

static void check_url(const char *url)
{
	check(url && strlen(url) <= TUS_MAX_URL && clean(url, false));
	check(strncmp(url, "http://", 7) == 0 ||
	      strncmp(url, "https://", 8) == 0);
}

static void exchange(unsigned op, struct tus_http *h)
{
	struct tus_client *c;
	struct tus_status st;
	struct tus_http_body body = {no_read, NULL, SENT};
	enum tus_outcome o = TUS_OK;
	int err;

	c = tus_client_create(h, ENDPOINT, &err);
	if (!c)
		return;
	memset(&st, 0, sizeof(st));
	switch (op % 5) {
	case 0: {
		struct tus_server srv;

		o = tus_discover(c, &srv, &st);
		check(o != TUS_OK || (srv.extensions & TUS_EXT_CREATION));
		check(o != TUS_GONE && o != TUS_CONFLICT);
		break;
	}
	case 1: {
		struct tus_create_req req = {
		    .length = SENT, .metadata = "filename YQ==", .body = &body};
		char *url = NULL;
		uint64_t off = UINT64_MAX;

		o = tus_create(c, &req, &url, &off, &st);
		if (o == TUS_OK) {
			check_url(url);
			check(off <= SENT);
		} else {
			check(!url);
		}
		free(url);
		break;
	}
	case 2: {
		struct tus_patch_req req = {.url = ENDPOINT "x",
					    .offset = START,
					    .body = &body,
					    .length = TUS_LENGTH_UNKNOWN};
		uint64_t off = 0;

		o = tus_patch(c, &req, &off, &st);
		check(o != TUS_OK || (off >= START && off <= START + SENT));
		break;
	}
	case 3: {
		uint64_t off;
		int64_t len = 0;

		o = tus_head(c, ENDPOINT "x", &off, &len, &st);
		check(o != TUS_OK || len >= 0 || len == TUS_LENGTH_UNKNOWN);
		break;
	}
	default:
		o = tus_terminate(c, ENDPOINT "x", &st);
		break;
	}
	check(memchr(st.message, '\0', sizeof(st.message)) != NULL);
	check(clean(st.message, true));
	check(o == TUS_OK || st.message[0]);
	check(st.retry_after >= -1 && st.retry_after <= TUS_RETRY_AFTER_MAX);
	tus_client_free(c);
}

/*
 * The reference: a strict decimal is digits only, in range. Anything else
 * is refused and leaves the output alone (a long digit run before a bad
 * byte may be refused as out of range first).
 */
static void check_u64(const char *s)
{
	uint64_t v = 7;
	int rc = tus_parse_u64(s, &v);
	bool digits = *s && strspn(s, "0123456789") == strlen(s);

	if (!digits) {
		check((rc == -EINVAL || rc == -ERANGE) && v == 7);
	} else {
		unsigned long long ref;

		errno = 0;
		ref = strtoull(s, NULL, 10);
		check(errno == ERANGE ? rc == -ERANGE : rc == 0 && v == ref);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct answer a = {{&answer_ops}, 0, NULL, 0};
	char *text, *url = NULL;
	int rc;

	if (size < 3)
		return 0;
	/* Mostly the statuses a server sends, sometimes anything at all. */
	a.status = data[1] & 0x80 ? (long)(data[1] << 8 | data[2]) - 0x8000
				  : 100 + (data[1] << 8 | data[2]) % 500;
	a.text = (const char *)data + 3;
	a.len = size - 3;
	exchange(data[0], &a.http);

	text = strndup(a.text, a.len);
	if (!text)
		return 0;
	check_u64(text);
	check(tus_parse_extensions(text) < TUS_EXT_CONCATENATION << 1);
	rc = tus_resolve_location(ENDPOINT, text, &url);
	check(rc == 0 || (rc == -EPROTO && !url) || rc == -ENOMEM);
	if (rc == 0)
		check_url(url);
	free(url);
	free(text);
	return 0;
}
