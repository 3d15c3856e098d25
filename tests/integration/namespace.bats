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

@test "an uploaded file cannot be reopened for writing without O_TRUNC" {
	tusfs_mount
	echo done >"$MNT/final.wav"
	wait_complete 1
	run bash -c "echo more >>'$MNT/final.wav'"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Operation not permitted"* ]]
	run truncate -s 2 "$MNT/final.wav"
	[ "$status" -ne 0 ]
	[ "$(cat "$MNT/final.wav")" = done ]
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

@test "chmod, chown to self and utimens are stored and reported" {
	tusfs_mount
	echo x >"$MNT/a.wav"
	chmod 640 "$MNT/a.wav"
	[ "$(stat -c %a "$MNT/a.wav")" = 640 ]
	touch -d "2020-02-02 02:02:02" "$MNT/a.wav"
	[ "$(stat -c %Y "$MNT/a.wav")" -eq "$(date -d "2020-02-02 02:02:02" +%s)" ]
	chown "$(id -u):$(id -g)" "$MNT/a.wav"
	df "$MNT" >/dev/null
}
