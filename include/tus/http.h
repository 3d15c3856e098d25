/*
 * The HTTP transport contract: one request in, one response out. The TUS
 * client speaks only to this interface, so it runs unchanged over libcurl
 * (tus/curl.h) and over the scripted fake the unit tests use.
 *
 * Threading: a transport is used by one thread at a time.
 */
#ifndef TUS_HTTP_H
#define TUS_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Response headers and bodies are read into bounded buffers. */
#define TUS_HTTP_MAX_HEADERS (64 * 1024)
#define TUS_HTTP_MAX_BODY    (64 * 1024)
/* A kept-short answer's body is read and dropped up to this, then refused:
 * no TUS answer is that long, and one that never ends must not hold a
 * worker. */
#define TUS_HTTP_MAX_DRAIN (1024 * 1024)
/* Slower than this (bytes/s, either way) for stall_timeout: a slowloris
 * drip, abandoned and retried. */
#define TUS_HTTP_LOW_SPEED 1024

/*
 * A request body streamed from its source: read() fills buf with up to n
 * bytes starting at body offset off and returns how many it wrote, or
 * -errno. The transport never holds more than one buffer of it in memory.
 */
struct tus_http_body {
	ssize_t (*read)(void *arg, char *buf, size_t n, uint64_t off);
	void *arg;
	uint64_t length;
};

struct tus_http_request {
	const char *method;
	const char *url;
	/* "Name: value" lines, NULL-terminated; borrowed. */
	const char *const *headers;
	/* NULL: no body. Borrowed for the call. */
	const struct tus_http_body *body;
	/* When set and nonzero, the transfer is aborted (-ECANCELED). */
	const atomic_int *cancel;
	/*
	 * 0: keep the body's first TUS_HTTP_MAX_BODY bytes and drop the rest
	 * (TUS answers, read only for a message). Else the whole body is
	 * wanted, and one longer than this aborts the transfer with -EMSGSIZE.
	 */
	size_t max_body;
	/*
	 * Seconds the answer may take once the whole body is sent (the
	 * server is working, not stalled); 0: the stall timeout applies
	 * throughout. Passing it aborts the transfer with -ETIMEDOUT.
	 */
	long answer_timeout_s;
};

/*
 * Filled by perform. headers holds the final response's header block
 * ("Name: value\r\n" lines); body its bytes, as max_body says. Both are
 * NUL-terminated and owned by the response: release with
 * tus_http_response_clear().
 */
struct tus_http_response {
	long status;
	char *headers;
	size_t headers_len;
	char *body;
	size_t body_len;
	/* Transport's words on a failure (no secrets), else "". */
	char error[256];
};

struct tus_http;

struct tus_http_ops {
	/*
	 * Performs req. Returns 0 when a response arrived (any status), else
	 * -errno: -ECONNREFUSED, -ETIMEDOUT, -ECONNRESET, -ECANCELED, -E2BIG
	 * (headers over TUS_HTTP_MAX_HEADERS), -EMSGSIZE (body over max_body),
	 * -EPROTO, -EIO. resp->error says
	 * more on failure.
	 */
	int (*perform)(struct tus_http *h, const struct tus_http_request *req,
		       struct tus_http_response *resp);
	void (*destroy)(struct tus_http *h);
};

/* Every transport embeds this first. */
struct tus_http {
	const struct tus_http_ops *ops;
};

static inline int tus_http_perform(struct tus_http *h,
				   const struct tus_http_request *req,
				   struct tus_http_response *resp)
{
	return h->ops->perform(h, req, resp);
}

/* Destroys the transport; NULL is a no-op. */
static inline void tus_http_free(struct tus_http *h)
{
	if (h)
		h->ops->destroy(h);
}

void tus_http_response_clear(struct tus_http_response *resp);

/*
 * Finds header name (case-insensitive) in resp and copies its value, trimmed,
 * into out. Returns the value's length, -ENOENT if absent, -E2BIG if it does
 * not fit in outsz (NUL included).
 */
int tus_http_response_header(const struct tus_http_response *resp,
			     const char *name, char *out, size_t outsz);

/* A tus_http_body reading from a file descriptor at a base offset. */
struct tus_http_fd_source {
	int fd;
	uint64_t base;
};
ssize_t tus_http_fd_read(void *arg, char *buf, size_t n, uint64_t off);

#endif
