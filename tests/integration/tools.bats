#!/usr/bin/env bats
# The tools people copy with, run for real against a mount: rsync -a (and
# again: nothing sent), rsync --partial interrupted and rerun, cp -a, mv
# into and within the mount, gio copy, a writer seeking back over sent
# chunks, and a 500-file batch. Each is checked against what the server
# stored: the bytes (sha256), filename and relativePath.

load helpers/common

setup() {
	common_setup
	backend_start
}

teardown() {
	common_teardown
}

# mktree DIR: recordings in subfolders, one with an odd mode and old mtime.
mktree() {
	mkdir -p "$1/2026/jan" "$1/2026/feb" "$1/notes"
	head -c 700000 /dev/urandom >"$1/2026/jan/interview.wav"
	head -c 1500000 /dev/urandom >"$1/2026/feb/lecture one.mp3"
	head -c 3000 /dev/urandom >"$1/notes/memo.m4a"
	head -c 5 /dev/urandom >"$1/top.wav"
	chmod 640 "$1/top.wav"
	touch -d "2024-05-06 07:08:09" "$1/2026/jan/interview.wav"
}

# same_attrs SRC: modes and mtimes in the mount match SRC's.
same_attrs() {
	local rel
	while IFS= read -r rel; do
		[ "$(stat -c '%a %Y %s' "$1/$rel")" = "$(stat -c '%a %Y %s' "$MNT/$rel")" ] ||
			{ echo "attributes differ: $rel"; return 1; }
	done < <(cd "$1" && find . -type f | sed 's|^\./||')
}

