#!/usr/bin/env bash
# Memcheck: builds a plain Debug tree in build/valgrind (valgrind cannot run
# sanitized binaries), runs every unit test under valgrind, then a short
# real session of the daemon under it: the reference backend, a foreground
# mount with 512 KiB chunks, files of one byte to several chunks in two
# directories, a rename and an unlink, a transcription that completes and
# three that fail (not audio), the sidecars and xattrs read back,
# `tusfs wait` and `tusfs status` (under valgrind too), every hash checked
# on the server, fusermount3 -u; then a remount that restores it all from
# the journal. Any memcheck error or any definitely or indirectly lost
# block fails it; "still reachable" and "possibly lost" do not.
# tests/valgrind.supp holds the third-party suppressions. Logs:
# build/valgrind/vg/*.log. About 10 s once built.
#
# Then the namespace and security bats files run with the daemon and the
# CLI under memcheck (--all-bats: the whole integration suite).
#
# Usage: scripts/valgrind.sh [--all-bats]   (run by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/build/valgrind
logs=$dir/vg
VG_ERROR=99

cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DTUSFS_WERROR=ON >/dev/null
cmake --build "$dir" -j"$(nproc)" >"$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
rm -rf "$logs"
mkdir -p "$logs"

# vg NAME: sets VG to the memcheck command line that reports in
# $logs/NAME.log (an array, so that "${VG[@]}" CMD & leaves valgrind's own
# PID in $!).
vg() {
	VG=(valgrind --tool=memcheck --leak-check=full
		"--errors-for-leak-kinds=definite,indirect"
		--error-exitcode="$VG_ERROR" --num-callers=30
		--suppressions="$root/tests/valgrind.supp"
		--log-file="$logs/$1.log")
}

status=0
# report NAME RC: one line per run; the memcheck report when it failed.
report() {
	if [ "$2" -eq 0 ]; then
		echo "valgrind: $1: no errors, no leaks"
		return 0
	fi
	status=1
	if [ "$2" -eq "$VG_ERROR" ]; then
		echo "valgrind: $1: FAILED (memcheck errors or leaks)"
	else
		echo "valgrind: $1: FAILED (exit $2)"
	fi
	grep -E '^==[0-9]+== ' "$logs/$1.log" | head -n 80 || true
	echo "  full report: $logs/$1.log"
}

