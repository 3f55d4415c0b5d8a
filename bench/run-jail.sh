#!/bin/bash
# Jail benchmark (see bench/bench_jail.c).  Usage: bench/run-jail.sh [RUNS [VM_RUNS]]
# Needs root (the jail as luminaguard runs it) and, for the VM part,
# scripts/setup.sh to have run.  VM_RUNS=0 skips the VM part.
# BUILD_DIR picks the build directory (default: build).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(realpath "${BUILD_DIR:-build}")
ninja -C "$BUILD" bench/bench-jail bench/jail-probe luminaguard lg-agent >/dev/null
runs=${1:-50}
vm_runs=${2:-5}
if [ "$vm_runs" = 0 ]; then
	exec "$BUILD/bench/bench-jail" -n "$runs" "$BUILD/bench/jail-probe"
fi
exec "$BUILD/bench/bench-jail" -n "$runs" -r "$vm_runs" "$BUILD/bench/jail-probe" \
	"$BUILD/luminaguard"
