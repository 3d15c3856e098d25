/*
 * tus-upload: libtus's example client. Uploads a file to a TUS 1.0.0
 * server in chunks, or continues an interrupted upload from the offset the
 * server holds. It shows the whole life of an upload through the public
 * API: a transport, a client, creation, PATCH, HEAD, and what each
 * tus_outcome asks the caller to do. It builds against an installed libtus
 * with pkg-config alone:
 *
 *   cc -o tus-upload tus_upload.c $(pkg-config --cflags --libs tus)
 *
 * usage: tus-upload [--chunk BYTES] [--retries N] ENDPOINT FILE
 *        tus-upload [--chunk BYTES] [--retries N] --resume URL FILE
 *
 * The upload URL is printed on its own line as soon as the server made it,
 * so a run that fails (exit 1) can be continued with --resume. Exit 2:
 * bad usage.
 */
#define _GNU_SOURCE
#include <tus/curl.h>
#include <tus/tus.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CHUNK (50L * 1024 * 1024)

struct upload {
	struct tus_client *tus;
	const char *url;
	int fd;
	uint64_t size;
	uint64_t chunk;
	int retries;
};

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: tus-upload [--chunk BYTES] [--retries N] ENDPOINT FILE\n"
	    "       tus-upload [--chunk BYTES] [--retries N] --resume URL "
	    "FILE\n");
	exit(2);
}

static int fail(const char *what, const struct tus_status *st)
{
	fprintf(stderr, "tus-upload: %s: %s\n", what, st->message);
	return 1;
}

/* Creates the upload with a bare POST and prints its URL. */
static int create(struct upload *u, const char *path, char **url)
{
	struct tus_status st;
	struct tus_server srv;
	uint64_t offset;
	char *name = strdup(path);
	struct tus_meta_pair meta[] = {
	    {"filename", NULL, 0},
	    {"filetype", "application/octet-stream",
	     strlen("application/octet-stream")},
	};
	struct tus_create_req req = {.length = (int64_t)u->size};
	enum tus_outcome o;

	if (!name)
		return 1;
	meta[0].value = basename(name);
	meta[0].vlen = strlen(meta[0].value);
	req.metadata = tus_metadata_encode(meta, 2);
	free(name);
	if (!req.metadata)
		return 1;
	o = tus_discover(u->tus, &srv, &st);
	if (o == TUS_OK && !(srv.extensions & TUS_EXT_CREATION)) {
		fprintf(stderr,
			"tus-upload: the server cannot create uploads\n");
		o = TUS_FATAL;
	} else if (o == TUS_OK) {
		o = tus_create(u->tus, &req, url, &offset, &st);
		if (o != TUS_OK)
			fail("POST", &st);
	} else {
		fail("OPTIONS", &st);
	}
	free((char *)req.metadata);
	if (o != TUS_OK)
		return 1;
	printf("%s\n", *url);
	fflush(stdout);
	return 0;
}

/* Reads the server's offset, checking the upload is this file's. */
static int server_offset(struct upload *u, uint64_t *offset)
{
	struct tus_status st;
	int64_t length;

	if (tus_head(u->tus, u->url, offset, &length, &st) != TUS_OK)
		return fail("HEAD", &st);
	if (length != TUS_LENGTH_UNKNOWN && (uint64_t)length != u->size) {
		fprintf(stderr,
			"tus-upload: the upload is %lld bytes long, the file "
			"%llu\n",
			(long long)length, (unsigned long long)u->size);
		return 1;
	}
	return 0;
}

/*
 * PATCHes chunk after chunk from offset. A transient failure is retried
 * after the server's Retry-After or a doubling pause, from the offset HEAD
 * reports, since the server may have kept part of a broken request.
 */
static int send_from(struct upload *u, uint64_t offset)
{
	int tries = 0;
	unsigned pause = 1;

	while (offset < u->size) {
		uint64_t len = u->size - offset;
		struct tus_http_fd_source src = {.fd = u->fd, .base = offset};
		struct tus_http_body body = {.read = tus_http_fd_read,
					     .arg = &src};
		struct tus_patch_req req = {.url = u->url,
					    .offset = offset,
					    .body = &body,
					    .length = TUS_LENGTH_UNKNOWN};
		struct tus_status st;
		enum tus_outcome o;

		body.length = len < u->chunk ? len : u->chunk;
		o = tus_patch(u->tus, &req, &offset, &st);
		if (o == TUS_OK) {
			tries = 0;
			pause = 1;
			continue;
		}
		if (o != TUS_RETRY && o != TUS_CONFLICT)
			return fail("PATCH", &st);
		if (tries++ >= u->retries)
			return fail("PATCH, retries used up", &st);
		fprintf(stderr, "tus-upload: PATCH: %s; retrying\n",
			st.message);
		if (o == TUS_RETRY) {
			sleep(st.retry_after >= 0 ? (unsigned)st.retry_after
						  : pause);
			pause = pause < 32 ? pause * 2 : pause;
		}
		if (server_offset(u, &offset) != 0)
			return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct upload u = {.chunk = DEFAULT_CHUNK, .retries = 5, .fd = -1};
	struct tus_http_curl_config cfg = {.connect_timeout_s = 15,
					   .stall_timeout_s = 60};
	const char *resume = NULL;
	char *created = NULL;
	struct tus_http *http;
	struct stat sb;
	uint64_t offset = 0;
	int i, rc, err;

	for (i = 1; i < argc - 1 && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (strcmp(argv[i], "--chunk") == 0)
			u.chunk = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--retries") == 0)
			u.retries = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--resume") == 0)
			resume = argv[i + 1];
		else
			usage();
	}
	if (argc - i != (resume ? 1 : 2) || u.chunk == 0 || u.retries < 0)
		usage();
	u.fd = open(argv[argc - 1], O_RDONLY | O_CLOEXEC);
	if (u.fd < 0 || fstat(u.fd, &sb) < 0) {
		fprintf(stderr, "tus-upload: %s: %s\n", argv[argc - 1],
			strerror(errno));
		return 1;
	}
	u.size = (uint64_t)sb.st_size;
	http = tus_http_curl_create(&cfg);
	/* The endpoint only matters for creation; a resume has none. */
	u.tus = http ? tus_client_create(http, resume ? resume : argv[i], &err)
		     : NULL;
	if (!u.tus) {
		fprintf(stderr, "tus-upload: cannot make a client\n");
		return 1;
	}
	if (resume) {
		u.url = resume;
		rc = server_offset(&u, &offset);
	} else {
		rc = create(&u, argv[argc - 1], &created);
		u.url = created;
	}
	if (rc == 0)
		rc = send_from(&u, offset);
	free(created);
	tus_client_free(u.tus);
	tus_http_free(http);
	close(u.fd);
	return rc;
}
