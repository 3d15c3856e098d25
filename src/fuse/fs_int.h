/*
 * What the four files of the FUSE adapter share: the open-file handle and
 * the helpers one file defines and another calls. fs.c has the namespace
 * operations and the table; fs_file.c open files, reads, writes and
 * fsync; fs_dir.c listings; fs_attr.c the status sidecar and the
 * extended attributes. Nothing outside src/fuse includes this.
 */
#ifndef TUSFS_FS_INT_H
#define TUSFS_FS_INT_H

#include "fuse/fs.h"

#include <fuse.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/*
 * An open file: the node it pins and its own spool descriptor; or, for a
 * sidecar of that node, its kind and either the status rendered at open
 * or the stored transcript's descriptor.
 */
struct handle {
	struct node *n;
	int fd;
	bool writable;
	int sidecar; /* enum sidecar, or -1 for the file itself */
	char *buf;
	size_t len;
};

/* fs.c: the mount of the request being served, attributes, paths. */
struct tusfs *fs_this(void);
void fs_fill_stat(const struct node *n, struct stat *st);
bool fs_sidecar_visible(const struct tusfs *t, const struct node *n, int k);
int fs_lookup(struct tusfs *t, const char *path, struct node **n, int *k);
int fs_resolve(struct tusfs *t, const char *path,
	       const struct fuse_file_info *fi, struct node **n, int *k);
int fs_check_room(const struct tusfs *t, const struct node *dir,
		  const char *name, unsigned levels, const struct node *n);
int fs_check_name(const struct tusfs *t, const struct node *dir,
		  const char *name, bool file, const struct node *n);
void fs_entry_changed(struct tusfs *t, struct node *n, struct node *dir);

/* fs_attr.c: the status sidecar and the extended attributes. */
int fs_render_status_of(const struct tusfs *t, const struct node *n, char **buf,
			size_t *len);
void fs_fill_sidecar_stat(const struct tusfs *t, const struct node *n, int k,
			  struct stat *st);
int tfs_getxattr(const char *path, const char *name, char *value, size_t size);
int tfs_setxattr(const char *path, const char *name, const char *value,
		 size_t size, int flags);
int tfs_listxattr(const char *path, char *list, size_t size);

/* fs_dir.c: listings. */
int tfs_opendir(const char *path, struct fuse_file_info *fi);
int tfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		struct fuse_file_info *fi, enum fuse_readdir_flags flags);
int tfs_releasedir(const char *path, struct fuse_file_info *fi);

/* fs_file.c: open files. */
struct handle *fs_handle_of(const struct fuse_file_info *fi);
int fs_handle_size(const struct handle *h, struct stat *st);
int tfs_create(const char *path, mode_t mode, struct fuse_file_info *fi);
int tfs_open(const char *path, struct fuse_file_info *fi);
int tfs_read(const char *path, char *buf, size_t size, off_t off,
	     struct fuse_file_info *fi);
int tfs_write(const char *path, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi);
int tfs_flush(const char *path, struct fuse_file_info *fi);
int tfs_release(const char *path, struct fuse_file_info *fi);
int tfs_fsync(const char *path, int datasync, struct fuse_file_info *fi);
int tfs_truncate(const char *path, off_t size, struct fuse_file_info *fi);

#endif
