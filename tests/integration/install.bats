#!/usr/bin/env bats
# tusfs installed like a real filesystem: cmake --install puts the binary
# and the man page in place (the man page describes every option and
# subcommand), and mount -t fuse.tusfs, an fstab line and the systemd user
# unit's command line each mount it. mount(8) runs tusfs from root's PATH,
# so those tests run in a mount namespace of their own with the installed
# bin/ bound over /usr/local/bin: the machine's own stays untouched.

load helpers/common

setup() {
	common_setup
	backend_start
	PREFIX=$T/prefix
	cmake --install "$(dirname "$TUSFS_BIN")" --prefix "$PREFIX" >/dev/null
}

teardown() {
	common_teardown
}

# in_namespace SCRIPT [ARGS...]: runs bash SCRIPT with the installed tusfs
# first in mount's PATH; mounts made there vanish with it.
in_namespace() {
	local script=$1
	shift
	unshare -m bash -euc "mount --bind '$PREFIX/bin' /usr/local/bin; $script" _ "$@"
}

@test "cmake --install puts tusfs and tusfs(1) in place; the man page covers every option and subcommand" {
	[ -x "$PREFIX/bin/tusfs" ]
	[ -f "$PREFIX/share/man/man1/tusfs.1" ]
	run "$PREFIX/bin/tusfs" --version
	[ "$status" -eq 0 ]
	# It renders without a warning.
	run bash -c "MANWIDTH=80 man --warnings -l '$PREFIX/share/man/man1/tusfs.1' 2>&1 >/dev/null"
	[ -z "$output" ]
	local page opts
	page=$(MANWIDTH=200 man -l "$PREFIX/share/man/man1/tusfs.1" 2>/dev/null | col -b)
	# tusfs's own options (FUSE's follow in their own section).
	opts=$("$PREFIX/bin/tusfs" --help | sed -n '/^tusfs options:/,/^$/p' |
		grep -oE '^ +-o [a-z_]+' | awk '{ print $2 }')
	[ "$(wc -l <<<"$opts")" -eq 21 ]
	for o in $opts; do
		grep -qE -- "-o $o([=| ]|$)" <<<"$page" || { echo "man page lacks -o $o"; false; }
	done
	for sub in wait status pause resume limit; do
		"$PREFIX/bin/tusfs" --help | grep -q "tusfs $sub MOUNTPOINT"
		grep -q "^       tusfs $sub mountpoint" <<<"$page" || { echo "man page lacks $sub"; false; }
	done
}

@test "mount -t fuse.tusfs, and an fstab line with _netdev,noauto,x-systemd.automount, mount and upload" {
	head -c 2500000 /dev/urandom >"$T/a.wav"
	head -c 1500000 /dev/urandom >"$T/b.wav"
	printf '%s %s fuse.tusfs _netdev,noauto,x-systemd.automount,state_dir=%s,chunk_size=1M 0 0\n' \
		"$ENDPOINT" "$MNT" "$STATE" >"$T/fstab"
	run in_namespace '
		mount -t fuse.tusfs "$1" "$2" -o "state_dir=$3,chunk_size=1M"
		grep -q " $2 fuse.tusfs " /proc/mounts
		cp "$4/a.wav" "$2/"
		tusfs wait "$2" --timeout 30
		umount "$2"
		# The fstab line, as systemd'"'"'s automount or mount MOUNTPOINT uses it.
		mount -T "$4/fstab" "$2"
		cmp "$4/a.wav" "$2/a.wav"
		cp "$4/b.wav" "$2/"
		tusfs wait "$2" --timeout 30
		umount "$2"' "$ENDPOINT" "$MNT" "$STATE" "$T"
	echo "$output"
	[ "$status" -eq 0 ]
	assert_stored a.wav "$T/a.wav"
	assert_stored b.wav "$T/b.wav"
}

