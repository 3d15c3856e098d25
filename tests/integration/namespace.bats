#!/usr/bin/env bats
# The namespace around uploads: subfolders (relativePath), rename, unlink
# during an upload (terminated, no more traffic), a writer seeking back
# into bytes already sent (the upload restarts so the server ends with the
# final bytes), O_TRUNC over an uploaded file (a new upload and taskId),
# immutability of finished uploads, and attributes.

load helpers/common

setup() {
	common_setup
	backend_start
}

teardown() {
	common_teardown
}

@test "past max_depth levels, mkdir, create and rename fail with ENAMETOOLONG; what fits is uploaded" {
	tusfs_mount max_depth=3,transcripts=off
	mkdir -p "$MNT/a/b/c"
	run mkdir "$MNT/a/b/c/d"
	[ "$status" -ne 0 ]
	[[ "$output" == *"File name too long"* ]]
	# A file at the deepest level is fine.
	echo deep >"$T/deep"
	cp "$T/deep" "$MNT/a/b/c/deep.wav"
	# A subtree is measured whole: x/y under a/b would be four levels.
	mkdir -p "$MNT/x/y"
	run mv "$MNT/x" "$MNT/a/b/x"
	[ "$status" -ne 0 ]
	[[ "$output" == *"File name too long"* ]]
	[ -d "$MNT/x/y" ]
	mv "$MNT/x" "$MNT/a/x"
	[ -d "$MNT/a/x/y" ]
	grep -q "'d': refused: more than max_depth=3 directory levels" "$DLOG"
	wait_complete 1
	assert_stored deep.wav "$T/deep"
	[ "$(inspect --no-hash | cut -f8)" = "a/b/c/deep.wav" ]
}

@test "a path below the mount fits in 4095 bytes, so relativePath always goes whole" {
	tusfs_mount transcripts=off
	local d f g
	d=$(printf 'd%.0s' $(seq 250))
	f=$(printf 'f%.0s' $(seq 75)).wav
	g=$(printf 'g%.0s' $(seq 76)).wav
	echo whole >"$T/src"
	# Sixteen levels of 250-byte names, reached one step at a time: the
	# whole path is past what one system call takes (PATH_MAX).
	(
		cd "$MNT"
		for _ in $(seq 16); do
			mkdir "$d"
			cd "$d"
		done
		# 16 * 251 + 79 = 4095 bytes: fits.
		cp "$T/src" "$f"
		# One byte more does not.
		! cp "$T/src" "$g" 2>"$T/err" || false
		grep -q "File name too long" "$T/err"
	)
	grep -q "refused: a path below the mount would be longer than 4095 bytes" "$DLOG"
	wait_complete 1
	assert_stored "$f" "$T/src"
	local rel
	rel=$(inspect --no-hash | cut -f8)
	[ "${#rel}" -eq 4095 ]
	[ "$rel" = "$(printf "$d/%.0s" $(seq 16))$f" ]
}

@test "uploads from a subfolder carry relativePath" {
	tusfs_mount
	mkdir -p "$MNT/2026/jan"
	echo hello >"$T/src"
	cp "$T/src" "$MNT/2026/jan/talk.wav"
	wait_complete 1
	assert_stored talk.wav "$T/src"
	[ "$(inspect --no-hash | cut -f8)" = "2026/jan/talk.wav" ]
	rmdir "$MNT/2026/jan" 2>/dev/null && false
	rm "$MNT/2026/jan/talk.wav"
	rmdir "$MNT/2026/jan" "$MNT/2026"
	[ -z "$(ls "$MNT")" ]  # the sidecars went too
}

@test "a directory's link count is 2 plus its subdirectories, through mkdir, rmdir, rename and a remount" {
	tusfs_mount
	links() { stat -c %h "$MNT/$1"; }
	[ "$(links .)" -eq 2 ]
	mkdir -p "$MNT/a/b" "$MNT/a/c" "$MNT/d"
	echo x >"$MNT/a/file.wav"
	[ "$(links .)" -eq 4 ]
	[ "$(links a)" -eq 4 ]
	[ "$(links a/b)" -eq 2 ]
	# A directory moved to another parent: both counts follow.
	mv "$MNT/a/c" "$MNT/d/"
	[ "$(links a)" -eq 3 ]
	[ "$(links d)" -eq 3 ]
	# Renamed over an empty directory: the victim's link goes.
	mkdir "$MNT/d/e"
	[ "$(links d)" -eq 4 ]
	mv -T "$MNT/d/c" "$MNT/d/e"
	[ "$(links d)" -eq 3 ]
	rmdir "$MNT/a/b"
	[ "$(links a)" -eq 2 ]
	# find's leaf optimisation relies on it: every directory is found.
	[ "$(find "$MNT" -type d | wc -l)" -eq 4 ]
	tusfs_unmount
	tusfs_mount
	[ "$(links .)" -eq 4 ]
	[ "$(links d)" -eq 3 ]
}

