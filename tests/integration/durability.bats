#!/usr/bin/env bats
# The durability contract: a daemon killed mid-copy, a server killed
# mid-upload, a shutdown with uploads pending, a full spool disk and a
# damaged journal all end with the right bytes on the server, and bytes the
# server confirmed are not sent twice. Every byte is checked by hashing what
# the server stored.

load helpers/common

CHUNK=$((8 * 1024 * 1024))

setup() {
	common_setup
}

teardown() {
	local rc=0
	common_teardown || rc=$?
	if mountpoint -q "$STATE" 2>/dev/null; then
		umount "$STATE"
	fi
	return $rc
}

tusfs_wait() {
	"$TUSFS_BIN" wait "$MNT" "$@"
}

# backend_restart DELAY: kill -9 the backend, start it again on its port.
backend_restart() { # SECONDS [backend options...]
	kill -9 "$BACKEND_PID"
	wait "$BACKEND_PID" 2>/dev/null || true
	sleep "$1"
	shift
	backend_start --port "$PORT" "$@"
}

# first_patch_offset_after LINE: Upload-Offset of the first PATCH logged
# after request log line LINE.
first_patch_offset_after() {
	tail -n +"$(($1 + 1))" "$REQLOG" | grep -m1 '"method":"PATCH"' |
		grep -o '"upload_offset":[0-9]*' | cut -d: -f2
}

# The service's server (BACKEND.md 1b), which starts a transcription on
# every PATCH that finds an upload complete: each test below ends with
# exactly one hook run.
@test "kill -9 at 40% of a 120 MB copy: remount resumes, nothing confirmed is re-sent" {
	backend_start --profile tuspyserver
	tusfs_mount "chunk_size=8M"
	head -c 120000000 /dev/urandom >"$T/src"
	node "$REPO/tests/integration/helpers/slowcopy.mjs" "$T/src" "$MNT/big.wav" 40000000 &
	local writer=$!
	wait_offset big.wav 48000000 60
	tusfs_crash
	kill -9 "$writer" 2>/dev/null || true
	wait "$writer" 2>/dev/null || true

	local held lines
	held=$(stored_bytes big.wav)
	lines=$(wc -l <"$REQLOG")
	tusfs_mount "chunk_size=8M"
	tusfs_wait --timeout 60
	# The file is what the writer got into the spool before the crash.
	local size
	size=$(stat -c %s "$MNT/big.wav")
	[ "$size" -ge "$held" ]
	head -c "$size" "$T/src" >"$T/prefix"
	assert_stored big.wav "$T/prefix"
	# Resumed from the server's offset, and at most one chunk went twice.
	[ "$(first_patch_offset_after "$lines")" -eq "$held" ]
	local resent=$(($(patch_bytes) - size))
	echo "held $held of $size at the crash; re-sent $resent bytes" >&3
	[ "$resent" -le "$CHUNK" ]
	[ "$(hook_runs big.wav)" -eq 1 ]
}

@test "kill -9 after the copy, before the upload: remount finishes it unasked" {
	backend_start --profile tuspyserver
	tusfs_mount "chunk_size=8M"
	head -c 120000000 /dev/urandom >"$T/src"
	cp "$T/src" "$MNT/done.wav"
	wait_offset done.wav 30000000 60
	tusfs_crash

	tusfs_mount "chunk_size=8M"
	wait_complete 1 60
	assert_stored done.wav "$T/src"
	[ $(($(patch_bytes) - 120000000)) -le "$CHUNK" ]
	[ "$(hook_runs done.wav)" -eq 1 ]
}

# Not against the tuspyserver profile: a server killed mid-PATCH leaves
# bytes past its saved offset, and the next PATCH appends after them (a
# hazard no client can see, docs/SEMANTICS.md); service.bats restarts that
# server between requests instead.
@test "the server killed mid-upload and back 3 s later: the upload completes" {
	backend_start
	tusfs_mount "chunk_size=4M"
	head -c 60000000 /dev/urandom >"$T/src"
	# Spooled whole first (a held name), so requests follow each other
	# without waiting for a slow writer and the downtime meets one.
	cp "$T/src" "$MNT/talk.wav.part"
	mv "$MNT/talk.wav.part" "$MNT/talk.wav"
	wait_offset talk.wav 12000000 60
	backend_restart 3
	tusfs_wait --timeout 60
	assert_stored talk.wav "$T/src"
	grep -q "retry" "$DLOG"
}