@test "the systemd user unit's command line mounts at ~/tus, and stopping it unmounts" {
	local start stop
	mkdir -p "$T/home/.config/tusfs"
	echo key >"$T/home/.config/tusfs/key"
	chmod 600 "$T/home/.config/tusfs/key"
	# What systemd would run: %h is the home, ${TUSFS_ENDPOINT} the
	# Environment= line the user sets.
	start=$(sed -n 's/^ExecStart=//p' "$REPO/docs/tusfs.service")
	stop=$(sed -n 's/^ExecStop=//p' "$REPO/docs/tusfs.service")
	start=${start//%h/$T/home}
	start=${start//\$\{TUSFS_ENDPOINT\}/$ENDPOINT}
	stop=${stop//%h/$T/home}
	[[ "$start" == "/usr/local/bin/tusfs -f "* ]]
	mkdir -p "$T/home/tus"
	head -c 300000 /dev/urandom >"$T/c.wav"
	run in_namespace '
		HOME=$1 XDG_STATE_HOME= $2 &
		pid=$!
		for _ in $(seq 100); do grep -q " $1/tus fuse" /proc/mounts && break; sleep 0.1; done
		cp "$4" "$1/tus/"
		tusfs wait "$1/tus" --timeout 30
		$3
		wait "$pid"' "$T/home" "$start" "$stop" "$T/c.wav"
	echo "$output"
	[ "$status" -eq 0 ]
	assert_stored c.wav "$T/c.wav"
	# The default state directory went under the unit's home.
	[ -d "$T/home/.local/state/tusfs" ]
}

@test "libtus installs alone into a fresh prefix; its example, built with pkg-config only, uploads and resumes" {
	# A build of its own: the suite's builds are sanitized, and a program
	# built with pkg-config alone cannot link an instrumented library.
	cmake -S "$REPO" -B "$T/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$T/build" -j"$(nproc)" --target tus tus_static >/dev/null
	cmake --install "$T/build" --component libtus --prefix "$T/lib" >/dev/null
	[ ! -e "$T/lib/bin" ]
	export PKG_CONFIG_PATH=$T/lib/lib/pkgconfig
	# Its link line names libcurl at most: no FUSE, jansson or xxhash.
	local libs
	libs=$(pkg-config --libs --static tus)
	echo "$libs"
	[[ "$libs" == *"-ltus"* ]]
	! grep -qE 'fuse|jansson|xxhash' <<<"$libs" || false
	# Every public header compiles on its own.
	for h in "$T/lib/include/tus/"*.h; do
		echo "#include <tus/$(basename "$h")>" |
			cc -std=c11 -Wall -Wextra -Werror -fsyntax-only $(pkg-config --cflags tus) -x c -
	done
	# shellcheck disable=SC2046
	cc -o "$T/tus-upload" "$REPO/examples/tus_upload.c" $(pkg-config --cflags --libs tus)
	export LD_LIBRARY_PATH=$T/lib/lib
	ldd "$T/tus-upload" | grep -q "$T/lib/lib/libtus.so"

	# A whole upload, in chunks.
	head -c 3000000 /dev/urandom >"$T/whole.bin"
	run "$T/tus-upload" --chunk 1000000 "$ENDPOINT" "$T/whole.bin"
	[ "$status" -eq 0 ]
	[[ "$output" == "$ENDPOINT"* ]]
	assert_stored whole.bin "$T/whole.bin"
	[ "$(requests PATCH | wc -l)" -eq 3 ]

	# Broken off: the server keeps 700 000 bytes of the first PATCH and
	# cuts the connection; with no retries the run fails after printing
	# the URL, and --resume sends the rest from the server's offset.
	backend_stop
	backend_start --cut-after 700000
	head -c 2500000 /dev/urandom >"$T/cut.bin"
	run "$T/tus-upload" --chunk 1000000 --retries 0 "$ENDPOINT" "$T/cut.bin"
	[ "$status" -eq 1 ]
	local url=${lines[0]}
	[[ "$url" == "$ENDPOINT"* ]]
	[ "$(stored_bytes cut.bin)" -eq 700000 ]
	run "$T/tus-upload" --chunk 1000000 --resume "$url" "$T/cut.bin"
	[ "$status" -eq 0 ]
	assert_stored cut.bin "$T/cut.bin"
	grep '"method":"PATCH"' "$REQLOG" | grep -q '"upload_offset":700000,'
}
