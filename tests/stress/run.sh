#!/usr/bin/env bash
# Runs the model-based exerciser (tests/stress/exerciser.py) over a set of
# seeds: one reference backend on loopback for the run, and a fresh tusfs
# mount (its own state_dir) per seed, all in a temp dir that is removed at
# the end unless --keep (or a failure) says otherwise. Whatever it started
# is unmounted and stopped on exit, also on a failure or ^C. Prints one
# line per seed, then "N passed, M failed"; exits 1 if any failed.
#
# usage: tests/stress/run.sh [--seeds "1 2 3" | --count N [--first S]]
#          [--ops N] [--chunk SIZE] [--profile tree|single] [--fsync-every]
#          [--check-fsync] [--check-nlink] [--pause] [--mmap] [--files K] [--max-size BYTES]
#          [--timeout S] [--mount-opts OPTS] [--scenario NAME] [--remount-at OP]...
#          [--keep] [--quiet]
#          [-- server.js options...]
#
# --remount-at OP kills the daemon with -9 after op OP and mounts again
# with the same state_dir (remount.sh); the tree and every file's bytes
# must then equal the model's, and the run goes on. --scenario runs a fixed op sequence, a regression (exerciser.py
# --help lists them), instead of random ops. Everything after "--" goes to the backend, e.g. -- --fail-share 0.1 or
# -- --without creation-with-upload. TUSFS_BIN picks the daemon (default
# build/stress/tusfs, then build/ci-sanitize/tusfs). A hang (an op that
# does not return within --timeout seconds) is reported with the seed,
# the op trace, every thread's backtrace (gdb, when installed) and the
# file's xattrs, and counts as failed.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/tests/stress

seeds="" count=3 first=1 ops=300 chunk=256K profile=tree files=3
timeout=30 keep=0 quiet=0 mount_opts="" max_size="" remount_at=()
ex_flags=()
backend_args=()
while [ $# -gt 0 ]; do
	case $1 in
	--seeds) seeds=$2; shift ;;
	--count) count=$2; shift ;;
	--first) first=$2; shift ;;
	--ops) ops=$2; shift ;;
	--chunk) chunk=$2; shift ;;
	--profile) profile=$2; shift ;;
	--files) files=$2; shift ;;
	--max-size) max_size=$2; shift ;;
	--timeout) timeout=$2; shift ;;
	--mount-opts) mount_opts=$2; shift ;;
	--scenario) ex_flags+=(--scenario "$2"); count=1; shift ;;
	--remount-at) remount_at+=(--remount-at "$2"); shift ;;
	--fsync-every | --check-fsync | --check-nlink | --pause | --mmap) ex_flags+=("$1") ;;
	--keep) keep=1 ;;
	--quiet) quiet=1 ;;
	--) shift; backend_args=("$@"); break ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$seeds" ] || seeds=$(seq "$first" $((first + count - 1)))
[ -n "$max_size" ] && ex_flags+=(--max-size "$max_size")

if [ -z "${TUSFS_BIN:-}" ]; then
	for b in "$REPO/build/stress/tusfs" "$REPO/build/ci-sanitize/tusfs" \
		"$REPO/build/tusfs"; do
		[ -x "$b" ] && { TUSFS_BIN=$b; break; }
	done
fi
[ -x "${TUSFS_BIN:-}" ] || {
	echo "run.sh: no tusfs binary; build first (README) or set TUSFS_BIN" >&2
	exit 2
}
[ -d "$REPO/tests/backend/node_modules" ] ||
	(cd "$REPO/tests/backend" && npm ci --no-audit --no-fund --loglevel=error)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

T=$(mktemp -d "${TMPDIR:-/tmp}/tusfs-stress.XXXXXX")
BACKEND_PID="" TUSFS_PID="" MNT="" EX_PID=""

unmount() {
	if [ -n "$MNT" ] && grep -q " $MNT fuse" /proc/mounts; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" || true
	fi
	# A remount (remount.sh) started a daemon of its own.
	[ -n "$MNT" ] && [ -s "$(dirname "$MNT")/tusfs.pid" ] &&
		TUSFS_PID=$(cat "$(dirname "$MNT")/tusfs.pid")
	if [ -n "$TUSFS_PID" ]; then
		for _ in $(seq 100); do
			kill -0 "$TUSFS_PID" 2>/dev/null || break
			sleep 0.05
		done
		kill -9 "$TUSFS_PID" 2>/dev/null || true
		wait "$TUSFS_PID" 2>/dev/null || true
	fi
	TUSFS_PID="" MNT=""
}

