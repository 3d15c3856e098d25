#!/usr/bin/env bash
# Fuzzes: builds every libFuzzer target (tests/fuzz/fuzz_NAME.c) with clang
# and -DTUSFS_FUZZ=ON in build/fuzz, then runs each for SECONDS with its
# dictionary (tests/fuzz/NAME.dict) on a scratch copy of its seed corpus
# (tests/fuzz/corpus/NAME/), so new inputs never land in the repository.
# Prints each target's executions; exits non-zero if any target crashed,
# leaked or tripped a sanitizer (the reproducer is kept in
# build/fuzz/artifacts/, the full output in build/fuzz/NAME.log).
#
# Usage: scripts/fuzz.sh [SECONDS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
case $secs in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac
dir=build/fuzz

CC=clang cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTUSFS_FUZZ=ON >/dev/null
targets=()
for src in tests/fuzz/fuzz_*.c; do
	targets+=("$(basename "$src" .c)")
done
cmake --build "$dir" -j"$(nproc)" --target "${targets[@]}" >"$dir/build.log" 2>&1 ||
	{ cat "$dir/build.log"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir/artifacts"

status=0
for t in "${targets[@]}"; do
	name=${t#fuzz_}
	mkdir "$work/$name"
	cp tests/fuzz/corpus/"$name"/* "$work/$name"/
	rc=0
	"$dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len=16384 -dict=tests/fuzz/"$name".dict \
		-artifact_prefix="$dir/artifacts/$t-" -print_final_stats=1 \
		"$work/$name" >"$dir/$t.log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/$t.log")
	if [ "$rc" -eq 0 ]; then
		echo "$t: ${execs:-?} executions in ${secs}s, no findings"
	else
		status=1
		echo "$t: FAILED (exit $rc) after ${execs:-?} executions"
		grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' \
			"$dir/$t.log" | head -n 5 || true
		echo "  log: $dir/$t.log; reproducer: $dir/artifacts/$t-*"
	fi
done
exit "$status"
