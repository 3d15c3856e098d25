/*
 * Chunk planning at every boundary: empty, one byte, chunk-1, chunk,
 * chunk+1, several chunks; with and without the creation extensions.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "core/plan.h"
#include "tus/tus.h"

#define CHUNK 1000
#define ALL                                                                    \
	(TUS_EXT_CREATION | TUS_EXT_CREATION_WITH_UPLOAD |                     \
	 TUS_EXT_CREATION_DEFER_LENGTH | TUS_EXT_TERMINATION)

static struct plan_input input(uint64_t size, bool sealed)
{
	return (struct plan_input){.sealed = sealed,
				   .declared_length = TUS_LENGTH_UNKNOWN,
				   .size = size,
				   .chunk_size = CHUNK,
				   .extensions = ALL};
}

/*
 * Runs the planner against a perfect server until it waits or is done,
 * counting requests and checking each body fits in a chunk.
 */
static int simulate(struct plan_input in, int *posts, int *patches,
		    uint64_t *create_body, bool *final_has_length)
{
	*posts = *patches = 0;
	for (int i = 0; i < 100; i++) {
		struct plan_step s = plan_next(&in);

		if (s.body_len > CHUNK)
			return -1;
		switch (s.action) {
		case PLAN_CREATE:
			(*posts)++;
			*create_body = s.body_len;
			in.created = true;
			in.offset = s.body_len;
			in.declared_length = s.length;
			break;
		case PLAN_PATCH:
			(*patches)++;
			if (s.offset != in.offset)
				return -1;
			in.offset += s.body_len;
			*final_has_length = s.length != TUS_LENGTH_UNKNOWN;
			if (s.length != TUS_LENGTH_UNKNOWN)
				in.declared_length = s.length;
			break;
		case PLAN_DONE:
			return in.offset == in.size ? 1 : -1;
		default:
			return 0;
		}
	}
	return -1;
}

TEST(empty_file_is_never_uploaded)
{
	struct plan_input in = input(0, true);

	ASSERT_EQ(plan_next(&in).action, PLAN_DONE);
}

/* tuspyserver starts the service's work only when a PATCH completes an
 * upload: no file, however small, is completed by its POST. */
TEST(small_sealed_file_is_a_bare_post_and_one_patch)
{
	int posts, patches;
	uint64_t body = 1;
	bool fl = false;

	for (uint64_t size = 1; size <= CHUNK; size += CHUNK - 1) {
		ASSERT_EQ(
		    simulate(input(size, true), &posts, &patches, &body, &fl),
		    1);
		ASSERT_EQ(posts, 1);
		ASSERT_EQ(body, 0);
		ASSERT_EQ(patches, 1);
	}
}

TEST(sealed_multi_chunk_posts_bare_then_patches)
{
	uint64_t sizes[] = {CHUNK + 1, 3 * CHUNK + 17, 2 * CHUNK};
	int want[] = {2, 4, 2};
	int posts, patches;
	uint64_t body = 1;
	bool fl;

	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(simulate(input(sizes[i], true), &posts, &patches,
				   &body, &fl),
			  1);
		ASSERT_EQ(posts, 1);
		ASSERT_EQ(body, 0);
		ASSERT_EQ(patches, want[i]);
	}
}

TEST(only_the_request_with_the_last_byte_is_final)
{
	struct plan_input in = input(2 * CHUNK + 5, true);
	struct plan_step s;

	in.created = true;
	in.declared_length = 2 * CHUNK + 5;
	s = plan_next(&in);
	ASSERT_EQ(s.action, PLAN_PATCH);
	ASSERT(!s.final);
	in.offset = 2 * CHUNK;
	s = plan_next(&in);
	ASSERT_EQ(s.body_len, 5);
	ASSERT(s.final);
	/* A deferred length on a chunk boundary: the empty PATCH is final. */
	in = input(2 * CHUNK, true);
	in.created = true;
	in.offset = 2 * CHUNK;
	s = plan_next(&in);
	ASSERT_EQ(s.body_len, 0);
	ASSERT(s.final);
	/* Still open: nothing is final while the length is unknown. */
	in = input(3 * CHUNK, false);
	in.created = true;
	in.offset = 2 * CHUNK;
	ASSERT(!plan_next(&in).final);
}

/* A file truncated to nothing is never uploaded: an fsync that asked for
 * more before the truncation creates nothing, and an upload made before
 * it is dropped once the file is sealed empty. */
