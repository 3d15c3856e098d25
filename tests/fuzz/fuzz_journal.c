/*
 * libFuzzer target for the journal reader. Each input is decoded three
 * ways: as a record file's raw bytes; as a record body behind a correct
 * header and checksum, so the fuzzer reaches the field parser instead of
 * stopping at the xxh3 check; and, split in two sealed copies, as a whole
 * two-copy record file, possibly cut short. Besides the sanitizers' reports
 * it checks that a failed decode leaves the entry empty, that whatever
 * decodes re-encodes to a fixed point (encode, decode, encode gives the same
 * bytes), and that the file loader picks the valid copy with the higher seq
 * and refuses a file with none.
 *
 * Run with scripts/fuzz.sh.
 */
#include "tusfs_setup.h"
#include "fuzz.h"
#include "core/journal.h"
#include "core/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* The record header (journal.c): magic, version, 0, body length, xxh3. */
#define HEADER_LEN 20
#define SLOT	   JOURNAL_MAX_RECORD

static void put_le(unsigned char *p, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes body behind a valid header at out; returns the record's length. */
static size_t seal(unsigned char *out, const uint8_t *body, size_t len)
{
	memcpy(out, "TUSJ", 4);
	put_le(out + 4, 1, 2);
	put_le(out + 6, 0, 2);
	put_le(out + 8, len, 4);
	put_le(out + 12, XXH3_64bits(body, len), 8);
	memcpy(out + HEADER_LEN, body, len);
	return HEADER_LEN + len;
}

static bool empty(const struct journal_entry *e)
{
	return !e->ino && !e->name && !e->url && !e->message && !e->tr_error;
}

/* decode() then, if it succeeds, the re-encoding fixed point. */
static int decode(const void *buf, size_t len, struct journal_entry *e)
{
	struct journal_entry again;
	char *a = NULL, *b = NULL;
	size_t alen, blen;
	int rc = journal_decode(buf, len, e);

	if (rc < 0) {
		check(rc == -EBADMSG || rc == -ENOMEM);
		check(empty(e));
		return rc;
	}
	check(e->ino && e->name && strlen(e->name) <= 255 &&
	      !strchr(e->name, '/'));
	if (journal_encode(e, &a, &alen) < 0)
		return rc;
	check(alen <= JOURNAL_MAX_RECORD);
	check(journal_decode(a, alen, &again) == 0);
	if (journal_encode(&again, &b, &blen) == 0) {
		check(alen == blen && memcmp(a, b, alen) == 0);
		free(b);
	}
	journal_entry_clear(&again);
	free(a);
	return rc;
}

/* Two sealed copies, the second cut at cut bytes (if shorter than it), as
 * one record file. */
static void two_copies(const uint8_t *data, size_t size, size_t split,
		       size_t cut)
{
	struct journal_entry c[2], e;
	unsigned char *file = calloc(1, 2 * SLOT);
	size_t len[2];
	uint64_t ino = 1, best = 0;
	int rc[2], got;

	if (!file)
		return;
	len[0] = seal(file, data, split);
	len[1] = seal(file + SLOT, data + split, size - split);
	for (unsigned i = 0; i < 2; i++)
		rc[i] = journal_decode(file + i * SLOT, len[i], &c[i]);
	if (cut < len[1]) {
		journal_entry_clear(&c[1]);
		rc[1] = -EBADMSG;
		len[1] = cut;
	}
	if (rc[0] == 0)
		ino = c[0].ino;
	else if (rc[1] == 0)
		ino = c[1].ino;
	for (unsigned i = 0; i < 2; i++)
		if (rc[i] == 0 && c[i].ino == ino && c[i].seq >= best)
			best = c[i].seq;

	got = journal_decode_file((const char *)file, SLOT + len[1], ino, &e);
	if (got == 0) {
		unsigned k = e.copy - 1u;

		check(e.copy == 1 || e.copy == 2);
		check(rc[k] == 0 && c[k].ino == ino && e.seq == best);
		journal_entry_clear(&e);
	} else {
		check(got == -ENOMEM || ((rc[0] < 0 || c[0].ino != ino) &&
					 (rc[1] < 0 || c[1].ino != ino)));
	}
	journal_entry_clear(&c[0]);
	journal_entry_clear(&c[1]);
	free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool quiet;
	struct journal_entry e;
	unsigned char *rec;

	if (!quiet) {
		/* A cut copy is reported with log_warn; no need to see it. */
		log_set_level(LOG_LEVEL_ERROR);
		quiet = true;
	}
	if (size > SLOT - HEADER_LEN)
		return 0;

	if (decode(data, size, &e) == 0)
		journal_entry_clear(&e);

	rec = malloc(HEADER_LEN + size);
	if (!rec)
		return 0;
	if (decode(rec, seal(rec, data, size), &e) == 0)
		journal_entry_clear(&e);
	free(rec);

	if (size >= 2)
		two_copies(data + 2, size - 2, data[0] * (size - 2) / 255,
			   data[1] == 255 ? SIZE_MAX : (size_t)data[1] * 4);
	return 0;
}
