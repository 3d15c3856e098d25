/*
 * Option parsing: sizes, the option table, and refusals with messages.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "fuse/config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

TEST(sizes)
{
	uint64_t v;

	ASSERT_EQ(config_parse_size("1048576", &v), 0);
	ASSERT_EQ(v, 1048576);
	ASSERT_EQ(config_parse_size("50M", &v), 0);
	ASSERT_EQ(v, 50ULL << 20);
	ASSERT_EQ(config_parse_size("64k", &v), 0);
	ASSERT_EQ(v, 64ULL << 10);
	ASSERT_EQ(config_parse_size("2G", &v), 0);
	ASSERT_EQ(v, 2ULL << 30);
	ASSERT_EQ(config_parse_size("50MiB", &v), 0);
	ASSERT_EQ(v, 50ULL << 20);
	ASSERT_EQ(config_parse_size("50MB", &v), 0);
	ASSERT_EQ(config_parse_size("", &v), -EINVAL);
	ASSERT_EQ(config_parse_size("M", &v), -EINVAL);
	ASSERT_EQ(config_parse_size("-1", &v), -EINVAL);
	ASSERT_EQ(config_parse_size("5X", &v), -EINVAL);
	ASSERT_EQ(config_parse_size("5Mx", &v), -EINVAL);
	ASSERT_EQ(config_parse_size("99999999999999999999", &v), -EINVAL);
	ASSERT_EQ(config_parse_size("17179869184G", &v), -EINVAL);
}

static int parse(struct config *cfg, const char *opts)
{
	char o[256], *argv[6];
	struct fuse_args args;
	int rc;

	snprintf(o, sizeof(o), "%s", opts);
	argv[0] = strdup("tusfs");
	argv[1] = strdup("-o");
	argv[2] = o;
	argv[3] = strdup("http://h/");
	argv[4] = strdup("/mnt");
	argv[5] = NULL;
	args = (struct fuse_args)FUSE_ARGS_INIT(5, argv);
	rc = config_parse(cfg, &args);
	fuse_opt_free_args(&args);
	free(argv[0]);
	free(argv[1]);
	free(argv[3]);
	free(argv[4]);
	return rc;
}

TEST(defaults)
{
	struct config cfg;

	ASSERT_EQ(parse(&cfg, "ro"), 0);
	ASSERT_EQ(cfg.chunk_size, 50ULL << 20);
	ASSERT_EQ(cfg.max_uploads, 4);
	ASSERT_STREQ(cfg.endpoint, "http://h/");
	ASSERT(!cfg.fsync_local);
	ASSERT(cfg.language == NULL);
	ASSERT_STREQ(cfg.temp_names, CONFIG_DEFAULT_TEMP_NAMES);
	ASSERT(!cfg.delete_remote);
	ASSERT_EQ(cfg.max_task_json, 32 << 20);
	ASSERT_EQ(cfg.max_depth, 64);
	config_clear(&cfg);
}

TEST(temp_names_and_delete_remote)
{
	struct config cfg;

	ASSERT_EQ(parse(&cfg, "temp_names=*.part/~*,delete_remote"), 0);
	ASSERT_STREQ(cfg.temp_names, "*.part/~*");
	ASSERT(cfg.delete_remote);
	config_clear(&cfg);
	ASSERT_EQ(parse(&cfg, "temp_names="), 0);
	ASSERT_STREQ(cfg.temp_names, "");
	config_clear(&cfg);
}

TEST(options)
{
	struct config cfg;

	ASSERT_EQ(parse(&cfg, "chunk_size=1M,max_uploads=8,language=lv,"
			      "state_dir=/s,log_level=debug,fsync=local,"
			      "max_task_json=64K,max_depth=3"),
		  0);
	ASSERT_EQ(cfg.max_task_json, 64 << 10);
	ASSERT_EQ(cfg.max_depth, 3);
	ASSERT_EQ(cfg.chunk_size, 1ULL << 20);
	ASSERT_EQ(cfg.max_uploads, 8);
	ASSERT_STREQ(cfg.language, "lv");
	ASSERT_STREQ(cfg.state_dir, "/s");
	ASSERT_EQ(cfg.log_level, LOG_LEVEL_DEBUG);
	ASSERT(cfg.fsync_local);
	config_clear(&cfg);
}

TEST(refusals)
{
	const char *bad[] = {
	    "chunk_size=1K",	  "chunk_size=5G",  "chunk_size=lots",
	    "max_uploads=0",	  "max_uploads=65", "log_level=loud",
	    "fsync=maybe",	  "language=",	    "temp_names=a//b",
	    "temp_names=/a",	  "temp_names=a/",  "max_task_json=1000",
	    "max_task_json=257M", "max_depth=0",    "max_depth=2049"};
	struct config cfg;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ASSERT_EQ(parse(&cfg, bad[i]), -EINVAL);
		config_clear(&cfg);
	}
}

TEST(auth_file_must_be_private)
{
	char dir[] = "/tmp/tusfs-test-XXXXXX";
	char path[64];
	struct config cfg;
	int fd;

	ASSERT(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	ASSERT(fd >= 0);
	ASSERT_EQ(write(fd, "whsk_secret\n", 12), 12);
	close(fd);
	ASSERT_EQ(parse(&cfg, "ro"), 0);
	cfg.auth_file = strdup(path);
	ASSERT_EQ(config_finish(&cfg, dir), -EACCES);
	ASSERT(cfg.token == NULL);
	chmod(path, 0600);
	ASSERT_EQ(config_finish(&cfg, dir), 0);
	ASSERT_STREQ(cfg.token, "whsk_secret");
	config_clear(&cfg);
	unlink(path);
	rmdir(dir);
}

TEST(a_token_with_control_characters_is_refused)
{
	struct config cfg;

	unsetenv("XDG_STATE_HOME");
	setenv("TUSFS_TOKEN", "whsk\r\nX-Injected: 1", 1);
	ASSERT_EQ(parse(&cfg, "state_dir=/tmp/x"), 0);
	ASSERT_EQ(config_finish(&cfg, "/tmp"), -EINVAL);
	ASSERT(cfg.token == NULL);
	setenv("TUSFS_TOKEN", "whsk_env", 1);
	ASSERT_EQ(config_finish(&cfg, "/tmp"), 0);
	ASSERT_STREQ(cfg.token, "whsk_env");
	unsetenv("TUSFS_TOKEN");
	config_clear(&cfg);
}

TEST(tls_options)
{
	struct config cfg;

	ASSERT_EQ(parse(&cfg, "cafile=/etc/hostname,insecure"), 0);
	ASSERT_STREQ(cfg.cafile, "/etc/hostname");
	ASSERT(cfg.insecure);
	config_clear(&cfg);
	/* A CA file that cannot be read is refused before mounting. */
	ASSERT_EQ(parse(&cfg, "cafile=/nonexistent/ca.pem"), 0);
	ASSERT_EQ(config_finish(&cfg, "/tmp"), -EINVAL);
	config_clear(&cfg);
}

TEST(mountpoint_checks)
{
	struct config cfg;

	ASSERT_EQ(parse(&cfg, "state_dir=/tmp/x"), 0);
	ASSERT_EQ(config_finish(&cfg, "/nonexistent/dir"), -ENOENT);
	ASSERT_EQ(config_finish(&cfg, "/etc/hostname"), -ENOTDIR);
	config_clear(&cfg);
}

TEST(default_state_dir_is_per_mount)
{
	struct config a, b;

	setenv("XDG_STATE_HOME", "/xdg", 1);
	unsetenv("TUSFS_TOKEN");
	ASSERT_EQ(parse(&a, "ro"), 0);
	ASSERT_EQ(parse(&b, "ro"), 0);
	ASSERT_EQ(config_finish(&a, "/tmp"), 0);
	ASSERT_EQ(config_finish(&b, "/"), 0);
	ASSERT(strncmp(a.state_dir, "/xdg/tusfs/", 11) == 0);
	ASSERT_EQ(strlen(a.state_dir), 11 + 16);
	ASSERT(strcmp(a.state_dir, b.state_dir) != 0);
	config_clear(&a);
	config_clear(&b);
}

TEST_MAIN