@test "SIGTERM with uploads in flight exits at once; the next mount resumes" {
	backend_start
	tusfs_mount "chunk_size=4M"
	head -c 20000000 /dev/urandom >"$T/src"
	cp "$T/src" "$MNT/held.wav"
	wait_offset held.wav 4000000 30
	# A frozen server: the request in flight gets no answer.
	kill -STOP "$BACKEND_PID"
	sleep 0.5
	local start=$SECONDS
	kill -TERM "$TUSFS_PID"
	wait "$TUSFS_PID"
	TUSFS_PID=
	[ $((SECONDS - start)) -le 3 ]
	! mounted || false
	kill -CONT "$BACKEND_PID"

	tusfs_mount "chunk_size=4M"
	tusfs_wait --timeout 60
	assert_stored held.wav "$T/src"
}

@test "fsync on a file still being written waits for the server's confirmation" {
	backend_start
	tusfs_mount chunk_size=1M
	head -c 3000000 /dev/urandom >"$T/src"
	exec 7>"$MNT/half.wav"
	# dd writes to the shell's descriptor and fsyncs it; 7 stays open.
	head -c 1500000 "$T/src" | dd conv=fsync status=none >&7
	[ "$(stored_bytes half.wav)" -eq 1500000 ]
	tail -c +1500001 "$T/src" >&7
	exec 7>&-
	tusfs_wait --timeout 30
	assert_stored half.wav "$T/src"
}

@test "a permanent refusal: tusfs wait names the file and the server's reason" {
	# A body limit below the smallest request tusfs shrinks to (64 KiB).
	backend_start --body-limit 32768
	tusfs_mount chunk_size=2M
	head -c 5000000 /dev/urandom >"$T/src"
	cp "$T/src" "$MNT/refused.wav" || true
	echo fine >"$MNT/fine.txt"
	run tusfs_wait --timeout 30
	[ "$status" -eq 1 ]
	[[ "$output" == *"refused.wav: failed:"*"413"*"a request body of 65536 bytes was refused"* ]]
	[[ "$output" != *"fine.txt"* ]]
	[ "$(xattr state refused.wav)" = failed ]
	[[ "$(xattr error refused.wav)" == *413* ]]
	cmp "$T/src" "$MNT/refused.wav"
	# The daemon goes on serving other files.
	echo more >"$MNT/more.txt"
	wait_complete 2
}

@test "a full spool disk gives the writer ENOSPC; earlier files upload intact" {
	mkdir -p "$STATE"
	mount -t tmpfs -o size=24m tmpfs "$STATE"
	backend_start
	tusfs_mount chunk_size=1M
	head -c 6000000 /dev/urandom >"$T/a"
	head -c 6000000 /dev/urandom >"$T/b"
	cp "$T/a" "$MNT/a.wav"
	cp "$T/b" "$MNT/b.wav"
	run dd if=/dev/urandom of="$MNT/c.wav" bs=1M count=40
	[ "$status" -ne 0 ]
	[[ "$output" == *"No space left on device"* ]]
	tusfs_wait --timeout 60
	assert_stored a.wav "$T/a"
	assert_stored b.wav "$T/b"
}

@test "a damaged journal: the mount works, the damage is reported, the rest resumes" {
	backend_start
	tusfs_mount
	# The server goes away, so the uploads stay pending.
	kill -9 "$BACKEND_PID"
	wait "$BACKEND_PID" 2>/dev/null || true
	for f in a b c; do
		head -c 300000 /dev/urandom >"$T/$f"
		cp "$T/$f" "$MNT/$f.wav"
	done
	local ia ib
	ia=$(stat -c %i "$MNT/a.wav")
	ib=$(stat -c %i "$MNT/b.wav")
	tusfs_unmount
	[ "$DAEMON_STATUS" -eq 0 ]
	# A flipped byte in both copies of one record (the second copy, if
	# any, starts at 64 KiB), a torn (truncated) other.
	local at
	for at in 40 $((65536 + 40)); do
		printf 'X' | dd of="$STATE/journal/$ia" bs=1 seek=$at \
			conv=notrunc status=none
	done
	truncate -s 25 "$STATE/journal/$ib"

	backend_start --port "$PORT"
	tusfs_mount
	tusfs_wait --timeout 30
	assert_stored c.wav "$T/c"
	grep -q "journal record $ia is damaged" "$DLOG"
	grep -q "journal record $ib is damaged" "$DLOG"
	[ "$(entries)" = c.wav ]
	# Their bytes are kept for the user to recover.
	cmp "$T/a" "$STATE/spool/$ia"
	cmp "$T/b" "$STATE/spool/$ib"
}

