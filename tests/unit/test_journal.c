/*
 * The journal: record round trips, refusal of every torn or flipped byte,
 * a full save/load cycle through the writer thread, with a damaged record,
 * an orphaned entry and stray spool files, and the two copies a record file
 * keeps so that a write cut short falls back to the change before it.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "core/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static struct journal_entry sample(void)
{
	struct journal_entry e = {
	    .ino = 42,
	    .parent = 7,
	    .seq = 99,
	    .mode = S_IFREG | 0640,
	    .uid = 1000,
	    .gid = 100,
	    .atime = {1, 2},
	    .mtime = {1700000000, 999999999},
	    .ctime = {3, 4},
	    /* Names are bytes: not UTF-8, a newline, a comma. */
	    .name = (char *)"caf\xe9\nlecture, part 1.wav",
	    .size = 123456789,
	    .fp_valid = true,
	    .fp_size = 123456789,
	    .fp_hash = 0xfedcba9876543210ULL,
	    .url = (char *)"http://127.0.0.1:1080/uploads/files/abc",
	    .offset = 52428800,
	    .declared_length = -1,
	    .task_id = "0b4e7a0e-5c1f-4f7e-9d2a-6f3c2b1a0e9d",
	    .state = UPLOAD_RETRYING,
	    .restart = true,
	    .message = (char *)"PATCH: server answered 503",
	    .tr_state = TR_FAILED,
	    .tr_stage = "aligning",
	    .tr_percent = 50,
	    .tr_since = {1700000100, 5},
	    .tr_done = {1700000200, 6},
	    .tr_sizes = {1, 2, 3, 1ULL << 40},
	    .tr_error = (char *)"the model could not decode the audio",
	};
	return e;
}

TEST(round_trip)
{
	struct journal_entry in = sample(), out;
	char *buf;
	size_t len;

	ASSERT_EQ(journal_encode(&in, &buf, &len), 0);
	ASSERT_EQ(journal_decode(buf, len, &out), 0);
	free(buf);
	ASSERT_EQ(out.ino, 42);
	ASSERT_EQ(out.parent, 7);
	ASSERT_EQ(out.seq, 99);
	ASSERT_EQ(out.mode, S_IFREG | 0640);
	ASSERT_EQ(out.uid, 1000);
	ASSERT_EQ(out.gid, 100);
	ASSERT_EQ(out.mtime.tv_sec, 1700000000);
	ASSERT_EQ(out.mtime.tv_nsec, 999999999);
	ASSERT_STREQ(out.name, in.name);
	ASSERT_EQ(out.size, 123456789);
	ASSERT(out.fp_valid);
	ASSERT(out.fp_hash == 0xfedcba9876543210ULL);
	ASSERT_STREQ(out.url, in.url);
	ASSERT_EQ(out.offset, 52428800);
	ASSERT_EQ(out.declared_length, -1);
	ASSERT_STREQ(out.task_id, in.task_id);
	ASSERT_EQ(out.state, UPLOAD_RETRYING);
	ASSERT(out.restart);
	ASSERT(!out.new_generation);
	ASSERT_STREQ(out.message, in.message);
	ASSERT_EQ(out.tr_state, TR_FAILED);
	ASSERT_STREQ(out.tr_stage, "aligning");
	ASSERT_EQ(out.tr_percent, 50);
	ASSERT_EQ(out.tr_since.tv_sec, 1700000100);
	ASSERT_EQ(out.tr_done.tv_nsec, 6);
	ASSERT(out.tr_sizes[3] == 1ULL << 40);
	ASSERT_STREQ(out.tr_error, in.tr_error);
	journal_entry_clear(&out);
}

/* A file with no transcription yet writes no transcription fields. */
TEST(no_transcription_round_trips_as_none)
{
	struct journal_entry in = sample(), out;
	char *buf;
	size_t len;

	in.tr_state = TR_NONE;
	ASSERT_EQ(journal_encode(&in, &buf, &len), 0);
	ASSERT_EQ(journal_decode(buf, len, &out), 0);
	free(buf);
	ASSERT_EQ(out.tr_state, TR_NONE);
	ASSERT_EQ(out.tr_percent, -1);
	ASSERT(out.tr_error == NULL);
	journal_entry_clear(&out);
}

