/*
 * The TUS client against the scripted transport: the exact requests it
 * sends, and how it reads (and distrusts) what servers answer.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "http_fake.h"
#include "tus/tus.h"

#include <errno.h>

#define EP "http://h:1/uploads/files/"

static ssize_t mem_read(void *arg, char *buf, size_t n, uint64_t off)
{
	memcpy(buf, (const char *)arg + off, n);
	return (ssize_t)n;
}

static struct tus_client *client(struct http_fake *f)
{
	int err = 0;

	fake_init(f);
	return tus_client_create(&f->base, EP, &err);
}

TEST(parse_u64)
{
	uint64_t v;

	ASSERT_EQ(tus_parse_u64("0", &v), 0);
	ASSERT_EQ(v, 0);
	ASSERT_EQ(tus_parse_u64("18446744073709551615", &v), 0);
	ASSERT(v == UINT64_MAX);
	ASSERT_EQ(tus_parse_u64("18446744073709551616", &v), -ERANGE);
	ASSERT_EQ(tus_parse_u64("", &v), -EINVAL);
	ASSERT_EQ(tus_parse_u64("-1", &v), -EINVAL);
	ASSERT_EQ(tus_parse_u64(" 1", &v), -EINVAL);
	ASSERT_EQ(tus_parse_u64("12a", &v), -EINVAL);
}

TEST(parse_extensions)
{
	unsigned e = tus_parse_extensions(
	    "creation,creation-with-upload, creation-defer-length,"
	    "termination,expiration,concatenation-unfinished");

	ASSERT_EQ(e, TUS_EXT_CREATION | TUS_EXT_CREATION_WITH_UPLOAD |
			 TUS_EXT_CREATION_DEFER_LENGTH | TUS_EXT_TERMINATION |
			 TUS_EXT_EXPIRATION);
	ASSERT_EQ(tus_parse_extensions(""), 0);
	/* A prefix of a known name is not that name. */
	ASSERT_EQ(tus_parse_extensions("creation-with"), 0);
}

TEST(resolve_location)
{
	char *u = NULL;

	ASSERT_EQ(tus_resolve_location(EP, "http://o:2/x/abc", &u), 0);
	ASSERT_STREQ(u, "http://o:2/x/abc");
	free(u);
	ASSERT_EQ(tus_resolve_location(EP, "/uploads/files/abc", &u), 0);
	ASSERT_STREQ(u, "http://h:1/uploads/files/abc");
	free(u);
	ASSERT_EQ(tus_resolve_location(EP, "abc", &u), 0);
	ASSERT_STREQ(u, "http://h:1/uploads/files/abc");
	free(u);
	ASSERT_EQ(tus_resolve_location(EP, "", &u), -EPROTO);
	ASSERT_EQ(tus_resolve_location(EP, "/a\x01b", &u), -EPROTO);
	/* Found by fuzz_tus: any scheme libcurl knows was taken. */
	ASSERT_EQ(tus_resolve_location(EP, "file:///etc/passwd", &u), -EPROTO);
	ASSERT_EQ(tus_resolve_location(EP, "ftp://o/x", &u), -EPROTO);
	ASSERT_EQ(tus_resolve_location(EP, "HTTPS://o/x", &u), 0);
	ASSERT_STREQ(u, "https://o/x");
	free(u);
}

TEST(resolve_location_rejects_huge)
{
	char *big = malloc(TUS_MAX_URL + 2);
	char *u = NULL;

	memset(big, 'a', TUS_MAX_URL + 1);
	big[TUS_MAX_URL + 1] = '\0';
	ASSERT_EQ(tus_resolve_location(EP, big, &u), -EPROTO);
	free(big);
}

TEST(metadata_encoding)
{
	struct tus_meta_pair p[] = {
	    {"filename", "world_domination_plan.pdf", 25},
	    {"a", "1", 1},
	    {"b", "12", 2},
	    {"empty", "", 0},
	    {"bin", "\xff\n,", 3},
	};
	char *m = tus_metadata_encode(p, 5);

	ASSERT_STREQ(m, "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,a MQ==,"
			"b MTI=,empty ,bin /wos");
	free(m);
}