# --- Unit tests, each in its own directory as ctest runs them ---
units=0
for t in "$dir"/tests/unit/test_*; do
	if [ ! -f "$t" ] || [ ! -x "$t" ]; then
		continue
	fi
	name=$(basename "$t")
	vg "$name"
	rc=0
	(cd "$dir/tests/unit" && timeout 300 "${VG[@]}" "$t" >"$logs/$name.out" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || cat "$logs/$name.out"
	report "$name" "$rc"
	units=$((units + 1))
done
[ "$units" -gt 0 ] || { echo "valgrind: no unit test binaries in $dir"; exit 1; }

# --- A daemon session ---
T=$(mktemp -d)
MNT=$T/mnt STORE=$T/store STATE=$T/state
mkdir -p "$MNT" "$STORE" "$T/src"
BACKEND_PID="" TUSFS_PID=""
mounted() {
	grep -q " $MNT fuse" /proc/mounts
}
cleanup() {
	if mounted; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" || true
	fi
	[ -z "$TUSFS_PID" ] || kill -9 "$TUSFS_PID" 2>/dev/null || true
	[ -z "$BACKEND_PID" ] || kill "$BACKEND_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "valgrind: daemon session: $*"
	tail -n 30 "$T/daemon.err" 2>/dev/null || true
	exit 1
}

node tests/backend/server.js --dir "$STORE" --log "$T/requests.log" \
	--port-file "$T/port" --task-delay 0 --task-step-ms 100 \
	>"$T/backend.out" 2>&1 &
BACKEND_PID=$!
for _ in $(seq 200); do
	[ -s "$T/port" ] && break
	sleep 0.05
done
[ -s "$T/port" ] || { cat "$T/backend.out"; fail "the backend did not start"; }
endpoint=http://127.0.0.1:$(cat "$T/port")/uploads/files/

# mount_vg NAME: the daemon under memcheck, in the foreground, as TUSFS_PID.
mount_vg() {
	vg "$1"
	"${VG[@]}" "$dir/tusfs" -f -o "state_dir=$STATE,chunk_size=512K" \
		"$endpoint" "$MNT" 2>>"$T/daemon.err" &
	TUSFS_PID=$!
	for _ in $(seq 600); do
		mounted && return 0
		kill -0 "$TUSFS_PID" 2>/dev/null || break
		sleep 0.1
	done
	fail "no mount after 60 s"
}

# unmount_vg NAME: fusermount3 -u, then the daemon's exit and report.
unmount_vg() {
	local rc=0
	fusermount3 -u "$MNT"
	for _ in $(seq 900); do
		kill -0 "$TUSFS_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$TUSFS_PID" 2>/dev/null; then
		kill -9 "$TUSFS_PID"
		echo "valgrind: $1 did not exit within 90 s of the unmount"
	fi
	wait "$TUSFS_PID" || rc=$?
	TUSFS_PID=""
	report "$1" "$rc"
}

start=$SECONDS
mount_vg daemon

# One byte, one under a chunk, a few chunks and a bit, and real speech
# (WAV) over several chunks, so the transcription side runs too.
head -c 1 /dev/urandom >"$T/src/one"
head -c 524287 /dev/urandom >"$T/src/under"
head -c 1572881 /dev/urandom >"$T/src/three"
node tests/backend/mkmedia.mjs "$T/src/talk.wav" --seconds 40 --seed 3
mkdir "$MNT/sub"
cp "$T/src/one" "$MNT/one.bin"
cp "$T/src/under" "$MNT/sub/under.bin"
cp "$T/src/three" "$MNT/three.tmp"
mv "$MNT/three.tmp" "$MNT/three.bin"
cp "$T/src/talk.wav" "$MNT/talk.wav"
echo gone >"$MNT/gone.bin"
rm "$MNT/gone.bin"

rc=0
vg wait
timeout 120 "${VG[@]}" "$dir/tusfs" wait "$MNT" --timeout 90 >"$T/wait.out" 2>&1 || rc=$?
report wait "$rc"
[ "$rc" -eq 0 ] || { cat "$T/wait.out"; fail "tusfs wait failed"; }
# The random files' transcriptions fail (not audio), talk.wav's completes.
for _ in $(seq 600); do
	[ -s "$MNT/talk.wav.txt" ] && break
	sleep 0.1
done
rc=0
vg status
timeout 60 "${VG[@]}" "$dir/tusfs" status "$MNT" >"$T/status.out" 2>&1 || rc=$?
report status "$rc"

# Read back through the mount: data, sidecars, xattrs, listings.
cmp "$T/src/three" "$MNT/three.bin" || fail "three.bin reads back wrong"
for f in txt srt vtt json status; do
	[ -s "$MNT/talk.wav.$f" ] || fail "talk.wav.$f is empty"
	cat "$MNT/talk.wav.$f" >/dev/null
done
getfattr --absolute-names -d -m - "$MNT/talk.wav" >/dev/null
ls -lR "$MNT" >/dev/null
[ ! -e "$MNT/gone.bin" ] || fail "gone.bin is still listed"

# What the server stored: filename (column 5) and sha256 (column 4).
node tests/backend/inspect.js "$STORE" >"$T/stored"
check() { # NAME SOURCE
	local got
	got=$(awk -F'\t' -v n="$1" '$5 == n { print $4 }' "$T/stored")
	[ "$got" = "$(sha256sum <"$2" | cut -d' ' -f1)" ] ||
		fail "$1: the server holds '$got', not $2's bytes"
}
check one.bin "$T/src/one"
check under.bin "$T/src/under"
check three.bin "$T/src/three"
check talk.wav "$T/src/talk.wav"

ls -R "$MNT" >"$T/ls.before"
unmount_vg daemon

# A remount restores all of it from the journal: the listing, the
# transcripts, the cached spool; then one unlink.
mount_vg remount
ls -R "$MNT" | diff "$T/ls.before" - || fail "the remount lists other entries"
cmp "$T/src/three" "$MNT/three.bin" || fail "three.bin reads back wrong after the remount"
[ -s "$MNT/talk.wav.txt" ] || fail "talk.wav.txt is gone after the remount"
cat "$MNT"/*.status >/dev/null
rm "$MNT/one.bin"
unmount_vg remount
echo "valgrind: daemon session took $((SECONDS - start)) s"

# --- Integration tests with the daemon (and CLI) under memcheck ---
# The namespace and the hostile-input tests; the whole suite passes too
# (--all-bats, about 7 minutes), less the tests that time a slower daemon
# or install the binary.
bats_files=(tests/integration/namespace.bats tests/integration/security.bats)
[ "${1:-}" = --all-bats ] && bats_files=(tests/integration)
wrapper=$dir/tusfs-memcheck
printf '%s\n' '#!/bin/sh' \
	"exec valgrind -q --tool=memcheck --leak-check=full \
--errors-for-leak-kinds=definite,indirect --error-exitcode=$VG_ERROR \
--suppressions=$root/tests/valgrind.supp --log-file=$logs/bats-%p.log \
$dir/tusfs \"\$@\"" >"$wrapper"
chmod +x "$wrapper"
start=$SECONDS
rc=0
TUSFS_BIN=$wrapper bats --tap "${bats_files[@]}" >"$logs/bats.tap" 2>&1 || rc=$?
# A memcheck finding fails its test (the daemon's exit status); -q leaves
# a log empty unless there was one.
bad=$(find "$logs" -name 'bats-*.log' -size +0 | head -n 5)
if [ "$rc" -ne 0 ] || [ -n "$bad" ]; then
	status=1
	grep -A5 '^not ok' "$logs/bats.tap" || true
	for f in $bad; do
		head -n 40 "$f"
	done
	echo "valgrind: bats: FAILED (full output: $logs/bats.tap)"
else
	echo "valgrind: bats: $(grep -c '^ok' "$logs/bats.tap") tests," \
		"$(find "$logs" -name 'bats-*.log' | wc -l) processes, no errors," \
		"no leaks ($((SECONDS - start)) s)"
fi
exit "$status"
