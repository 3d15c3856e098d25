#!/usr/bin/env bash
# Installs what building and testing tusfs needs, only what is missing:
# Debian packages (apt-get) and the reference backend's npm packages
# (npm ci, from tests/backend/package-lock.json). Safe to run repeatedly.
# jq: the tests read JSON with it. rsync, libglib2.0-bin (gio): tools the
# integration tests copy with. man-db, bsdextrautils (col): the man page
# check. sox, pocketsphinx, pocketsphinx-en-us:
# the backend's --transcriber pocketsphinx; espeak-ng: speech to feed it.
# clang and libfuzzer-14-dev: the fuzz targets (scripts/fuzz.sh).
# clang-tidy (clang 14's): static analysis of src/ (.clang-tidy); valgrind:
# memcheck over the unit tests and a daemon session (scripts/valgrind.sh).
# python3: the model-based exerciser (tests/stress).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config libfuse3-dev fuse3
	libcurl4-openssl-dev libjansson-dev libxxhash-dev bats nodejs npm openssl
	clang-format cppcheck curl attr jq rsync libglib2.0-bin man-db bsdextrautils
	sox pocketsphinx pocketsphinx-en-us espeak-ng clang libfuzzer-14-dev
	clang-tidy valgrind python3)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing+=("$p")
done
# A node that came from elsewhere (not Debian's package) is fine as is.
if command -v node >/dev/null && command -v npm >/dev/null; then
	missing=("${missing[@]/nodejs/}")
	missing=("${missing[@]/npm/}")
fi
read -ra missing <<<"${missing[*]}"
if [ "${#missing[@]}" -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "deps: installing ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
		"${missing[@]}" >/dev/null
fi

stamp=tests/backend/node_modules/.tusfs-lock
if ! cmp -s tests/backend/package-lock.json "$stamp" 2>/dev/null; then
	echo "deps: npm ci in tests/backend"
	(cd tests/backend && npm ci --no-audit --no-fund --loglevel=error)
	cp tests/backend/package-lock.json "$stamp"
fi
