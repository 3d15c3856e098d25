/*
 * A TUS 1.0.0 client: discovery, creation (plain, with upload, deferred
 * length), PATCH, HEAD and termination over an http transport. It knows the
 * protocol and nothing of files or FUSE, so it can be used on its own.
 *
 * Every call returns a tus_outcome that tells the caller what to do next
 * (go on, retry later, re-read the offset, start over, give up), with the
 * details in a tus_status. Threading: a client is used by one thread at a
 * time; use one client per thread.
 */
#ifndef TUS_TUS_H
#define TUS_TUS_H

#include "tus/http.h"

#include <stdint.h>

/* Longest Location tusfs accepts from a server. */
#define TUS_MAX_URL 8192

/* Longest wait a Retry-After may ask for, in seconds. */
#define TUS_RETRY_AFTER_MAX 86400

/* Extensions a server may offer in Tus-Extension. */
enum tus_extensions {
	TUS_EXT_CREATION = 1 << 0,
	TUS_EXT_CREATION_WITH_UPLOAD = 1 << 1,
	TUS_EXT_CREATION_DEFER_LENGTH = 1 << 2,
	TUS_EXT_TERMINATION = 1 << 3,
	TUS_EXT_EXPIRATION = 1 << 4,
	TUS_EXT_CHECKSUM = 1 << 5,
	TUS_EXT_CONCATENATION = 1 << 6,
};

/* What OPTIONS told about the server. */
struct tus_server {
	unsigned extensions;
	/* Tus-Max-Size, or 0 when the server sets none. */
	uint64_t max_size;
};

enum tus_outcome {
	TUS_OK = 0,
	/* Transient: network failure, 5xx, 423, 429. Back off, then retry. */
	TUS_RETRY,
	/* 409: the offset differs from the server's; HEAD and go on. */
	TUS_CONFLICT,
	/* 404/410: the upload is gone or expired; start a new one. */
	TUS_GONE,
	/* Permanent refusal (4xx) or a malformed answer; do not retry. */
	TUS_FATAL,
	/* Aborted through the request's cancel flag. */
	TUS_CANCELED,
};

/* Details of the last call. */
struct tus_status {
	/* HTTP status, 0 when no response arrived. */
	long http_status;
	/* -errno from the transport or the parser, 0 if none. */
	int err;
	/* Seconds from Retry-After (at most TUS_RETRY_AFTER_MAX), -1 if
	 * absent. */
	long retry_after;
	/* A one-line description for logs and status files. */
	char message[256];
};

/* Upload length placeholder meaning "deferred" / "not sent". */
#define TUS_LENGTH_UNKNOWN (-1)

struct tus_create_req {
	/* Total length, or TUS_LENGTH_UNKNOWN for Upload-Defer-Length: 1. */
	int64_t length;
	/* Encoded Upload-Metadata value (tus_metadata_encode); may be NULL. */
	const char *metadata;
	/* First bytes for creation-with-upload; NULL for a bare POST. */
	const struct tus_http_body *body;
	const atomic_int *cancel;
};

struct tus_patch_req {
	const char *url;
	uint64_t offset;
	const struct tus_http_body *body;
	/* Sent as Upload-Length when not TUS_LENGTH_UNKNOWN. */
	int64_t length;
	const atomic_int *cancel;
	/* Seconds to wait for the answer once the whole body is sent; 0: the
	 * transport's stall timeout. A server may do real work before it
	 * answers the request that completes an upload. */
	long answer_timeout_s;
};

struct tus_client;

/*
 * Creates a client for endpoint (the creation URL) over transport, which the
 * client borrows (the caller frees it after the client). NULL with *err set
 * on failure.
 */
struct tus_client *tus_client_create(struct tus_http *transport,
				     const char *endpoint, int *err);
void tus_client_free(struct tus_client *c);

/* OPTIONS: fills *srv. A response without Tus-Resumable/Tus-Version is FATAL.
 */
enum tus_outcome tus_discover(struct tus_client *c, struct tus_server *srv,
			      struct tus_status *st);

/*
 * POST: creates an upload. On TUS_OK *url is the absolute upload URL
 * (caller frees) and *offset the server's offset after any body sent.
 */
enum tus_outcome tus_create(struct tus_client *c,
			    const struct tus_create_req *req, char **url,
			    uint64_t *offset, struct tus_status *st);

/* PATCH: on TUS_OK *offset is the server's new offset. */
enum tus_outcome tus_patch(struct tus_client *c,
			   const struct tus_patch_req *req, uint64_t *offset,
			   struct tus_status *st);

/*
 * HEAD: *offset is the server's offset; *length its Upload-Length or
 * TUS_LENGTH_UNKNOWN while deferred.
 */
enum tus_outcome tus_head(struct tus_client *c, const char *url,
			  uint64_t *offset, int64_t *length,
			  struct tus_status *st);

/* DELETE (termination). */
enum tus_outcome tus_terminate(struct tus_client *c, const char *url,
			       struct tus_status *st);

/* Pure helpers, exposed for tests and reuse. */

/* Parses a strict decimal u64 (no sign, no space). 0 or -EINVAL/-ERANGE. */
int tus_parse_u64(const char *s, uint64_t *out);

/* Parses a Tus-Extension list into enum tus_extensions flags. */
unsigned tus_parse_extensions(const char *list);

/*
 * Resolves a Location against base (absolute or relative, RFC 3986).
 * Returns 0 and *out (caller frees), or -EPROTO for an empty, oversized or
 * control-character Location or one that is not http(s), -ENOMEM.
 */
int tus_resolve_location(const char *base, const char *location, char **out);

/* One Upload-Metadata pair; value may hold any bytes (vlen of them). */
struct tus_meta_pair {
	const char *key;
	const char *value;
	size_t vlen;
};

/*
 * Encodes pairs as "key base64(value),..." (standard padded base64).
 * Returns a malloc'd string, or NULL on ENOMEM.
 */
char *tus_metadata_encode(const struct tus_meta_pair *pairs, size_t n);

/* What an HTTP status means for the caller of a TUS request. */
enum tus_outcome tus_classify(long http_status);

/*
 * Writes "scheme://host:port" of url into out (port always explicit).
 * Returns 0, or -EINVAL for a URL that cannot be parsed.
 */
int tus_url_origin(const char *url, char *out, size_t outsz);

#endif