TEST(an_empty_file_creates_nothing_and_drops_its_upload)
{
	struct plan_input in = input(0, false);

	in.sync_target = 4096;
	ASSERT_EQ(plan_next(&in).action, PLAN_WAIT);
	in.created = true;
	in.sealed = true;
	ASSERT_EQ(plan_next(&in).action, PLAN_RESTART);
	in.created = false;
	ASSERT_EQ(plan_next(&in).action, PLAN_DONE);
}

TEST(without_creation_with_upload)
{
	struct plan_input in = input(10, true);
	struct plan_step s;

	in.extensions = TUS_EXT_CREATION;
	s = plan_next(&in);
	ASSERT_EQ(s.action, PLAN_CREATE);
	ASSERT_EQ(s.body_len, 0);
	ASSERT_EQ(s.length, 10);
}

TEST(open_file_waits_for_a_full_chunk)
{
	struct plan_input in = input(CHUNK - 1, false);
	struct plan_step s;

	ASSERT_EQ(plan_next(&in).action, PLAN_WAIT);
	in.size = CHUNK;
	s = plan_next(&in);
	ASSERT_EQ(s.action, PLAN_CREATE);
	ASSERT_EQ(s.length, TUS_LENGTH_UNKNOWN);
	ASSERT_EQ(s.body_len, 0);
	in.created = true;
	s = plan_next(&in);
	ASSERT_EQ(s.action, PLAN_PATCH);
	ASSERT_EQ(s.body_len, CHUNK);
	ASSERT_EQ(s.length, TUS_LENGTH_UNKNOWN);
	in.offset = CHUNK;
	in.size = 2 * CHUNK - 1;
	ASSERT_EQ(plan_next(&in).action, PLAN_WAIT);
}

TEST(boundary_file_ends_with_empty_patch_carrying_length)
{
	struct plan_input in = input(2 * CHUNK, true);
	struct plan_step s;

	in.created = true;
	in.offset = 2 * CHUNK;
	s = plan_next(&in);
	ASSERT_EQ(s.action, PLAN_PATCH);
	ASSERT_EQ(s.body_len, 0);
	ASSERT_EQ(s.length, 2 * CHUNK);
	in.declared_length = 2 * CHUNK;
	ASSERT_EQ(plan_next(&in).action, PLAN_DONE);
}

TEST(length_goes_with_the_first_patch_after_close)
{
	struct plan_input in = input(3 * CHUNK + 17, true);
	struct plan_step s;

	in.created = true;
	in.offset = CHUNK;
	s = plan_next(&in);
	ASSERT_EQ(s.action, PLAN_PATCH);
	ASSERT_EQ(s.length, 3 * CHUNK + 17);
	/* Once declared it is never sent again. */
	in.declared_length = 3 * CHUNK + 17;
	in.offset = 2 * CHUNK;
	s = plan_next(&in);
	ASSERT_EQ(s.length, TUS_LENGTH_UNKNOWN);
}

TEST(without_defer_length_open_file_waits_for_close)
{
	struct plan_input in = input(5 * CHUNK, false);

	in.extensions = TUS_EXT_CREATION;
	in.sync_target = 5 * CHUNK;
	ASSERT_EQ(plan_next(&in).action, PLAN_WAIT);
	in.sealed = true;
	ASSERT_EQ(plan_next(&in).action, PLAN_CREATE);
}

TEST(fsync_sends_a_partial_chunk)
{
	struct plan_input in = input(10, false);
	struct plan_step s;

	in.sync_target = 10;
	ASSERT_EQ(plan_next(&in).action, PLAN_CREATE);
	in.created = true;
	s = plan_next(&in);
	ASSERT_EQ(s.action, PLAN_PATCH);
	ASSERT_EQ(s.body_len, 10);
	in.offset = 10;
	ASSERT_EQ(plan_next(&in).action, PLAN_WAIT);
}

TEST(stale_server_copy_restarts)
{
	struct plan_input in = input(100, true);

	in.created = true;
	in.offset = 200; /* truncated below what the server has */
	ASSERT_EQ(plan_next(&in).action, PLAN_RESTART);
	in = input(150, false);
	in.created = true;
	in.declared_length = 100; /* reopened and grown past its length */
	ASSERT_EQ(plan_next(&in).action, PLAN_RESTART);
	in.size = 100;
	in.offset = 100;
	in.sealed = true;
	ASSERT_EQ(plan_next(&in).action, PLAN_DONE);
}

TEST_MAIN
