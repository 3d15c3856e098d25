#!/usr/bin/env bash
# Soak: runs the model-based exerciser (tests/stress/run.sh) for as long as
# asked, cycling through chunk sizes (4K, 64K, 256K), op mixes (one file
# held open with fsync after every op; a tree of files and folders without
# and with fsync after every op; the tree with two kill -9 and remounts)
# and the backend (defaults, with --fail-share 0.1, then its tuspyserver
# profile), one new seed per run, always with --check-nlink (directories'
# st_nlink must be 2 plus their subdirectories). Prints a line per run
# and at the end the runs, seeds and ops that passed and the failures
# (each kept in its temp dir with its trace). Exits 1 if anything failed.
# The time is kept: a run still going at the end is stopped there and
# reported as cut (neither passed nor failed).
#
# usage: scripts/soak.sh [--minutes N] [--ops N] [--first-seed S]
#   (defaults: 30 minutes, 1000 ops per seed, seeds from 1000)
# TUSFS_BIN picks the daemon, as for run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30 ops=1000 seed=1000
while [ $# -gt 0 ]; do
	case $1 in
	--minutes) minutes=$2; shift ;;
	--ops) ops=$2; shift ;;
	--first-seed) seed=$2; shift ;;
	-h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

end=$(($(date +%s) + minutes * 60))
runs=0 seeds_ok=0 seeds_bad=0 seeds_cut=0 total_ops=0 failures=""
chunks=(4K 64K 256K)
# A 4 KiB chunk sends a 4 MiB file in 1 024 PATCHes: smaller files there.
declare -A max_size=([4K]=256K [64K]=2M [256K]=4M)
mixes=("--profile single --fsync-every --check-fsync" "--profile tree --pause"
	"--profile tree --fsync-every --check-fsync --mmap"
	"--profile tree --remount-at $((ops / 3)) --remount-at $((ops * 2 / 3))")
faults=("" "--fail-share 0.1" "--profile tuspyserver")
log=$(mktemp "${TMPDIR:-/tmp}/tusfs-soak.XXXXXX")
child=""
trap 'rm -f "$log"; [ -z "$child" ] || kill "$child" 2>/dev/null; wait' EXIT
trap 'exit 130' INT TERM

i=0
while [ "$(date +%s)" -lt "$end" ]; do
	chunk=${chunks[$((i % 3))]}
	mix=${mixes[$((i / 3 % 4))]}
	fault=${faults[$((i / 12 % 3))]}
	size=${max_size[$chunk]}
	i=$((i + 1))
	size_bytes=$(numfmt --from=iec "$size")
	# In the background, so that a signal to soak.sh is acted on at once
	# (run.sh then stops what it started); under timeout, so that a slow
	# run (one file at 4K with faults and fsync after every op takes most
	# of an hour) does not outlast the soak.
	# shellcheck disable=SC2086 # mix and fault are word lists
	timeout $((end - $(date +%s) + 1)) tests/stress/run.sh --seeds "$seed" \
		--ops "$ops" --chunk "$chunk" --max-size "$size_bytes" \
		--timeout 120 --quiet --check-nlink $mix ${fault:+-- $fault} \
		>"$log" 2>&1 &
	child=$!
	rc=0
	wait "$child" || rc=$?
	child=""
	if [ "$rc" = 124 ]; then
		seeds_cut=$((seeds_cut + 1))
		result="cut at the end of the soak"
	elif [ "$rc" = 0 ]; then
		seeds_ok=$((seeds_ok + 1))
		n=$(sed -n 's/^ops: \([0-9]*\) .*/\1/p' "$log")
		total_ops=$((total_ops + ${n:-0}))
		result=passed
	else
		seeds_bad=$((seeds_bad + 1))
		kept=$(sed -n 's/^run.sh: kept //p' "$log")
		failures="$failures
  seed $seed chunk $chunk $mix ${fault:-no faults}: $(grep -m1 -E \
			'^(HANG|DIVERGENCE|seed .*: the mount)' "$log" || tail -1 "$log") ($kept)"
		result=FAILED
	fi
	runs=$((runs + 1))
	echo "run $runs: seed $seed chunk $chunk $mix ${fault:-no faults}: $result"
	seed=$((seed + 1))
done

echo "soak: $minutes min, $runs runs, $total_ops ops in $seeds_ok passing" \
	"seeds, $seeds_bad failed, $seeds_cut cut at the end"
[ -z "$failures" ] || echo "failures:$failures"
echo "$seeds_ok passed, $seeds_bad failed"
[ "$seeds_bad" = 0 ]