TEST(classify)
{
	ASSERT_EQ(tus_classify(204), TUS_OK);
	ASSERT_EQ(tus_classify(409), TUS_CONFLICT);
	ASSERT_EQ(tus_classify(404), TUS_GONE);
	ASSERT_EQ(tus_classify(410), TUS_GONE);
	ASSERT_EQ(tus_classify(423), TUS_RETRY);
	ASSERT_EQ(tus_classify(429), TUS_RETRY);
	ASSERT_EQ(tus_classify(503), TUS_RETRY);
	ASSERT_EQ(tus_classify(400), TUS_FATAL);
	ASSERT_EQ(tus_classify(401), TUS_FATAL);
	ASSERT_EQ(tus_classify(413), TUS_FATAL);
	ASSERT_EQ(tus_classify(415), TUS_FATAL);
	ASSERT_EQ(tus_classify(302), TUS_FATAL);
}

TEST(discover)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	struct tus_server srv;
	struct tus_status st;

	fake_reply(&f, 204,
		   "Tus-Resumable: 1.0.0\r\nTus-Version: 1.0.0\r\n"
		   "Tus-Extension: creation,creation-defer-length\r\n"
		   "Tus-Max-Size: 5368709120\r\n",
		   NULL);
	ASSERT_EQ(tus_discover(c, &srv, &st), TUS_OK);
	ASSERT_STREQ(f.requests[0].method, "OPTIONS");
	ASSERT_STREQ(f.requests[0].url, EP);
	/* The spec says OPTIONS should not carry Tus-Resumable. */
	ASSERT(!strstr(f.requests[0].headers, "Tus-Resumable"));
	ASSERT_EQ(srv.extensions,
		  TUS_EXT_CREATION | TUS_EXT_CREATION_DEFER_LENGTH);
	ASSERT(srv.max_size == 5368709120ULL);
	tus_client_free(c);
}

TEST(discover_refusals)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	struct tus_server srv;
	struct tus_status st;

	fake_reply(&f, 200, "Content-Type: text/html\r\n", "<html>");
	fake_reply(&f, 401, "WWW-Authenticate: Bearer\r\n", "{}");
	fake_reply(&f, -ECONNREFUSED, NULL, NULL);
	fake_reply(&f, 204, "Tus-Version: 0.2.2\r\n", NULL);
	fake_reply(&f, 204, "Tus-Version: 1.0.0\r\n", NULL);
	ASSERT_EQ(tus_discover(c, &srv, &st), TUS_FATAL);
	ASSERT(strstr(st.message, "not a TUS server"));
	ASSERT_EQ(tus_discover(c, &srv, &st), TUS_FATAL);
	ASSERT(strstr(st.message, "credentials"));
	ASSERT_EQ(tus_discover(c, &srv, &st), TUS_RETRY);
	ASSERT_EQ(st.err, -ECONNREFUSED);
	ASSERT_EQ(tus_discover(c, &srv, &st), TUS_FATAL);
	ASSERT(strstr(st.message, "0.2.2"));
	/* No creation extension: nothing could ever be uploaded. */
	ASSERT_EQ(tus_discover(c, &srv, &st), TUS_FATAL);
	tus_client_free(c);
}

TEST(create_deferred)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	struct tus_create_req req = {.length = TUS_LENGTH_UNKNOWN,
				     .metadata = "filename YS53YXY="};
	struct tus_status st;
	uint64_t off = 99;
	char *url = NULL;

	fake_reply(&f, 201, "Location: /uploads/files/abc\r\n", NULL);
	ASSERT_EQ(tus_create(c, &req, &url, &off, &st), TUS_OK);
	ASSERT_STREQ(url, "http://h:1/uploads/files/abc");
	ASSERT_EQ(off, 0);
	ASSERT_STREQ(f.requests[0].method, "POST");
	ASSERT(fake_has_header(&f, 0, "Tus-Resumable: 1.0.0"));
	ASSERT(fake_has_header(&f, 0, "Upload-Defer-Length: 1"));
	ASSERT(fake_has_header(&f, 0, "Upload-Metadata: filename YS53YXY="));
	ASSERT(!strstr(f.requests[0].headers, "Upload-Length"));
	ASSERT(!strstr(f.requests[0].headers, "Content-Type"));
	free(url);
	tus_client_free(c);
}

TEST(create_with_upload)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	char data[] = "hello";
	struct tus_http_body body = {mem_read, data, 5};
	struct tus_create_req req = {.length = 5, .body = &body};
	struct tus_status st;
	uint64_t off = 0;
	char *url = NULL;

	fake_reply(
	    &f, 201,
	    "Location: http://h:1/uploads/files/x\r\nUpload-Offset: 5\r\n",
	    NULL);
	ASSERT_EQ(tus_create(c, &req, &url, &off, &st), TUS_OK);
	ASSERT_EQ(off, 5);
	ASSERT(fake_has_header(&f, 0, "Upload-Length: 5"));
	ASSERT(fake_has_header(
	    &f, 0, "Content-Type: application/offset+octet-stream"));
	ASSERT_EQ(f.requests[0].body_len, 5);
	ASSERT_STREQ(f.requests[0].body, "hello");
	free(url);
	tus_client_free(c);
}