TEST(every_flip_and_cut_is_refused)
{
	struct journal_entry in = sample(), out;
	char *buf;
	size_t len;

	ASSERT_EQ(journal_encode(&in, &buf, &len), 0);
	for (size_t i = 0; i < len; i++) {
		for (unsigned bit = 0; bit < 8; bit += 3) {
			buf[i] ^= (char)(1u << bit);
			ASSERT_EQ(journal_decode(buf, len, &out), -EBADMSG);
			buf[i] ^= (char)(1u << bit);
		}
		ASSERT_EQ(journal_decode(buf, i, &out), -EBADMSG);
	}
	ASSERT_EQ(journal_decode(buf, len, &out), 0);
	journal_entry_clear(&out);
	free(buf);
}

/* Rewrites the checksum, as a buggy or hostile writer would. */
static void reseal(char *buf, size_t len)
{
	uint64_t h = XXH3_64bits(buf + 20, len - 20);

	for (int i = 0; i < 8; i++)
		buf[12 + i] = (char)(h >> (8 * i));
}

TEST(checksummed_nonsense_is_refused)
{
	struct journal_entry in = sample(), out;
	char *buf;
	size_t len;
	char *name;

	ASSERT_EQ(journal_encode(&in, &buf, &len), 0);
	/* A '/' in the name passes the checksum but not the checks. */
	name = memmem(buf, len, "lecture", 7);
	ASSERT(name != NULL);
	name[0] = '/';
	reseal(buf, len);
	ASSERT_EQ(journal_decode(buf, len, &out), -EBADMSG);
	free(buf);

	in.state = 99;
	ASSERT_EQ(journal_encode(&in, &buf, &len), 0);
	ASSERT_EQ(journal_decode(buf, len, &out), -EBADMSG);
	free(buf);

	/* A task id with a NUL inside (found by fuzz_journal): strchr() on
	 * the hex digits once matched the terminator. */
	in.state = UPLOAD_RETRYING;
	ASSERT_EQ(journal_encode(&in, &buf, &len), 0);
	name = memmem(buf, len, in.task_id, META_UUID_LEN);
	ASSERT(name != NULL);
	name[1] = '\0';
	reseal(buf, len);
	ASSERT_EQ(journal_decode(buf, len, &out), -EBADMSG);
	free(buf);
}

TEST(garbage_is_refused)
{
	unsigned char buf[512];
	struct journal_entry out;
	unsigned seed = 1;

	for (int round = 0; round < 2000; round++) {
		size_t len = (size_t)rand_r(&seed) % sizeof(buf);

		for (size_t i = 0; i < len; i++)
			buf[i] = (unsigned char)rand_r(&seed);
		if (len >= 4)
			memcpy(buf, "TUSJ", 4);
		ASSERT_EQ(journal_decode(buf, len, &out), -EBADMSG);
	}
}

static int freed_spools;

static void on_free(struct node *n, void *arg)
{
	spool_remove(arg, n->ino);
	freed_spools++;
}

static void put_spool(struct spool *s, uint64_t ino, const char *data)
{
	int fd = spool_open(s, ino, O_CREAT | O_WRONLY | O_TRUNC);

	if (fd >= 0) {
		if (write(fd, data, strlen(data)) < 0)
			perror("write");
		close(fd);
	}
}

