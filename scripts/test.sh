#!/usr/bin/env bash
# The one test command: installs what is missing, builds a Debug and a
# Sanitize (ASan+UBSan) tree with -Werror, checks formatting, cppcheck and
# clang-tidy, runs the unit tests in both trees, a short smoke run of the
# fuzz targets, the unit tests and a daemon session under valgrind
# (scripts/valgrind.sh), a bounded run of the model-based exerciser
# (tests/stress) and the bats integration suite against the
# sanitized daemon (in two shards at once), and ends with "N passed, M
# failed".
#
# Usage: scripts/test.sh [bats filter regex]
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

./scripts/deps.sh || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
record() { # name status
	if [ "$2" -eq 0 ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "FAILED: $1"
	fi
}

build() { # dir type
	cmake -S . -B "$1" -DCMAKE_BUILD_TYPE="$2" -DTUSFS_WERROR=ON >/dev/null &&
		cmake --build "$1" -j"$(nproc)" >"$1.log" 2>&1 ||
		{ cat "$1.log"; return 1; }
}

for t in Debug Sanitize; do
	dir=build/ci-${t,,}
	build "$dir" "$t"
	record "build $t" $?
	out=$(cd "$dir" && ctest --output-on-failure 2>&1)
	echo "$out" | tail -n 3
	total=$(echo "$out" | sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p')
	bad=$(echo "$out" | sed -n 's/.* \([0-9]*\) tests failed out of.*/\1/p')
	if [ -z "$total" ]; then
		echo "$out"
		record "ctest $t" 1
	else
		passed=$((passed + total - bad))
		failed=$((failed + bad))
		[ "$bad" -eq 0 ] || echo "$out"
	fi
done

# Memcheck: every unit test, a daemon session and two bats files, no
# errors, no leaks. It keeps one core busy for minutes, so it runs beside
# the checks, the fuzz run and the exerciser below (none of which asserts
# a time) and is waited for before the bats suite, which does.
./scripts/valgrind.sh >build/valgrind.out 2>&1 &
valgrind_pid=$!

files=$(git ls-files '*.c' '*.h')
# shellcheck disable=SC2086
clang-format --dry-run --Werror $files
record "clang-format" $?
cppcheck --enable=warning,portability --error-exitcode=1 -q -I include -I src src/
record "cppcheck src/" $?
# .clang-tidy says which checks and why; any finding fails.
tidy=$(git ls-files 'src/*.c' | xargs -P"$(nproc)" -n1 clang-tidy --quiet \
	-p build/ci-debug --warnings-as-errors='*' 2>&1)
rc=$?
[ "$rc" -eq 0 ] || echo "$tidy" | grep -v 'warnings\? generated\.$'
record "clang-tidy src/" "$rc"

# In the middle of a bats test a failing '! cmd' asserts nothing (errexit
# ignores a negated command), so each one ends in '|| false'; nor does the
# first test of '[ a ] && [ b ]', so such pairs are two lines (or a loop's
# '&& break').
! { grep -nE '^\s*! ' tests/integration/*.bats | grep -v '|| false$'
	grep -nE '^\s*\[.*\] && \[.*\]$' tests/integration/*.bats; }
record "bats checks assert" $?

# A short fuzz run of every parser target (scripts/fuzz.sh runs longer).
./scripts/fuzz.sh 5
record "fuzz smoke" $?

export TUSFS_BIN=$root/build/ci-sanitize/tusfs

# The model-based exerciser (tests/stress), bounded: its regressions, fsync
# after every op at 4K, 64K and 256K chunks, faults on, a proxy's body
# limit, a bandwidth limit, a kill -9 and remount mid-run, and the tuspyserver profile with
# the service's hook.
# scripts/soak.sh runs it for as long as asked.
stress() { # name run.sh options...
	local name=$1 out
	shift
	out=$(tests/stress/run.sh --quiet "$@" 2>&1)
	record "stress: $name" $?
	echo "$out" | tail -n 2
}
stress "fsync after a shrink" --scenario fsync-after-shrink
stress "fsync of a file sealed empty" --scenario fsync-after-empty
stress "4K, fsync each op, mapped reads" --count 3 --ops 300 --chunk 4K \
	--max-size 262144 --fsync-every --check-fsync --check-nlink --mmap
stress "64K, fsync each op" --count 3 --ops 400 --chunk 64K \
	--fsync-every --check-fsync --check-nlink
stress "pause and resume, fsync each op" --count 2 --ops 300 --chunk 64K \
	--pause --fsync-every --check-fsync --check-nlink
stress "256K, one file, fsync each op" --count 2 --ops 300 \
	--profile single --fsync-every --check-fsync
stress "64K, faults" --count 2 --ops 250 --chunk 64K --check-nlink \
	-- --fail-share 0.1
stress "behind a 128 KiB body limit (413)" --count 1 --ops 300 \
	--check-nlink -- --body-limit 131072
stress "under a bandwidth limit" --count 1 --ops 300 --chunk 64K \
	--fsync-every --check-nlink --mount-opts max_rate=8M
stress "kill -9 and remount" --count 1 --ops 300 --remount-at 100 \
	--remount-at 200 --check-nlink
stress "tuspyserver and the service's hook" --count 2 --ops 400 \
	--chunk 64K --fsync-every --check-nlink \
	-- --profile tuspyserver --service-hook
wait "$valgrind_pid"
rc=$?
cat build/valgrind.out
record "valgrind" "$rc"

# The integration suite in two shards at once. Most of a test is waiting
# (on a server, a poll, a backoff), so two at a time keep the cores busy,
# and each test has its own server, port, mount and files. The shards are
# about equal in time (bats --timing); every file must be in one.
shards=("backend faults install mount namespace scale sidecars"
	"durability security service tools upload")
listed=$(echo "${shards[@]}" | tr ' ' '\n' | sort)
present=$(find tests/integration -maxdepth 1 -name '*.bats' -printf '%f\n' |
	sed 's/\.bats$//' | sort)
[ "$listed" = "$present" ]
rc=$?
[ "$rc" -eq 0 ] ||
	echo "test.sh: the bats shards list '$listed', the files are '$present'"
record "bats shards list every file" "$rc"
filter=()
[ $# -gt 0 ] && filter=(--filter "$1")
shard_pids=()
for i in "${!shards[@]}"; do
	files=()
	for name in ${shards[$i]}; do
		files+=("tests/integration/$name.bats")
	done
	bats --tap "${filter[@]}" "${files[@]}" >"build/bats-$i.tap" 2>&1 &
	shard_pids+=($!)
done
wait "${shard_pids[@]}"
notok=0
for i in "${!shards[@]}"; do
	# A shard that stopped short of its plan failed, whatever it printed.
	plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "build/bats-$i.tap" | head -n 1)
	[ "${plan:-x}" = "$(grep -cE '^(not )?ok ' "build/bats-$i.tap")" ] ||
		{ echo "FAILED: bats shard $i ended short of its plan"; notok=$((notok + 1)); }
done
tap=$(cat build/bats-*.tap)
echo "$tap"
ok=$(echo "$tap" | grep -c '^ok ')
notok=$((notok + $(echo "$tap" | grep -c '^not ok ')))
[ "$ok" -gt 0 ] || notok=$((notok + 1))
passed=$((passed + ok))
failed=$((failed + notok))

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