@test "unlink during an upload terminates it and stops the traffic" {
	tusfs_mount chunk_size=256K
	head -c 2000000 /dev/urandom >"$T/src"
	exec 7>"$MNT/gone.wav"
	cat "$T/src" >&7
	wait_offset gone.wav 262144
	rm "$MNT/gone.wav"
	[ ! -e "$MNT/gone.wav" ]
	# The writer goes on (bash's builtin printf: no fstat, see SEMANTICS).
	printf '%0800000d' 0 >&7
	exec 7>&-
	for _ in $(seq 100); do
		requests DELETE | grep -q '"status":204' && break
		sleep 0.1
	done
	requests DELETE | grep -q '"status":204'
	# Nothing for that upload after its DELETE.
	sleep 1
	tail -n 1 "$REQLOG" | grep -q '"method":"DELETE"'
	[ -z "$(inspect --no-hash)" ]
}

@test "seeking back into sent bytes restarts the upload with the final bytes" {
	tusfs_mount chunk_size=1M
	head -c 3500000 /dev/urandom >"$T/src"
	cp "$T/src" "$T/expected"
	exec 7>"$MNT/movie.mp4"
	head -c 3145728 "$T/src" >&7
	wait_offset movie.mp4 2097152
	# A muxer patching its header at offset 0 while the file is open.
	printf 'MOOVHEADER' | dd of="$MNT/movie.mp4" conv=notrunc status=none
	printf 'MOOVHEADER' | dd of="$T/expected" conv=notrunc status=none
	tail -c +3145729 "$T/src" >&7
	exec 7>&-
	wait_complete 1
	assert_stored movie.mp4 "$T/expected"
	requests DELETE | grep -q '"status":204'
}

@test "cp over an uploaded file starts a new upload with a new taskId" {
	tusfs_mount
	echo first >"$T/a"
	echo second version >"$T/b"
	cp "$T/a" "$MNT/note.wav"
	wait_complete 1
	cp "$T/b" "$MNT/note.wav"
	wait_complete 2
	[ "$(inspect --no-hash | cut -f7 | sort -u | wc -l)" -eq 2 ]
	inspect | awk -F'\t' '{ print $4 }' | grep -qx "$(sha "$T/b")"
	cmp "$T/b" "$MNT/note.wav"
}

@test "an uploaded file cannot be written without O_TRUNC: EPERM, nothing changes" {
	tusfs_mount
	echo done >"$MNT/final.wav"
	wait_complete 1
	run bash -c "echo more >>'$MNT/final.wav'"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Operation not permitted"* ]]
	run bash -c "printf X | dd of='$MNT/final.wav' conv=notrunc status=none"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Operation not permitted"* ]]
	run truncate -s 2 "$MNT/final.wav"
	[ "$status" -ne 0 ]
	# Opening it for writing works (GIO's replace does it before renaming
	# a new version over it); closing it sends nothing.
	exec 7>>"$MNT/final.wav"
	exec 7>&-
	[ "$(cat "$MNT/final.wav")" = done ]
	sleep 0.5
	[ "$(requests POST | wc -l)" -eq 1 ]
	[ "$(xattr state final.wav)" = uploaded ]
}

@test "rename is local and a renamed file keeps its bytes" {
	tusfs_mount
	echo x >"$MNT/a.wav"
	echo y >"$MNT/b.wav"
	wait_complete 2
	mv "$MNT/a.wav" "$MNT/c.wav"
	mv -f "$MNT/b.wav" "$MNT/c.wav"
	[ "$(entries)" = c.wav ]
	[ "$(cat "$MNT/c.wav")" = y ]
	[ "$(requests POST | wc -l)" -eq 2 ]
}

