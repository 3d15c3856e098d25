/*
 * The namespace tree: lookups, adds, renames over existing names, reference
 * counted lifetimes and relative paths.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "core/catalog.h"
#include "fuse/config.h"

#include <errno.h>

static int freed;

static void on_free(struct node *n, void *arg)
{
	(void)n;
	(void)arg;
	freed++;
}

TEST(tree)
{
	struct catalog *cat = catalog_create(1, 1, 10, on_free, NULL);
	struct node *root = catalog_root(cat), *d, *f, *g, *out;
	const char *name;
	char rel[64];

	ASSERT_EQ(root->ino, CATALOG_ROOT_INO);
	ASSERT_EQ(catalog_add(cat, root, "dir", S_IFDIR | 0755, 1, 1, &d), 0);
	ASSERT_EQ(d->ino, 10);
	ASSERT_EQ(catalog_add(cat, d, "a.wav", S_IFREG | 0644, 1, 1, &f), 0);
	ASSERT_EQ(catalog_add(cat, d, "a.wav", S_IFREG | 0644, 1, 1, &g),
		  -EEXIST);
	ASSERT_EQ(catalog_lookup(cat, "/dir/a.wav", &out), 0);
	ASSERT(out == f);
	ASSERT_EQ(catalog_lookup(cat, "/", &out), 0);
	ASSERT(out == root);
	ASSERT_EQ(catalog_lookup(cat, "/dir/b.wav", &out), -ENOENT);
	ASSERT_EQ(catalog_lookup(cat, "/dir/a.wav/x", &out), -ENOTDIR);
	ASSERT_EQ(catalog_lookup_parent(cat, "/dir/new", &out, &name), 0);
	ASSERT(out == d);
	ASSERT_STREQ(name, "new");
	ASSERT_EQ(catalog_relpath(f, rel, sizeof(rel)), 9);
	ASSERT_STREQ(rel, "dir/a.wav");
	ASSERT_EQ(catalog_relpath(f, rel, 5), -ENAMETOOLONG);
	catalog_free(cat);
}

TEST(rename_replaces_and_frees_when_unreferenced)
{
	struct catalog *cat = catalog_create(1, 1, 2, on_free, NULL);
	struct node *root = catalog_root(cat), *a, *b, *out;

	freed = 0;
	ASSERT_EQ(catalog_add(cat, root, "a", S_IFREG | 0644, 1, 1, &a), 0);
	ASSERT_EQ(catalog_add(cat, root, "b", S_IFREG | 0644, 1, 1, &b), 0);
	catalog_get(b); /* an open handle */
	ASSERT_EQ(catalog_rename(cat, a, root, "b"), 0);
	ASSERT_EQ(catalog_lookup(cat, "/b", &out), 0);
	ASSERT(out == a);
	ASSERT_EQ(catalog_lookup(cat, "/a", &out), -ENOENT);
	ASSERT(b->unlinked);
	ASSERT_EQ(freed, 0);
	catalog_put(cat, b); /* last close of the replaced file */
	ASSERT_EQ(freed, 1);
	catalog_unlink(cat, a);
	ASSERT_EQ(freed, 2);
	ASSERT(root->children == NULL);
	catalog_free(cat);
}

/* 10 000 children: every lookup finds its own through the table's growth,
 * unlinks and renames keep the table, the list and the counts agreeing. */
TEST(many_children)
{
	enum { N = 10000 };
	struct catalog *cat = catalog_create(1, 1, 10, on_free, NULL);
	struct node *root = catalog_root(cat), *dir, *n, *out;
	char name[32];
	size_t listed = 0;

	ASSERT_EQ(catalog_add(cat, root, "d", S_IFDIR | 0755, 1, 1, &dir), 0);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "rec-%d.wav", i);
		ASSERT_EQ(catalog_add(cat, dir, name,
				      (i % 10 == 5 ? S_IFDIR : S_IFREG) | 0644,
				      1, 1, &n),
			  0);
	}
	ASSERT_EQ(dir->nchildren, N);
	ASSERT_EQ(dir->subdirs, N / 10);
	ASSERT(dir->hsize >= N);
	for (int i = 0; i < N; i += 7) {
		snprintf(name, sizeof(name), "rec-%d.wav", i);
		n = catalog_child(dir, name);
		ASSERT(n && strcmp(n->name, name) == 0);
	}
	/* Every other one goes; the odd ones move to the root. */
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "rec-%d.wav", i);
		n = catalog_child(dir, name);
		if (i % 2 == 0)
			catalog_unlink(cat, n);
		else
			ASSERT_EQ(catalog_rename(cat, n, root, name), 0);
	}
	ASSERT_EQ(dir->nchildren, 0);
	ASSERT(dir->children == NULL);
	ASSERT_EQ(dir->subdirs, 0);
	ASSERT_EQ(root->subdirs, 1 + N / 10);
	for (n = root->children; n; n = n->next) {
		ASSERT(n->next == NULL || n->next->prev == n);
		listed++;
	}
	ASSERT_EQ(listed, N / 2 + 1);
	ASSERT_EQ(catalog_lookup(cat, "/rec-9999.wav", &out), 0);
	ASSERT_EQ(catalog_lookup(cat, "/rec-9998.wav", &out), -ENOENT);
	ASSERT_EQ(catalog_lookup(cat, "/d/rec-1.wav", &out), -ENOENT);
	catalog_free(cat);
}

TEST(temp_names)
{
	const char *dflt = CONFIG_DEFAULT_TEMP_NAMES;
	const char *temp[] = {".talk.wav.Ab12xZ", "talk.wav.part",
			      "talk.partial",	  ".goutputstream-QX81Z2",
			      "a.crdownload",	  "x.tmp",
			      "talk.wav~",	  ".#talk.wav",
			      "._talk.wav"};
	const char *final[] = {"talk.wav", ".talk.wav",	     ".talk.wav.Ab12x",
			       "part",	   "talk.wav.partx", "tmp",
			       "~talk.wav"};

	for (size_t i = 0; i < sizeof(temp) / sizeof(*temp); i++)
		ASSERT(catalog_temp_name(dflt, temp[i]));
	for (size_t i = 0; i < sizeof(final) / sizeof(*final); i++)
		ASSERT(!catalog_temp_name(dflt, final[i]));
	ASSERT(catalog_temp_name("*.a/[0-9]*", "7x"));
	ASSERT(!catalog_temp_name("*.a/[0-9]*", "x7"));
	ASSERT(!catalog_temp_name("", "x.tmp"));
	ASSERT(!catalog_temp_name(NULL, "x.tmp"));
}

TEST_MAIN