TEST(save_and_load)
{
	char dir[] = "/tmp/tusfs-journal-XXXXXX", path[128];
	struct catalog *cat;
	struct journal *j;
	struct spool *sp;
	struct journal_stats st;
	struct node *d, *f, *g, *out;
	uint64_t max_id, d_ino, g_ino;
	int err, fd;

	ASSERT(mkdtemp(dir) != NULL);
	sp = spool_open_dir(dir, &max_id, &err);
	ASSERT(sp != NULL);
	cat = catalog_create(0, 0, 2, on_free, sp);
	j = journal_open(dir, cat, &err);
	ASSERT(j != NULL);
	ASSERT_EQ(journal_load(j, sp, &st), 0);
	ASSERT_EQ(st.restored, 0);
	ASSERT_EQ(journal_start(j), 0);

	catalog_lock(cat);
	ASSERT_EQ(catalog_add(cat, catalog_root(cat), "talks", S_IFDIR | 0750,
			      0, 0, &d),
		  0);
	ASSERT_EQ(catalog_add(cat, d, "a.wav", S_IFREG | 0600, 0, 0, &f), 0);
	ASSERT_EQ(catalog_add(cat, d, "b.wav", S_IFREG | 0600, 0, 0, &g), 0);
	f->up.url = strdup("http://h/u/1");
	f->up.offset = 5;
	f->up.state = UPLOAD_UPLOADING;
	journal_mark(j, d);
	journal_mark(j, f);
	journal_mark(j, g);
	ASSERT_EQ(journal_wait(j, g), 0);
	catalog_unlock(cat);
	put_spool(sp, f->ino, "0123456789");
	put_spool(sp, g->ino, "abc");
	put_spool(sp, 77, "stray");
	d_ino = d->ino;
	g_ino = g->ino;
	journal_stop(j);
	journal_free(j);
	catalog_free(cat);

	/* Damage the directory's record: its files go to lost+found. */
	snprintf(path, sizeof(path), "%s/journal/%llu", dir,
		 (unsigned long long)d_ino);
	fd = open(path, O_WRONLY);
	ASSERT(fd >= 0);
	ASSERT_EQ(pwrite(fd, "X", 1, 30), 1);
	close(fd);
	/* A torn write the crash left behind is ignored. */
	snprintf(path, sizeof(path), "%s/journal/12.new", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	close(fd);

	cat = catalog_create(0, 0, max_id + 1, on_free, sp);
	j = journal_open(dir, cat, &err);
	ASSERT_EQ(journal_load(j, sp, &st), 0);
	ASSERT_EQ(st.restored, 2);
	ASSERT_EQ(st.damaged, 1);
	ASSERT_EQ(st.orphans, 1);
	ASSERT_EQ(spool_size(sp, 77), -ENOENT);
	catalog_lock(cat);
	ASSERT_EQ(catalog_lookup(cat, "/lost+found/a.wav", &out), 0);
	ASSERT_STREQ(out->up.url, "http://h/u/1");
	ASSERT_EQ(out->up.offset, 5);
	ASSERT_EQ(out->size, 10); /* the spool's size, not the journal's */
	ASSERT_EQ(out->up.state, UPLOAD_QUEUED);
	ASSERT(out->up.need_head);
	ASSERT_EQ(catalog_lookup(cat, "/lost+found/b.wav", &out), 0);
	ASSERT_EQ(out->size, 3);
	/* lost+found took a fresh inode, not the damaged directory's. */
	ASSERT_EQ(catalog_lookup(cat, "/lost+found", &out), 0);
	ASSERT(out->ino > g_ino && out->ino != d_ino);
	/* New inodes start past every one in use, the damaged one too. */
	ASSERT_EQ(catalog_add(cat, catalog_root(cat), "c", S_IFREG, 0, 0, &out),
		  0);
	ASSERT(out->ino > g_ino && out->ino > d_ino);
	catalog_unlock(cat);
	journal_free(j);
	catalog_free(cat);
	spool_free(sp);
	ASSERT_EQ(freed_spools, 0);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	ASSERT_EQ(system(path), 0);
}

/* Saves one file record through a started journal; returns its inode. */
static uint64_t save_file(const char *dir, enum upload_state state,
			  uint64_t size, uint64_t offset, const char *spool)
{
	uint64_t max_id, ino = 0;
	struct spool *sp = spool_open_dir(dir, &max_id, &(int){0});
	struct catalog *cat = catalog_create(0, 0, 2, NULL, NULL);
	struct journal *j = journal_open(dir, cat, &(int){0});
	struct node *n;

	if (!sp || !cat || !j || journal_start(j) < 0)
		return 0;
	catalog_lock(cat);
	if (catalog_add(cat, catalog_root(cat), "f.wav", S_IFREG | 0600, 0, 0,
			&n) == 0) {
		n->size = size;
		n->up.state = state;
		n->up.offset = offset;
		n->up.url = strdup("http://h/u/9");
		ino = n->ino;
		if (journal_sync(j, n) < 0)
			ino = 0;
	}
	catalog_unlock(cat);
	put_spool(sp, ino, spool);
	journal_stop(j);
	journal_free(j);
	catalog_free(cat);
	spool_free(sp);
	return ino;
}

/* Loads dir and returns /f.wav's size and upload state, and the stats. */
static int load_file(const char *dir, struct node *copy,
		     struct journal_stats *st)
{
	uint64_t max_id;
	struct spool *sp = spool_open_dir(dir, &max_id, &(int){0});
	struct catalog *cat = catalog_create(0, 0, max_id + 1, NULL, NULL);
	struct journal *j = journal_open(dir, cat, &(int){0});
	struct node *n;
	int rc = journal_load(j, sp, st);

	catalog_lock(cat);
	if (rc == 0)
		rc = catalog_lookup(cat, "/f.wav", &n);
	if (rc == 0) {
		copy->size = n->size;
		copy->up.offset = n->up.offset;
		copy->up.state = n->up.state;
		copy->up.restart = n->up.restart;
		copy->up.new_generation = n->up.new_generation;
	}
	catalog_unlock(cat);
	journal_free(j);
	catalog_free(cat);
	spool_free(sp);
	return rc;
}

TEST(spool_wins_over_a_lagging_journal)
{
	char dir[] = "/tmp/tusfs-journal-XXXXXX", cmd[64];
	struct journal_stats st;
	struct node n;

	ASSERT(mkdtemp(dir) != NULL);
	/* "empty" in the journal, bytes in the spool: an append the crash
	 * kept from the journal. The bytes are uploaded. */
	ASSERT(save_file(dir, UPLOAD_EMPTY, 0, 0, "hello world") != 0);
	ASSERT_EQ(load_file(dir, &n, &st), 0);
	ASSERT_EQ(n.up.state, UPLOAD_QUEUED);
	ASSERT_EQ(n.size, 11);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ASSERT_EQ(system(cmd), 0);

	/* "uploaded" with a spool of another size: an O_TRUNC rewrite. */
	ASSERT(mkdtemp(strcpy(dir, "/tmp/tusfs-journal-XXXXXX")) != NULL);
	ASSERT(save_file(dir, UPLOAD_UPLOADED, 20, 20, "new") != 0);
	ASSERT_EQ(load_file(dir, &n, &st), 0);
	ASSERT_EQ(n.up.state, UPLOAD_QUEUED);
	ASSERT(n.up.restart && n.up.new_generation);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ASSERT_EQ(system(cmd), 0);

	/* The server holds more than the spool: a truncation. Start over. */
	ASSERT(mkdtemp(strcpy(dir, "/tmp/tusfs-journal-XXXXXX")) != NULL);
	ASSERT(save_file(dir, UPLOAD_UPLOADING, 20, 10, "short") != 0);
	ASSERT_EQ(load_file(dir, &n, &st), 0);
	ASSERT(n.up.restart);
	ASSERT_EQ(n.size, 5);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ASSERT_EQ(system(cmd), 0);
}

/* The record file's inode number and size. */
static void stat_record(const char *dir, uint64_t ino, struct stat *st)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/journal/%llu", dir,
		 (unsigned long long)ino);
	if (stat(path, st) < 0)
		memset(st, 0, sizeof(*st));
}