TEST(create_bad_location)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	struct tus_create_req req = {.length = 5};
	struct tus_status st;
	uint64_t off;
	char *url = NULL;

	fake_reply(&f, 201, "X: y\r\n", NULL);
	fake_reply(&f, 201, "Location: \r\n", NULL);
	fake_reply(&f, 404, NULL, "no such route");
	ASSERT_EQ(tus_create(c, &req, &url, &off, &st), TUS_FATAL);
	ASSERT(url == NULL);
	ASSERT_EQ(tus_create(c, &req, &url, &off, &st), TUS_FATAL);
	/* A missing creation URL is final, not "start over". */
	ASSERT_EQ(tus_create(c, &req, &url, &off, &st), TUS_FATAL);
	ASSERT(strstr(st.message, "404"));
	ASSERT(strstr(st.message, "no such route"));
	tus_client_free(c);
}

TEST(patch_headers_and_offset)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	char data[] = "0123456789";
	struct tus_http_body body = {mem_read, data, 10};
	struct tus_patch_req req = {
	    .url = EP "abc", .offset = 100, .body = &body, .length = 110};
	struct tus_status st;
	uint64_t off = 0;

	fake_reply(&f, 204, "Upload-Offset: 110\r\n", NULL);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_OK);
	ASSERT_EQ(off, 110);
	ASSERT_STREQ(f.requests[0].method, "PATCH");
	ASSERT_STREQ(f.requests[0].url, EP "abc");
	ASSERT(fake_has_header(&f, 0, "Tus-Resumable: 1.0.0"));
	ASSERT(fake_has_header(
	    &f, 0, "Content-Type: application/offset+octet-stream"));
	ASSERT(fake_has_header(&f, 0, "Upload-Offset: 100"));
	ASSERT(fake_has_header(&f, 0, "Upload-Length: 110"));
	ASSERT_STREQ(f.requests[0].body, "0123456789");
	tus_client_free(c);
}

TEST(patch_partial_store_is_trusted)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	char data[] = "0123456789";
	struct tus_http_body body = {mem_read, data, 10};
	struct tus_patch_req req = {.url = EP "abc",
				    .offset = 0,
				    .body = &body,
				    .length = TUS_LENGTH_UNKNOWN};
	struct tus_status st;
	uint64_t off = 0;

	fake_reply(&f, 204, "Upload-Offset: 4\r\n", NULL);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_OK);
	ASSERT_EQ(off, 4);
	ASSERT(!strstr(f.requests[0].headers, "Upload-Length"));
	tus_client_free(c);
}

TEST(patch_distrusts_offsets)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	char data[] = "0123456789";
	struct tus_http_body body = {mem_read, data, 10};
	struct tus_patch_req req = {.url = EP "abc",
				    .offset = 100,
				    .body = &body,
				    .length = TUS_LENGTH_UNKNOWN};
	struct tus_status st;
	uint64_t off = 0;

	fake_reply(&f, 204, "Upload-Offset: 111\r\n", NULL); /* beyond sent */
	fake_reply(&f, 204, "Upload-Offset: 99\r\n", NULL);  /* backwards */
	fake_reply(&f, 204, "Upload-Offset: -5\r\n", NULL);
	fake_reply(&f, 204, "Upload-Offset: ten\r\n", NULL);
	fake_reply(&f, 204, "X: y\r\n", NULL);
	/* Quoted in the message: its escape must not reach a terminal. */
	fake_reply(&f, 204, "Upload-Offset: 1\x1b[2J\r\n", NULL);
	for (int i = 0; i < 6; i++) {
		ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_FATAL);
		ASSERT_EQ(st.err, -EPROTO);
	}
	ASSERT_STREQ(st.message, "PATCH: malformed Upload-Offset '1?[2J'");
	tus_client_free(c);
}