cleanup() {
	if [ -n "$EX_PID" ]; then
		kill "$EX_PID" 2>/dev/null || true
		wait "$EX_PID" 2>/dev/null || true
	fi
	unmount
	if [ -n "$BACKEND_PID" ]; then
		kill "$BACKEND_PID" 2>/dev/null || true
		wait "$BACKEND_PID" 2>/dev/null || true
	fi
	if [ "$keep" = 1 ] || [ "${failed:-0}" -gt 0 ]; then
		echo "run.sh: kept $T"
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$T/store"
node "$REPO/tests/backend/server.js" --dir "$T/store" --log "$T/requests.log" \
	--port-file "$T/port" "${backend_args[@]}" >"$T/backend.out" 2>&1 &
BACKEND_PID=$!
for _ in $(seq 200); do
	[ -s "$T/port" ] && break
	sleep 0.05
done
[ -s "$T/port" ] || { cat "$T/backend.out" >&2; exit 2; }
ENDPOINT=http://127.0.0.1:$(cat "$T/port")/uploads/files/

passed=0 failed=0 failures="" total_ops=0
for seed in $seeds; do
	S=$T/seed-$seed
	MNT=$S/mnt
	mkdir -p "$MNT" "$S/model"
	opts="state_dir=$S/state,chunk_size=$chunk,transcripts=off"
	[ -n "$mount_opts" ] && opts="$opts,$mount_opts"
	"$TUSFS_BIN" -f -o "$opts" "$ENDPOINT" "$MNT" 2>>"$S/daemon.log" &
	TUSFS_PID=$!
	echo "$TUSFS_PID" >"$S/tusfs.pid"
	for _ in $(seq 400); do
		grep -q " $MNT fuse" /proc/mounts && break
		kill -0 "$TUSFS_PID" 2>/dev/null || break
		sleep 0.05
	done
	if ! grep -q " $MNT fuse" /proc/mounts; then
		echo "seed $seed: the mount failed" >&2
		cat "$S/daemon.log" >&2
		failed=$((failed + 1)) failures="$failures $seed(mount)"
		unmount
		continue
	fi
	hang="gdb -p \$(cat $S/tusfs.pid) -batch -ex 'thread apply all bt' \
>$S/hang.gdb 2>&1 || true; echo 'backtraces: $S/hang.gdb' >&2"
	command -v gdb >/dev/null || hang=""
	rc=0
	"$PY" "$HERE/exerciser.py" --mount "$MNT" --model "$S/model" \
		--store "$T/store" --seed "$seed" --ops "$ops" \
		--profile "$profile" --files "$files" --timeout "$timeout" \
		--tusfs "$TUSFS_BIN" --trace-file "$S/trace" \
		--on-hang "$hang" "${ex_flags[@]}" "${remount_at[@]}" \
		--remount-cmd "$HERE/remount.sh $S $ENDPOINT $opts $TUSFS_BIN" \
		>"$S/out" 2>&1 &
	# In the background, so that a signal to run.sh is acted on at once.
	EX_PID=$!
	wait "$EX_PID" || rc=$?
	EX_PID=""
	case $rc in
	0)
		passed=$((passed + 1))
		n=$(sed -n 's/.*: \([0-9]*\) ops passed.*/\1/p' "$S/out")
		total_ops=$((total_ops + ${n:-0}))
		[ "$quiet" = 1 ] || cat "$S/out"
		;;
	3)
		failed=$((failed + 1)) failures="$failures $seed(hang)"
		cat "$S/out" >&2
		;;
	*)
		failed=$((failed + 1)) failures="$failures $seed(rc=$rc)"
		cat "$S/out" >&2
		;;
	esac
	unmount
	[ "$rc" = 0 ] && [ "$keep" = 0 ] && rm -rf "$S"
done
echo "ops: $total_ops in passing seeds; chunk $chunk, profile $profile," \
	"backend: ${backend_args[*]:-defaults}"
[ -z "$failures" ] || echo "failed seeds:$failures"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
