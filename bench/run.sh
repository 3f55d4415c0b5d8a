#!/bin/bash
# Boot benchmark (see bench/bench_boot.c).  Usage: bench/run.sh [RUNS]
# Needs scripts/setup.sh to have run.  BENCH_ACCEL=kvm on hardware KVM hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
home=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
ninja -C build bench/bench-boot >/dev/null
exec build/bench/bench-boot -n "${1:-10}" build/luminaguard "$home/images/tiny"
