/*
 * Chunk planning: given what is spooled and what the server has confirmed,
 * the next TUS request for one file. A pure function, so every boundary
 * (empty, one byte, exactly a chunk, a chunk and one) is unit-tested
 * without a server.
 */
#ifndef TUSFS_PLAN_H
#define TUSFS_PLAN_H

#include <stdbool.h>
#include <stdint.h>

struct plan_input {
	/* The upload exists on the server (its URL is known). */
	bool created;
	/* No writer is open: size is final. */
	bool sealed;
	/* Upload-Length the server was told, or TUS_LENGTH_UNKNOWN. */
	int64_t declared_length;
	/* Bytes in the spool. */
	uint64_t size;
	/* Bytes the server confirmed. */
	uint64_t offset;
	/* fsync asks for this many bytes to be confirmed (0: nobody asks). */
	uint64_t sync_target;
	uint64_t chunk_size;
	/* enum tus_extensions offered by the server. */
	unsigned extensions;
};

enum plan_action {
	/* Nothing to send until more is written, closed or synced. */
	PLAN_WAIT,
	/* The server has every byte and the length (or the file is empty). */
	PLAN_DONE,
	/* POST, bare: the bytes follow in PATCHes. */
	PLAN_CREATE,
	/* PATCH body_len bytes at offset; final when they complete it. */
	PLAN_PATCH,
	/* The server's copy can no longer become the file: start over. */
	PLAN_RESTART,
};

struct plan_step {
	enum plan_action action;
	uint64_t offset;
	uint64_t body_len;
	/* Upload-Length to send with this request, or TUS_LENGTH_UNKNOWN. */
	int64_t length;
	/* This request carries the upload's last byte: the server completes
	 * the upload with it (and may hand it to its service). */
	bool final;
};

struct plan_step plan_next(const struct plan_input *in);

#endif
