/*
 * The chunk planner. Policy in one place: every upload is created bare and
 * then sent in chunk_size PATCHes (so no request body exceeds a chunk,
 * whatever proxy sits in front), and the last byte always goes in a PATCH:
 * tuspyserver runs its completion hook, which is how the service starts a
 * transcription, only when a PATCH completes an upload (BACKEND.md 1b). An
 * open file is created with a deferred length once a whole chunk is
 * spooled, and the length goes with the first PATCH after the last close,
 * which may carry no bytes at all when the file ends on a chunk boundary.
 */
#include "tusfs_setup.h"
#include "core/plan.h"
#include "tus/tus.h"

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static struct plan_step plan_create(const struct plan_input *in)
{
	struct plan_step s = {.action = PLAN_WAIT,
			      .length = TUS_LENGTH_UNKNOWN};

	if (in->sealed) {
		if (in->size == 0) {
			s.action = PLAN_DONE;
			return s;
		}
		s.action = PLAN_CREATE;
		s.length = (int64_t)in->size;
		return s;
	}
	/* Without deferred length, an open file waits for its last close;
	 * an empty one has nothing to confirm, whatever fsync asked. */
	if ((in->extensions & TUS_EXT_CREATION_DEFER_LENGTH) &&
	    (in->size >= in->chunk_size ||
	     (in->sync_target > 0 && in->size > 0)))
		s.action = PLAN_CREATE;
	return s;
}

struct plan_step plan_next(const struct plan_input *in)
{
	struct plan_step s = {.action = PLAN_WAIT,
			      .offset = in->offset,
			      .length = TUS_LENGTH_UNKNOWN};
	uint64_t avail;

	if (!in->created)
		return plan_create(in);

	/* Truncated below what the server holds, grown past its length, or
	 * sealed empty: a zero-byte file is never uploaded. */
	if (in->offset > in->size || (in->sealed && in->size == 0) ||
	    (in->declared_length != TUS_LENGTH_UNKNOWN &&
	     (uint64_t)in->declared_length != in->size &&
	     (in->sealed || in->size > (uint64_t)in->declared_length))) {
		s.action = PLAN_RESTART;
		return s;
	}
	avail = in->size - in->offset;
	if (in->sealed) {
		if (avail == 0 && in->declared_length != TUS_LENGTH_UNKNOWN) {
			s.action = PLAN_DONE;
			return s;
		}
		s.action = PLAN_PATCH;
		s.body_len = min_u64(avail, in->chunk_size);
		if (in->declared_length == TUS_LENGTH_UNKNOWN)
			s.length = (int64_t)in->size;
		s.final = s.body_len == avail;
		return s;
	}
	if (avail >= in->chunk_size ||
	    (in->sync_target > in->offset && avail > 0)) {
		s.action = PLAN_PATCH;
		s.body_len = min_u64(avail, in->chunk_size);
		/* Reopened with its length declared: the last byte is known. */
		s.final =
		    in->declared_length != TUS_LENGTH_UNKNOWN &&
		    in->offset + s.body_len == (uint64_t)in->declared_length;
	}
	return s;
}