@test "completed spools are a cache: released oldest first, never before completion" {
	backend_start --stall-ms 4000
	tusfs_mount "chunk_size=1M,cache_size=5M"
	head -c 3000000 /dev/urandom >"$T/a"
	head -c 3000000 /dev/urandom >"$T/b"
	cp "$T/a" "$MNT/a.wav"
	local ia
	ia=$(stat -c %i "$MNT/a.wav")
	# Its first answer is held back: not complete, so the spool stays.
	wait_offset a.wav 1048576 30
	[ -f "$STATE/spool/$ia" ]
	tusfs_wait --timeout 30
	cmp "$T/a" "$MNT/a.wav"
	# A second file pushes the cache past 5M: the older spool goes.
	cp "$T/b" "$MNT/b.wav"
	tusfs_wait --timeout 30
	[ ! -e "$STATE/spool/$ia" ]
	[ "$(stat -c %s "$MNT/a.wav")" -eq 3000000 ]
	run cat "$MNT/a.wav"
	[[ "$output" == *"No data available"* ]]
	cmp "$T/b" "$MNT/b.wav"
	assert_stored a.wav "$T/a"
	assert_stored b.wav "$T/b"
	# The release survives a remount.
	tusfs_unmount
	tusfs_mount "chunk_size=1M,cache_size=5M"
	[ "$(stat -c %s "$MNT/a.wav")" -eq 3000000 ]
	cmp "$T/b" "$MNT/b.wav"
}

@test "a remount brings back the tree: names, folders, modes, times, inodes" {
	backend_start
	tusfs_mount
	mkdir -p "$MNT/2026/march"
	echo one >"$MNT/2026/march/a.wav"
	echo two >"$MNT/b.wav"
	mv "$MNT/b.wav" "$MNT/2026/b2.wav"
	chmod 640 "$MNT/2026/b2.wav"
	chmod 750 "$MNT/2026/march"
	touch -d "2020-01-02 03:04:05.123456789" "$MNT/2026/march/a.wav"
	tusfs_wait --timeout 30
	# NAME.status is as new as its content; the entries must match.
	ls -lRi --time-style=full-iso "$MNT" | grep -v -e '\.status$' -e '^total' >"$T/before"
	tusfs_unmount
	[ "$DAEMON_STATUS" -eq 0 ]

	tusfs_mount
	ls -lRi --time-style=full-iso "$MNT" | grep -v -e '\.status$' -e '^total' >"$T/after"
	diff "$T/before" "$T/after"
	[ "$(xattr state 2026/march/a.wav)" = uploaded ]
	# Nothing is uploaded again.
	[ "$(requests POST | wc -l)" -eq 2 ]
}

@test "a file written front to back is fingerprinted from its writes, others from the spool, and both check out at the next mount" {
	backend_start
	tusfs_mount log_level=debug
	kill -9 "$BACKEND_PID"
	wait "$BACKEND_PID" 2>/dev/null || true
	head -c 3000000 /dev/urandom >"$T/src"
	cp "$T/src" "$MNT/inorder.wav"
	# Back half first, then the front: never one stream from byte 0.
	dd if="$T/src" of="$MNT/backfirst.wav" bs=1500000 skip=1 seek=1 status=none
	dd if="$T/src" of="$MNT/backfirst.wav" bs=1500000 count=1 conv=notrunc status=none
	for _ in $(seq 100); do
		grep -q "'backfirst.wav': .*retry" "$DLOG" && break
		sleep 0.1
	done
	grep -q "'inorder.wav': fingerprint taken from the writes" "$DLOG"
	! grep -q "'inorder.wav': fingerprint read" "$DLOG" || false
	grep -q "'backfirst.wav': fingerprint read from the spool" "$DLOG"
	! grep -q "'backfirst.wav': fingerprint taken" "$DLOG" || false
	tusfs_unmount

	# A wrong fingerprint would fail the file here, before any byte goes.
	backend_start --port "$PORT"
	tusfs_mount
	tusfs_wait --timeout 30
	assert_stored inorder.wav "$T/src"
	assert_stored backfirst.wav "$T/src"
}

@test "a spool changed behind tusfs's back is detected before anything is sent" {
	backend_start
	tusfs_mount
	kill -9 "$BACKEND_PID"
	wait "$BACKEND_PID" 2>/dev/null || true
	head -c 300000 /dev/urandom >"$T/src"
	cp "$T/src" "$MNT/tampered.wav"
	echo intact >"$MNT/intact.wav"
	local ino
	ino=$(stat -c %i "$MNT/tampered.wav")
	# The worker's first try (after it fingerprinted the sealed spool).
	for _ in $(seq 100); do
		grep -q "'tampered.wav': .*retry" "$DLOG" && break
		sleep 0.1
	done
	tusfs_unmount
	printf 'X' | dd of="$STATE/spool/$ino" bs=1 seek=1000 conv=notrunc status=none

	backend_start --port "$PORT"
	tusfs_mount
	run tusfs_wait --timeout 30
	[ "$status" -eq 1 ]
	[[ "$output" == *"tampered.wav: failed:"*"fingerprint"* ]]
	# Not one byte of it went out; the other file did.
	[ "$(inspect --no-hash | awk -F'\t' '$5 == "tampered.wav"' | wc -l)" -eq 0 ]
	[ "$(inspect --no-hash | awk -F'\t' '$5 == "intact.wav"' | wc -l)" -eq 1 ]
}