@test "rsync -a of a tree: exit 0, every byte and path on the server; a second run sends nothing" {
	mktree "$T/src"
	tusfs_mount chunk_size=256K
	run rsync -a "$T/src/" "$MNT/"
	echo "rsync: $status $output"
	[ "$status" -eq 0 ]
	"$TUSFS_BIN" wait "$MNT" --timeout 60
	assert_tree "$T/src"
	same_attrs "$T/src"
	# Only final names were created on the server (rsync writes to
	# .NAME.XXXXXX and renames), so nothing had to be taken back.
	[ "$(requests POST | wc -l)" -eq 4 ]
	[ -z "$(requests DELETE)" ]
	local before
	before=$(grep -c '"path":"/uploads/' "$REQLOG")
	run rsync -a --stats "$T/src/" "$MNT/"
	echo "rsync again: $status $output"
	[ "$status" -eq 0 ]
	grep -q "Number of regular files transferred: 0" <<<"$output"
	sleep 0.5
	[ "$(grep -c '"path":"/uploads/' "$REQLOG")" -eq "$before" ]
}

@test "rsync --partial interrupted, then rerun: the server ends with the whole file" {
	head -c 24000000 /dev/urandom >"$T/big.wav"
	tusfs_mount chunk_size=1M
	# In a session of its own, so that ^C can go to its process group.
	setsid -w bash -c 'echo $$ >"$1"; exec rsync --partial --bwlimit=3000 "$2" "$3"' \
		_ "$T/rsync.pid" "$T/big.wav" "$MNT/" &
	local waiter=$!
	# rsync writes .big.wav.XXXXXX; a temporary name, so nothing goes.
	for _ in $(seq 100); do
		ls -a "$MNT" | grep -q '^\.big\.wav\.......$' && break
		sleep 0.1
	done
	sleep 2
	[ -z "$(requests POST)" ]
	kill -INT -- "-$(cat "$T/rsync.pid")"
	local st=0
	wait "$waiter" || st=$?
	echo "interrupted rsync: $st"
	[ "$st" -eq 20 ]  # rsync's "received SIGINT"
	# The receiver, rsync's child, keeps the partial file as it exits,
	# which may be after the parent: wait for the whole group.
	for _ in $(seq 100); do
		kill -0 -- "-$(cat "$T/rsync.pid")" 2>/dev/null || break
		sleep 0.1
	done
	# --partial kept what had arrived, under the final name.
	local part
	part=$(stat -c %s "$MNT/big.wav")
	[ "$part" -gt 0 ]
	[ "$part" -lt 24000000 ]
	run rsync --partial "$T/big.wav" "$MNT/"
	echo "rerun: $status $output"
	[ "$status" -eq 0 ]
	"$TUSFS_BIN" wait "$MNT" --timeout 60
	cmp "$T/big.wav" "$MNT/big.wav"
	# The newest upload named big.wav is the whole file; the partial one
	# is either complete (and left, its task is the user's) or terminated:
	# nothing is left half-sent.
	[ "$(inspect --json | jq -r '[.[] | select(.filename == "big.wav")] | sort_by(.creation_date) | last | .sha256')" = "$(sha "$T/big.wav")" ]
	inspect --no-hash | awk -F'\t' '$2 != $3 { bad = 1 } END { exit bad }'
}

@test "cp -a of a tree keeps modes and times; every byte and path on the server" {
	mktree "$T/src"
	tusfs_mount
	run cp -a "$T/src/." "$MNT/"
	echo "cp -a: $status $output"
	[ "$status" -eq 0 ]
	"$TUSFS_BIN" wait "$MNT" --timeout 60
	assert_tree "$T/src"
	same_attrs "$T/src"
}

@test "mv into the mount uploads; mv within it is local and keeps the upload" {
	tusfs_mount
	mkdir "$T/out"
	head -c 300000 /dev/urandom >"$T/out/moved.wav"
	cp "$T/out/moved.wav" "$T/expected"
	run mv "$T/out/moved.wav" "$MNT/"
	[ "$status" -eq 0 ]
	[ ! -e "$T/out/moved.wav" ]
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	assert_stored moved.wav "$T/expected"
	mkdir "$MNT/archive"
	run mv "$MNT/moved.wav" "$MNT/archive/renamed.wav"
	[ "$status" -eq 0 ]
	run mv "$MNT/archive" "$MNT/archive-2026"
	[ "$status" -eq 0 ]
	cmp "$T/expected" "$MNT/archive-2026/renamed.wav"
	[ "$(xattr state archive-2026/renamed.wav)" = uploaded ]
	# Local: one upload, under the name it had when it was created.
	[ "$(requests POST | wc -l)" -eq 1 ]
	[ "$(inspect --no-hash | cut -f5)" = moved.wav ]
	[ "$(entries)" = archive-2026 ]
	[ "$(entries "$MNT/archive-2026")" = renamed.wav ]
}

@test "gio copy of a large file, then of a new version over it: the right bytes under the right name" {
	head -c 40000000 /dev/urandom >"$T/lecture.wav"
	tusfs_mount chunk_size=8M
	run gio copy "$T/lecture.wav" "$MNT/"
	echo "gio copy: $status $output"
	[ "$status" -eq 0 ]
	"$TUSFS_BIN" wait "$MNT" --timeout 60
	assert_stored lecture.wav "$T/lecture.wav"
	# Over the uploaded file: GIO opens it for writing, writes
	# .goutputstream-XXXXXX, fsyncs that and renames it over.
	mkdir "$T/v2"
	head -c 20000000 /dev/urandom >"$T/v2/lecture.wav"
	run gio copy "$T/v2/lecture.wav" "$MNT/"
	echo "gio copy over it: $status $output"
	[ "$status" -eq 0 ]
	"$TUSFS_BIN" wait "$MNT" --timeout 60
	cmp "$T/v2/lecture.wav" "$MNT/lecture.wav"
	[ "$(inspect --json | jq -r '[.[] | select(.filename == "lecture.wav")] | sort_by(.creation_date) | last | .sha256')" = "$(sha "$T/v2/lecture.wav")" ]
	inspect --no-hash | awk -F'\t' '$2 != $3 { bad = 1 } END { exit bad }'
}

@test "a writer that seeks back to offset 0 after 3 sent chunks leaves exactly the final bytes" {
	tusfs_mount chunk_size=1M
	head -c 3700000 /dev/urandom >"$T/src"
	cp "$T/src" "$T/expected"
	printf 'ftypmp42moov' | dd of="$T/expected" conv=notrunc status=none
	# One descriptor, as a muxer has it: write, wait until three chunks
	# are on the server, seek to 0, patch the header, close.
	run perl -e '
		my ($src, $dst, $mnt) = @ARGV;
		open(my $in, "<:raw", $src) or die; local $/; my $data = <$in>;
		open(my $out, "+>:raw", $dst) or die "$dst: $!";
		syswrite($out, $data) == length($data) or die "write: $!";
		for (1 .. 300) {
			my $p = `getfattr --only-values -n user.tusfs.progress "$dst" 2>/dev/null`;
			last if (split / /, $p)[0] >= 3 * 1048576;
			select(undef, undef, undef, 0.1);
		}
		sysseek($out, 0, 0) or die; syswrite($out, "ftypmp42moov") == 12 or die;
		close($out) or die "close: $!";' "$T/src" "$MNT/movie.mp4"
	echo "perl: $status $output"
	[ "$status" -eq 0 ]
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	assert_stored movie.mp4 "$T/expected"
	# The rewrite restarted the upload: the first one was terminated.
	[ "$(requests POST | wc -l)" -eq 2 ]
	requests DELETE | grep -q '"status":204'
}

# fds_settled BOUND: the daemon's open descriptors, once at most BOUND or
# after 5 s. The kernel sends a file's release after cp's close(2) has
# returned, so the last spool descriptors may still be closing.
fds_settled() {
	local n
	for _ in $(seq 50); do
		n=$(ls "/proc/$TUSFS_PID/fd" | wc -l)
		[ "$n" -le "$1" ] && break
		sleep 0.1
	done
	echo "$n"
}

@test "500 files with find | xargs -P 8 cp -t: all intact, max_uploads at once, fds and memory back to idle" {
	mkdir "$T/batch"
	for i in $(seq 500); do
		head -c $((1000 + i * 97)) /dev/urandom >"$T/batch/memo-$i.wav"
	done
	# The plain Debug build: the sanitizer's quarantine would hide what
	# the daemon's own memory does.
	TUSFS_BIN=$REPO/build/ci-debug/tusfs tusfs_mount max_uploads=4
	local fds0 rss0 fds1 rss1
	sleep 0.5
	fds0=$(ls "/proc/$TUSFS_PID/fd" | wc -l)
	run bash -c "find '$T/batch' -type f -print0 | xargs -0 -P 8 -n 20 cp -t '$MNT/'"
	echo "find | xargs cp: $status $output"
	[ "$status" -eq 0 ]
	"$TUSFS_BIN" wait "$MNT" --timeout 120
	assert_tree "$T/batch"
	# The server never had more than max_uploads uploads in flight, and
	# did have several.
	local most
	most=$(jq -s '[.[] | .uploads_in_flight // 0] | max' "$REQLOG")
	echo "most uploads in flight: $most"
	[ "$most" -le 4 ]
	[ "$most" -ge 2 ]
	rss0=$(awk '/^VmRSS/ { print $2 }' "/proc/$TUSFS_PID/status")
	# Back to idle but for what each HTTP handle keeps (4 workers, 2
	# pollers): its connection and libcurl's wake-up socket pair; no
	# spool descriptor, nothing per file.
	fds1=$(fds_settled $((fds0 + 3 * 6)))
	echo "fds: idle $fds0, after $fds1"
	[ "$fds1" -le $((fds0 + 3 * 6)) ]
	[ -z "$(ls -l "/proc/$TUSFS_PID/fd" | grep "$STATE/spool/")" ]
	# A second batch of 500 costs no more memory than the first left.
	for i in $(seq 500); do
		head -c $((1000 + i * 97)) /dev/urandom >"$T/batch/memo-$i.wav"
	done
	find "$T/batch" -type f -print0 | xargs -0 -P 8 -n 20 cp -t "$MNT/"
	"$TUSFS_BIN" wait "$MNT" --timeout 120
	rss1=$(awk '/^VmRSS/ { print $2 }' "/proc/$TUSFS_PID/status")
	echo "RSS after the first batch ${rss0} KiB, after the second ${rss1} KiB"
	[ "$rss1" -le $((rss0 + 2048)) ]
	[ "$(fds_settled $((fds0 + 3 * 6)))" -le $((fds0 + 3 * 6)) ]
}