@test "only user.* exists: other namespaces answer ENOTSUP once, so ls -l does not ask every entry" {
	# libfuse's debug lines show the requests the kernel sent.
	tusfs_mount debug,transcripts=off
	mkdir "$MNT/many"
	for i in $(seq 200); do : >"$MNT/many/f$i.wav"; done
	ls -l "$MNT/many" >"$T/ls"
	[ "$(wc -l <"$T/ls")" -eq 401 ]
	# ENODATA for security.selinux and system.posix_acl_access cost two
	# round trips for each of the 400 entries; ls -l remembers ENOTSUP
	# for the device after the first.
	[ "$(grep -c '^getxattr /many/' "$DLOG")" -le 4 ]
	python3 - "$MNT/many/f1.wav" <<-'PY'
		import errno, os, sys
		for name, want in (("system.posix_acl_access", errno.ENOTSUP),
		                   ("security.selinux", errno.ENOTSUP),
		                   ("user.other", errno.ENODATA)):
		    try:
		        os.getxattr(sys.argv[1], name)
		        raise SystemExit(name + ": no error")
		    except OSError as e:
		        assert e.errno == want, (name, e.errno)
		assert os.getxattr(sys.argv[1], "user.tusfs.state") == b"empty"
	PY
}

@test "chmod, chown to self and utimens are stored and reported; statfs is the spool's" {
	tusfs_mount
	echo x >"$MNT/a.wav"
	chmod 640 "$MNT/a.wav"
	[ "$(stat -c %a "$MNT/a.wav")" = 640 ]
	touch -d "2020-02-02 02:02:02" "$MNT/a.wav"
	[ "$(stat -c %Y "$MNT/a.wav")" -eq "$(date -d "2020-02-02 02:02:02" +%s)" ]
	chown "$(id -u):$(id -g)" "$MNT/a.wav"
	# statfs is the spool's filesystem: block size, blocks, inodes.
	[ "$(stat -f -c '%S %b %c' "$MNT")" = "$(stat -f -c '%S %b %c' "$STATE")" ]
	df "$MNT" >/dev/null
}

