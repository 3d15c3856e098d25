#!/usr/bin/env bash
# The demo: builds tusfs, starts the reference backend on loopback playing
# the service's own server (tuspyserver with the service's completion hook:
# the magic-byte check, the file taken away, a decode before the answer)
# with a real speech recogniser (pocketsphinx), mounts it, speaks a sentence into a
# WAV with espeak-ng, copies it in, waits for the transcript, and prints
# NAME.status and NAME.txt.
# Everything lives in a temp dir that is removed (and unmounted) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

./scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" >/dev/null

work=$(mktemp -d)
backend_pid=""
cleanup() {
	grep -q " $work/mnt fuse" /proc/mounts && fusermount3 -u "$work/mnt"
	[ -n "$backend_pid" ] && kill "$backend_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/store"

node tests/backend/server.js --dir "$work/store" --port-file "$work/port" \
	--profile tuspyserver --service-hook --decode-ms 2000 \
	--body-limit 100000000 --transcriber pocketsphinx >/dev/null &
backend_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
endpoint="http://127.0.0.1:$(cat "$work/port")/uploads/files/"
echo "== reference backend at $endpoint (the service's tuspyserver and hook; transcriber: pocketsphinx)"

bin=build/release/tusfs
"$bin" -o "state_dir=$work/state" "$endpoint" "$work/mnt"
echo "== mounted at $work/mnt"

sentence="Hello world. This is a test of the transcription service."
echo "== espeak-ng says: $sentence"
espeak-ng -v en-us+m3 -s 120 -w "$work/recording.wav" "$sentence"

echo "== cp recording.wav into the mount"
cp "$work/recording.wav" "$work/mnt/"
ls -l "$work/mnt"

echo "== tusfs wait --transcripts: until it is uploaded and transcribed"
"$bin" wait "$work/mnt" --transcripts --timeout 120
line=$(node tests/backend/inspect.js "$work/store" | grep recording.wav || true)
local_sha=$(sha256sum "$work/recording.wav" | cut -d' ' -f1)
if [ "$(cut -f4 <<<"$line")" = "$local_sha" ]; then
	echo "== the server stored it byte-identical: sha256 $local_sha"
	runs=$(grep -c '"result":"ok"' "$work/store/.hooks.jsonl")
	echo "== the service's hook ran $runs time(s): one transcription"
else
	echo "== MISMATCH: local sha256 $local_sha, server: $line" >&2
	exit 1
fi
ls -l "$work/mnt"
echo "== cat recording.wav.status"
cat "$work/mnt/recording.wav.status"
echo "== cat recording.wav.txt (what pocketsphinx, a small offline recogniser, heard in espeak-ng's synthetic voice)"
cat "$work/mnt/recording.wav.txt"
echo "== cat recording.wav.srt"
cat "$work/mnt/recording.wav.srt"
