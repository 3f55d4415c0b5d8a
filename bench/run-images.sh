#!/bin/bash
# Root file system images (issue 9), measured:
#   1. `luminaguard image build --packages python3` (the default image):
#      wall time and size;
#   2. `luminaguard run -- true`, start to exit, for the Debian rootfs image
#      against the busybox initramfs image "tiny", interleaved run by run,
#      medians and their ratio (goal: the rootfs image under 1.10);
#   3. host disk used per running sandbox until the guest writes (goal: under
#      1 MiB), and after it writes 64 MiB (the layer is guest RAM, so 0).
#
#   bench/run-images.sh [RUNS]        # default 10; needs scripts/setup.sh first
#   BENCH_SKIP_BUILD=1 ...            # skip step 1 (it downloads ~30 MB of packages)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
LG=build/luminaguard
home=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
say() { echo "bench: $*" >&2; }
now_ms() { local t=$EPOCHREALTIME; echo $((10#${t/./} / 1000)); }
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# Every place a sandbox could put a file on the host: the data dir, the temp
# dirs, /run (the jail's per-VM directories), /dev/shm.
host_kib() { du -skx "$home" /tmp /var/tmp /run /dev/shm 2>/dev/null | awk '{s += $1} END {print s}'; }

for img in default tiny; do
	[ -f "$home/images/$img/manifest.json" ] || { say "no image '$img': run scripts/setup.sh"; exit 1; }
done

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
	name=bench-default-$$
	trap '$LG image remove $name >/dev/null 2>&1 || true' EXIT
	t0=$(now_ms)
	$LG image build --name "$name" --packages python3 >/dev/null 2>"/tmp/$name.log" || { cat "/tmp/$name.log"; exit 1; }
	t1=$(now_ms)
	rm -f "/tmp/$name.log"
	total=$(du -sb "$home/images/$name" | cut -f1)
	erofs=$(stat -c %s "$home/images/$name/rootfs.erofs")
	echo "image build --packages python3: $((t1 - t0)) ms; image $(mib "$total") MiB, of it rootfs.erofs $(mib "$erofs") MiB"
	$LG image remove "$name" >/dev/null
fi

declare -a t_rootfs t_tiny
for ((i = 0; i < runs; i++)); do
	for img in default tiny; do
		t0=$(now_ms)
		$LG run --image "$img" -- true </dev/null
		t1=$(now_ms)
		if [ "$img" = default ]; then t_rootfs+=($((t1 - t0))); else t_tiny+=($((t1 - t0))); fi
	done
done
mr=$(median "${t_rootfs[@]}")
mt=$(median "${t_tiny[@]}")
echo "run -- true, start to exit, median of $runs: rootfs (default) $mr ms, initramfs (tiny) $mt ms, ratio $(awk -v a="$mr" -v b="$mt" 'BEGIN { printf "%.3f", a / b }')"
echo "  rootfs runs: ${t_rootfs[*]}"
echo "  tiny runs:   ${t_tiny[*]}"

# Host disk per running sandbox: sampled while the guest idles, then after it wrote 64 MiB.
idle=() wrote=()
for ((i = 0; i < 3; i++)); do
	sync
	before=$(host_kib)
	$LG run --image default -- sh -c 'echo up; sleep 6; dd if=/dev/urandom of=/root/big bs=1M count=64 2>/dev/null; echo wrote; sleep 6' </dev/null >/tmp/bench-img-$$ 2>&1 &
	pid=$!
	until grep -q up /tmp/bench-img-$$ 2>/dev/null; do sleep 0.2; done
	sync
	idle+=($(($(host_kib) - before)))
	until grep -q wrote /tmp/bench-img-$$ 2>/dev/null; do sleep 0.2; done
	sync
	wrote+=($(($(host_kib) - before)))
	wait $pid
	rm -f /tmp/bench-img-$$
done
echo "host disk per running sandbox (KiB, median of 3): idle $(median "${idle[@]}"), after the guest wrote 64 MiB $(median "${wrote[@]}")  (samples: ${idle[*]} / ${wrote[*]})"