/* Flips one byte of the record file of ino at off. */
static void flip(const char *dir, uint64_t ino, off_t off)
{
	char path[128], c = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/journal/%llu", dir,
		 (unsigned long long)ino);
	fd = open(path, O_RDWR);
	if (fd >= 0 && pread(fd, &c, 1, off) == 1) {
		c = (char)~c;
		if (pwrite(fd, &c, 1, off) != 1)
			perror("pwrite");
	}
	if (fd >= 0)
		close(fd);
}

TEST(changes_alternate_between_two_copies_in_place)
{
	char dir[] = "/tmp/tusfs-journal-XXXXXX", cmd[64];
	struct catalog *cat = catalog_create(0, 0, 2, NULL, NULL);
	struct journal_stats st;
	struct stat first, later;
	struct journal *j;
	struct node *n, out;
	uint64_t ino;

	ASSERT(mkdtemp(dir) != NULL);
	j = journal_open(dir, cat, &(int){0});
	ASSERT(j != NULL);
	ASSERT_EQ(journal_start(j), 0);
	catalog_lock(cat);
	ASSERT_EQ(catalog_add(cat, catalog_root(cat), "f.wav", S_IFREG | 0600,
			      0, 0, &n),
		  0);
	ino = n->ino;
	n->up.state = UPLOAD_UPLOADING;
	n->up.url = strdup("http://h/u/9");
	/* Offsets 1, 2 and 3: copy 0, copy 1, copy 0 again. */
	n->up.offset = 1;
	ASSERT_EQ(journal_sync(j, n), 0);
	stat_record(dir, ino, &first);
	ASSERT(first.st_size > 0 && first.st_size < JOURNAL_MAX_RECORD);
	n->up.offset = 2;
	ASSERT_EQ(journal_sync(j, n), 0);
	n->up.offset = 3;
	ASSERT_EQ(journal_sync(j, n), 0);
	catalog_unlock(cat);
	journal_stop(j);
	journal_free(j);
	catalog_free(cat);
	/* Rewritten in place: the same file, now holding both copies. */
	stat_record(dir, ino, &later);
	ASSERT_EQ(later.st_ino, first.st_ino);
	ASSERT(later.st_size > JOURNAL_MAX_RECORD);

	ASSERT_EQ(load_file(dir, &out, &st), 0);
	ASSERT_EQ(out.up.offset, 3);
	ASSERT_EQ(st.damaged, 0);
	/* The latest copy cut short: the change before it holds. */
	flip(dir, ino, 30);
	ASSERT_EQ(load_file(dir, &out, &st), 0);
	ASSERT_EQ(out.up.offset, 2);
	ASSERT_EQ(st.restored, 1);
	ASSERT_EQ(st.damaged, 0);
	/* Both copies bad: the record is damaged, not half trusted. */
	flip(dir, ino, JOURNAL_MAX_RECORD + 30);
	ASSERT_EQ(load_file(dir, &out, &st), -ENOENT);
	ASSERT_EQ(st.damaged, 1);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ASSERT_EQ(system(cmd), 0);
}

TEST(a_failing_write_is_reported_not_waited_for)
{
	char dir[] = "/tmp/tusfs-journal-XXXXXX", path[128];
	struct catalog *cat = catalog_create(0, 0, 2, NULL, NULL);
	struct journal *j;
	struct node *n;

	ASSERT(mkdtemp(dir) != NULL);
	j = journal_open(dir, cat, &(int){0});
	ASSERT(j != NULL);
	ASSERT_EQ(journal_start(j), 0);
	catalog_lock(cat);
	ASSERT_EQ(catalog_add(cat, catalog_root(cat), "x", S_IFREG, 0, 0, &n),
		  0);
	/* The temporary's name is taken by a directory: every write fails. */
	snprintf(path, sizeof(path), "%s/journal/%llu.new", dir,
		 (unsigned long long)n->ino);
	ASSERT_EQ(mkdir(path, 0700), 0);
	ASSERT_EQ(journal_sync(j, n), -EISDIR);
	catalog_unlock(cat);
	journal_stop(j);
	journal_free(j);
	catalog_free(cat);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	ASSERT_EQ(system(path), 0);
}

TEST_MAIN
