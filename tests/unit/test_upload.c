/*
 * The upload transitions that are not requests (core/upload.h's table):
 * what each one changes, and what it reports for the journal.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "core/upload.h"
#include "tus/tus.h"

static struct upload sent(uint64_t mark)
{
	struct upload up = {0};

	upload_init(&up);
	up.sent_mark = mark;
	return up;
}

TEST(init_declares_nothing)
{
	struct upload up = sent(0);

	ASSERT_EQ(up.declared_length, TUS_LENGTH_UNKNOWN);
	ASSERT_EQ(up.state, UPLOAD_QUEUED);
	ASSERT(!upload_complete(&up));
}

TEST(complete_once_the_declared_length_is_confirmed)
{
	struct upload up = sent(0);
	char url[] = "http://127.0.0.1/files/1";

	up.url = url;
	up.offset = 10;
	ASSERT(!upload_complete(&up));
	up.declared_length = 11;
	ASSERT(!upload_complete(&up));
	up.offset = 11;
	ASSERT(upload_complete(&up));
}

TEST(change_past_sent_bytes_keeps_the_upload)
{
	struct upload up = sent(100);
	uint64_t gen = up.content_gen;

	ASSERT(!upload_content_changing(&up, 100));
	ASSERT(!up.restart);
	ASSERT_EQ(up.content_gen, gen + 1);
}

TEST(change_below_sent_bytes_restarts_once)
{
	struct upload up = sent(100);

	/* The first rewrite is news for the journal; the second is not. */
	ASSERT(upload_content_changing(&up, 99));
	ASSERT(up.restart);
	ASSERT(!upload_content_changing(&up, 0));
}

TEST(change_voids_a_fingerprint)
{
	struct upload up = sent(0);

	up.fp_valid = true;
	ASSERT(upload_content_changing(&up, 50));
	ASSERT(!up.fp_valid);
	ASSERT(!up.restart);
}

TEST(overtaken_only_below_the_mark_and_once)
{
	struct upload up = sent(10);

	ASSERT(!upload_overtaken(&up, 10));
	ASSERT(upload_overtaken(&up, 9));
	ASSERT(!upload_overtaken(&up, 0));
	ASSERT(up.restart);
}

TEST(truncate_clamps_what_fsync_waits_for)
{
	struct upload up = sent(100);
	uint64_t gen = up.content_gen;

	up.sync_target = 500;
	up.fp_valid = true;
	upload_truncated(&up, 200);
	ASSERT(!up.restart);
	ASSERT_EQ(up.sync_target, 200);
	ASSERT(!up.fp_valid);
	ASSERT_EQ(up.content_gen, gen + 1);
	upload_truncated(&up, 50);
	ASSERT(up.restart);
	ASSERT_EQ(up.sync_target, 50);
}

TEST(new_generation_of_an_unsent_file)
{
	struct upload up = sent(0);

	up.state = UPLOAD_FAILED;
	up.err = -5;
	up.attempts = 3;
	up.sync_target = 7;
	ASSERT_EQ(upload_new_generation(&up), 0);
	ASSERT_EQ(strlen(up.task_id), 36);
	ASSERT_EQ(up.state, UPLOAD_QUEUED);
	ASSERT_EQ(up.err, 0);
	ASSERT_EQ(up.attempts, 0);
	ASSERT_EQ(up.sync_target, 0);
	/* Nothing on the server: nothing to replace. */
	ASSERT(!up.restart);
	ASSERT(!up.new_generation);
}

TEST(new_generation_replaces_the_server_copy_and_aborts_the_request)
{
	struct upload up = sent(100);
	char url[] = "http://127.0.0.1/files/1";
	char old[sizeof(up.task_id)];

	ASSERT_EQ(upload_new_task(&up), 0);
	memcpy(old, up.task_id, sizeof(old));
	up.url = url;
	up.active = true;
	up.fp_valid = up.verify = true;
	ASSERT_EQ(upload_new_generation(&up), 0);
	ASSERT(strcmp(old, up.task_id) != 0);
	ASSERT(up.restart);
	ASSERT(up.new_generation);
	ASSERT(!up.fp_valid);
	ASSERT(!up.verify);
	ASSERT_EQ(atomic_load(&up.cancel), 1);
}

TEST_MAIN
