/*
 * The transitions of a file's upload that are not requests (upload.h has
 * the table). Pure state changes under the catalog lock: no I/O, no
 * queues, no journal; the callers do those.
 */
#include "tusfs_setup.h"
#include "core/upload.h"
#include "tus/tus.h"

void upload_init(struct upload *up)
{
	up->declared_length = TUS_LENGTH_UNKNOWN;
	up->rate = -1;
}

bool upload_complete(const struct upload *up)
{
	return up->url && up->declared_length != TUS_LENGTH_UNKNOWN &&
	       up->offset == (uint64_t)up->declared_length;
}

bool upload_overtaken(struct upload *up, uint64_t off)
{
	if (off >= up->sent_mark || up->restart)
		return false;
	up->restart = true;
	return true;
}

bool upload_content_changing(struct upload *up, uint64_t off)
{
	bool voided = upload_overtaken(up, off) || up->fp_valid;

	up->fp_valid = false;
	up->content_gen++;
	return voided;
}

void upload_truncated(struct upload *up, uint64_t size)
{
	if (size < up->sent_mark)
		up->restart = true;
	/* What fsync asked for cannot lie past the end: a later fsync of
	 * fewer bytes must still be news for the engine. */
	if (up->sync_target > size)
		up->sync_target = size;
	up->content_gen++;
	up->fp_valid = false;
}

int upload_new_task(struct upload *up)
{
	return meta_uuid4(up->task_id);
}

int upload_new_generation(struct upload *up)
{
	int rc = upload_new_task(up);

	/* Without randomness the version still changes, with no taskId:
	 * its bytes must not pass for the old ones'. */
	if (rc < 0)
		up->task_id[0] = '\0';
	up->fp_valid = false;
	up->verify = false;
	up->content_gen++;
	if (up->url || up->active) {
		up->restart = true;
		up->new_generation = true;
	}
	/* A request in flight reads the spool, which holds the new version
	 * from now on: stop it, or the old upload could complete with bytes
	 * of both (the engine's restart clears the flag). */
	if (up->active)
		atomic_store(&up->cancel, 1);
	up->state = UPLOAD_QUEUED;
	up->err = 0;
	up->sync_target = 0;
	up->attempts = 0;
	up->not_before = (struct timespec){0};
	return rc;
}