@test "temporary names are spooled, not uploaded, until renamed to a final name" {
	tusfs_mount chunk_size=256K
	head -c 1000000 /dev/urandom >"$T/src"
	local temps=(.talk.wav.Ab12xZ talk.wav.part talk.partial .goutputstream-QX81Z2
		talk.crdownload talk.tmp talk.wav~ .#talk.wav ._talk.wav)
	for name in "${temps[@]}"; do
		cp "$T/src" "$MNT/$name"
		[ "$(xattr state "$name")" = held ]
		[ "$(xattr held "$name")" = "temporary name" ]
		grep -q '"state": "held"' "$MNT/$name.status"
		# fsync syncs the spool only; it would hang waiting otherwise.
		timeout 10 sync "$MNT/$name"
	done
	"$TUSFS_BIN" wait "$MNT" --timeout 10  # temporaries are not pending
	sleep 1
	[ -z "$(requests POST)" ]
	[ -z "$(requests PATCH)" ]
	cmp "$T/src" "$MNT/.talk.wav.Ab12xZ"
	mv "$MNT/.talk.wav.Ab12xZ" "$MNT/talk.wav"
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	assert_stored talk.wav "$T/src"
	[ "$(requests POST | wc -l)" -eq 1 ]
	[ "$(xattr state talk.wav)" = uploaded ]
}

@test "temp_names= holds nothing back; a custom list holds only its patterns" {
	tusfs_mount "temp_names=*.x/~*"
	echo a >"$MNT/a.part"
	echo b >"$MNT/b.x"
	echo c >"$MNT/~c"
	wait_complete 1
	sleep 0.5
	[ "$(inspect --no-hash | cut -f5)" = a.part ]
	tusfs_unmount
	tusfs_mount "temp_names="
	wait_complete 3
}

@test "a temporary name renamed while still open streams from the rename on (GIO's way)" {
	tusfs_mount chunk_size=256K
	head -c 1500000 /dev/urandom >"$T/src"
	exec 7>"$MNT/.goutputstream-7XQ2AB"
	head -c 800000 "$T/src" >&7
	sleep 0.5
	[ -z "$(requests POST)" ]
	mv "$MNT/.goutputstream-7XQ2AB" "$MNT/saved.wav"
	# Whole chunks go while the writer still has the file open.
	wait_offset saved.wav 524288
	tail -c +800001 "$T/src" >&7
	exec 7>&-
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	assert_stored saved.wav "$T/src"
	[ "$(inspect --no-hash | cut -f5)" = saved.wav ]
}

@test "a pending upload renamed to a temporary name stops; back to a final name, it starts over" {
	tusfs_mount chunk_size=256K
	head -c 3000000 /dev/urandom >"$T/src"
	exec 7>"$MNT/take.wav"
	head -c 1000000 "$T/src" >&7
	wait_offset take.wav 262144
	local first
	first=$(xattr task_id take.wav)
	mv "$MNT/take.wav" "$MNT/take.wav.part"
	for _ in $(seq 100); do
		requests DELETE | grep -q '"status":204' && break
		sleep 0.1
	done
	requests DELETE | grep -q '"status":204'
	tail -c +1000001 "$T/src" >&7
	exec 7>&-
	sleep 1
	# Nothing went after the DELETE, and the server holds nothing.
	tail -n 1 "$REQLOG" | grep -q '"method":"DELETE"'
	[ -z "$(inspect --no-hash)" ]
	[ "$(xattr state take.wav.part)" = held ]
	mv "$MNT/take.wav.part" "$MNT/final take.wav"
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	assert_stored "final take.wav" "$T/src"
	[ "$(xattr task_id "final take.wav")" != "$first" ]
	# A complete upload renamed to a temporary name stays as it is.
	mv "$MNT/final take.wav" "$MNT/final take.wav~"
	sleep 0.5
	[ "$(xattr state "final take.wav~")" = uploaded ]
	[ "$(requests DELETE | wc -l)" -eq 1 ]
}

@test "tusfs status: a row per file with state, progress, rate, ETA and transcription; --json for scripts" {
	tusfs_mount chunk_size=256K
	mkmedia "$MNT/talk.wav" --seconds 2 --seed 3
	mkdir "$MNT/sub"
	echo draft >"$MNT/sub/notes.wav.part"
	: >"$MNT/empty.wav"
	exec 7>"$MNT/big.wav"
	head -c 1000000 /dev/urandom >&7
	wait_offset big.wav 262144
	for _ in $(seq 300); do
		[ "$(xattr transcription talk.wav)" = completed ] && break
		sleep 0.1
	done
	run "$TUSFS_BIN" status "$MNT"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 5 ]  # a header and four files, no sidecars
	[[ "${lines[0]}" =~ ^FILE\ +SIZE\ +STATE\ +PROGRESS\ +RATE\ +ETA\ +TRANSCRIPTION$ ]]
	[[ "${lines[1]}" =~ ^big.wav\ +976.6\ KiB\ +(uploading|queued)\ +\[#+-+\]\ +[0-9.]+%\ +[0-9.]+\ [KMG]?i?B/s\ +[0-9][0-9hms]*\ +waiting$ ]]
	[[ "${lines[2]}" =~ ^empty.wav\ +0\ B\ +empty\ .*\ -$ ]]
	[[ "${lines[3]}" =~ ^sub/notes.wav.part\ +6\ B\ +held\ +\[-{20}\]\ +0.0%\ .*\ waiting$ ]]
	[[ "${lines[4]}" =~ ^talk.wav\ +[0-9.]+\ KiB\ +uploaded\ +\[#{20}\]\ 100.0%\ +-\ +-\ +completed$ ]]
	run "$TUSFS_BIN" status "$MNT" --json
	[ "$status" -eq 0 ]
	[ "$(jq -r 'map(.path) | join(" ")' <<<"$output")" = "big.wav empty.wav sub/notes.wav.part talk.wav" ]
	[ "$(jq -r '.[2].state' <<<"$output")" = held ]
	[ "$(jq -r '.[3].transcription.status' <<<"$output")" = completed ]
	[ "$(jq -r '.[3].taskId' <<<"$output")" = "$(xattr task_id talk.wav)" ]
	[ "$(jq -r '.[0].bytes_confirmed >= 262144' <<<"$output")" = true ]
	exec 7>&-
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	run "$TUSFS_BIN" status "$MNT"
	[[ "${lines[1]}" =~ ^big.wav\ .*\ uploaded\ +\[#{20}\]\ 100.0%\ +-\ +-\ +(queued|failed)$ ]]
	[[ "${lines[2]}" == "    transcription error: unsupported file: not an audio or video format" ]] ||
		[[ "${lines[1]}" == *queued ]]
	run "$TUSFS_BIN" status "$T"
	[ "$status" -eq 3 ]
	[[ "$output" == *"is not a tusfs mount"* ]]
	run "$TUSFS_BIN" status
	[ "$status" -eq 3 ]
}
