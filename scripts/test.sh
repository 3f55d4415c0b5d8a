#!/bin/bash
# Runs every test: unit and integration tests (real micro-VMs) in the normal
# build, the same under AddressSanitizer/UBSan, the threaded suites under
# ThreadSanitizer, and each fuzzer for a short bounded time.  The last line
# is "N passed, N failed".
#
#   scripts/test.sh                 # everything
#   FUZZ_SECONDS=60 scripts/test.sh # longer fuzzing (default 20 s per target)
set -uo pipefail
cd "$(dirname "$0")/.."

SETUP_TEST_DEPS=1 scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
skipped=0
tally() { # tally LOGFILE: adds meson's "Ok:" and "Fail:"/"Timeout:" counts
	local ok fail to sk
	ok=$(awk '/^Ok:/ {print $2}' "$1" | tail -1)
	fail=$(awk '/^Fail:/ {print $2}' "$1" | tail -1)
	to=$(awk '/^Timeout:/ {print $2}' "$1" | tail -1)
	sk=$(awk '/^Skipped:/ {print $2}' "$1" | tail -1)
	skipped=$((skipped + ${sk:-0}))
	passed=$((passed + ${ok:-0}))
	failed=$((failed + ${fail:-0} + ${to:-0}))
	if [ -z "$ok" ]; then failed=$((failed + 1)); fi
}

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# build DIR: ninja, quiet when it works; its errors (ninja prints them on
# stdout) shown when it does not.
build() {
	if ! ninja -C "$1" >"$log/ninja-$1" 2>&1; then
		echo "building $1 FAILED:"
		tail -30 "$log/ninja-$1"
		return 1
	fi
}

echo "== tests (build)"
meson test -C build --print-errorlogs --num-processes 1 2>&1 | tee "$log/plain"
tally "$log/plain"

echo "== tests under ASan/UBSan (build-asan)"
if [ ! -f build-asan/build.ninja ]; then
	meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
build build-asan || failed=$((failed + 1))
# The VM tests run here too: the host side of every exchange under sanitizers.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --print-errorlogs --num-processes 1 --no-suite e2e 2>&1 | tee "$log/asan"
tally "$log/asan"

echo "== threaded suites under ThreadSanitizer (build-tsan)"
# Only the suites whose code runs on several threads (the approval broker
# and control socket, the MCP core and its HTTP transport, the net mux and
# egress proxy, the admission budget, the sandbox service against its fake
# VM layer), and only their targets are built: a few seconds each.
# serve is the service itself (its HTTP API's connection and exec threads)
# under TSan, driven by tests/integration/test_serve.sh with real VMs;
# mcp-http-service is `mcp --http` relaying its sessions to a service.
# lg-agent (netmux starts it) is static and built without sanitizers, as
# in build-asan.  ASLR off (setarch -R) where it can be: TSan's fixed
# shadow layout fails on kernels with more mmap randomization.
tsan_suites="approval gate gate-net http netmux egress mcp-hostile admission metrics service serve mcp-http-service"
if [ ! -f build-tsan/build.ninja ]; then
	meson setup build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null
fi
tsan_wrap=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
	tsan_wrap=(--wrapper "setarch $(uname -m) -R")
fi
tsan_targets="lg-agent"
for t in $tsan_suites; do
	case $t in
	serve | mcp-http-service) tsan_targets="$tsan_targets luminaguard" ;;
	*) tsan_targets="$tsan_targets tests/test-$t" ;;
	esac
done
# shellcheck disable=SC2086 # word splitting of the target list is intended
if ! ninja -C build-tsan $tsan_targets >"$log/ninja-build-tsan" 2>&1; then
	echo "building build-tsan FAILED:"
	tail -30 "$log/ninja-build-tsan"
	failed=$((failed + 1))
else
	# shellcheck disable=SC2086
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
		meson test -C build-tsan --no-rebuild --print-errorlogs --num-processes 1 \
		"${tsan_wrap[@]}" $tsan_suites 2>&1 | tee "$log/tsan"
	tally "$log/tsan"
fi

echo "== fuzzing (${FUZZ_SECONDS:-20} s per target)"
if [ ! -f build-fuzz/build.ninja ]; then
	CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
if ! build build-fuzz; then
	failed=$((failed + 1))
else
	for t in frame agent-client agent-request qmp policy jsonrpc encoding http netmux control tar spec user client serve-route; do
		corpus=fuzz/corpus/${t//-/_}
		work=$log/corpus-$t
		mkdir -p "$work"
		if build-fuzz/fuzz/fuzz-$t -max_total_time="${FUZZ_SECONDS:-20}" -timeout=10 -rss_limit_mb=2048 \
			"$work" "$corpus" >"$log/fuzz-$t" 2>&1; then
			echo "fuzz-$t: ok ($(grep -o 'Done [0-9]* runs' "$log/fuzz-$t"))"
			passed=$((passed + 1))
		else
			echo "fuzz-$t: FAILED"
			tail -40 "$log/fuzz-$t"
			failed=$((failed + 1))
		fi
	done
fi

if [ "$skipped" != 0 ]; then
	echo "# $skipped test(s) SKIPPED (see their logs above for why)"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