TEST(patch_outcomes)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	struct tus_patch_req req = {.url = EP "abc",
				    .length = TUS_LENGTH_UNKNOWN};
	struct tus_status st;
	uint64_t off;

	fake_reply(&f, 409, NULL, "Upload-Offset conflict");
	fake_reply(&f, 404, NULL, NULL);
	fake_reply(&f, 410, NULL, NULL);
	fake_reply(&f, 500, NULL, "boom");
	fake_reply(&f, 429, "Retry-After: 7\r\n", NULL);
	fake_reply(&f, -ECONNRESET, NULL, NULL);
	fake_reply(&f, -ECANCELED, NULL, NULL);
	fake_reply(&f, 413, NULL, "<html>Request\nEntity Too Large</html>");
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_CONFLICT);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_GONE);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_GONE);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_RETRY);
	ASSERT_EQ(st.http_status, 500);
	ASSERT_EQ(st.retry_after, -1);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_RETRY);
	ASSERT_EQ(st.retry_after, 7);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_RETRY);
	ASSERT_EQ(st.http_status, 0);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_CANCELED);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_FATAL);
	/* The server's words reach the message, on one line. */
	ASSERT_STREQ(st.message,
		     "PATCH: HTTP 413: <html>Request Entity Too Large</html>");
	/* An empty PATCH still says Content-Length: 0 (body of 0 bytes). */
	ASSERT_EQ(f.requests[0].body_len, 0);
	tus_client_free(c);
}

TEST(retry_after_is_capped_in_both_forms)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	struct tus_patch_req req = {.url = EP "abc",
				    .length = TUS_LENGTH_UNKNOWN};
	struct tus_status st;
	uint64_t off;

	fake_reply(&f, 503, "Retry-After: 9999999\r\n", NULL);
	fake_reply(&f, 503, "Retry-After: Fri, 31 Dec 2100 23:59:59 GMT\r\n",
		   NULL);
	fake_reply(&f, 503, "Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
		   NULL);
	fake_reply(&f, 503, "Retry-After: soon\r\n", NULL);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_RETRY);
	ASSERT_EQ(st.retry_after, TUS_RETRY_AFTER_MAX);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_RETRY);
	ASSERT_EQ(st.retry_after, TUS_RETRY_AFTER_MAX);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_RETRY);
	ASSERT_EQ(st.retry_after, 0);
	ASSERT_EQ(tus_patch(c, &req, &off, &st), TUS_RETRY);
	ASSERT_EQ(st.retry_after, -1);
	tus_client_free(c);
}

TEST(head)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	struct tus_status st;
	uint64_t off = 0;
	int64_t len = 0;

	fake_reply(&f, 200, "Upload-Offset: 42\r\nUpload-Length: 100\r\n",
		   NULL);
	fake_reply(&f, 200, "Upload-Offset: 7\r\nUpload-Defer-Length: 1\r\n",
		   NULL);
	fake_reply(&f, 403, NULL, NULL);
	fake_reply(&f, 200, "Upload-Length: 100\r\n", NULL);
	ASSERT_EQ(tus_head(c, EP "a", &off, &len, &st), TUS_OK);
	ASSERT_EQ(off, 42);
	ASSERT_EQ(len, 100);
	ASSERT_STREQ(f.requests[0].method, "HEAD");
	ASSERT(fake_has_header(&f, 0, "Tus-Resumable: 1.0.0"));
	ASSERT_EQ(tus_head(c, EP "a", &off, &len, &st), TUS_OK);
	ASSERT_EQ(off, 7);
	ASSERT_EQ(len, TUS_LENGTH_UNKNOWN);
	ASSERT_EQ(tus_head(c, EP "a", &off, &len, &st), TUS_GONE);
	ASSERT_EQ(tus_head(c, EP "a", &off, &len, &st), TUS_FATAL);
	tus_client_free(c);
}

TEST(terminate)
{
	struct http_fake f;
	struct tus_client *c = client(&f);
	struct tus_status st;

	fake_reply(&f, 204, NULL, NULL);
	fake_reply(&f, 404, NULL, NULL);
	fake_reply(&f, 423, NULL, NULL);
	ASSERT_EQ(tus_terminate(c, EP "a", &st), TUS_OK);
	ASSERT_STREQ(f.requests[0].method, "DELETE");
	ASSERT(fake_has_header(&f, 0, "Tus-Resumable: 1.0.0"));
	/* Already gone is as good as deleted. */
	ASSERT_EQ(tus_terminate(c, EP "a", &st), TUS_OK);
	ASSERT_EQ(tus_terminate(c, EP "a", &st), TUS_RETRY);
	tus_client_free(c);
}

TEST_MAIN
