#!/usr/bin/env bash
# The demo: builds tusfs, starts the reference backend on loopback, mounts
# it, copies a generated recording in, and shows what the server stored.
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
	--body-limit 100000000 >/dev/null &
backend_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
endpoint="http://127.0.0.1:$(cat "$work/port")/uploads/files/"
echo "== reference backend at $endpoint"

bin=build/release/tusfs
"$bin" -o "state_dir=$work/state" "$endpoint" "$work/mnt"
echo "== mounted at $work/mnt"

# A 30 s, 16 kHz mono WAV of a 440 Hz tone: about 1 MB.
node -e '
const rate = 16000, secs = 30, n = rate * secs, b = Buffer.alloc(44 + 2 * n);
b.write("RIFF", 0); b.writeUInt32LE(36 + 2 * n, 4); b.write("WAVEfmt ", 8);
b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22);
b.writeUInt32LE(rate, 24); b.writeUInt32LE(2 * rate, 28);
b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34); b.write("data", 36);
b.writeUInt32LE(2 * n, 40);
for (let i = 0; i < n; i++)
  b.writeInt16LE(Math.round(8000 * Math.sin(2 * Math.PI * 440 * i / rate)), 44 + 2 * i);
process.stdout.write(b);' >"$work/recording.wav"

echo "== cp recording.wav into the mount"
cp "$work/recording.wav" "$work/mnt/"
ls -l "$work/mnt"

echo "== tusfs wait: until the server confirms every byte"
"$bin" wait "$work/mnt" --timeout 60
echo "== upload state: $(getfattr --absolute-names --only-values -n user.tusfs.state "$work/mnt/recording.wav")"
line=$(node tests/backend/inspect.js "$work/store" | grep recording.wav || true)
echo "== the server stored (id, size, offset, sha256, filename, type, taskId):"
echo "$line"
local_sha=$(sha256sum "$work/recording.wav" | cut -d' ' -f1)
if [ "$(cut -f4 <<<"$line")" = "$local_sha" ]; then
	echo "== byte-identical: sha256 $local_sha"
else
	echo "== MISMATCH: local sha256 $local_sha" >&2
	exit 1
fi
