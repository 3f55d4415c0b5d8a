#!/bin/bash
# Sandboxes in milliseconds (issue 10), measured side by side in one run,
# with the `tiny` image, through `luminaguard serve`'s API on its unix socket:
#   1. create -> first output of `true` (its exit line), for a pool hit, a
#      snapshot restore and a cold boot, with `bwrap --unshare-all --ro-bind
#      / / true` as the process-sandbox floor: medians and p99 of RUNS each;
#   2. `luminaguard run -- true` through the service on a pool hit, against
#      bwrap (goal: within 2x) and against `run --standalone` (a cold boot);
#   3. PSS (proportional set size: shared pages counted once over their
#      sharers) of idle pooled sandboxes, booted and restored, for 1 and 8;
#   4. the pool hit rate under bursts of 8 creates every 2 s against a pool of
#      4, for DURATION seconds.
#
#   bench/run-service.sh [RUNS] [DURATION]   # defaults 20 and 60; after scripts/setup.sh
#   BENCH_PARTS="1 4" bench/run-service.sh    # only some of the parts
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
duration=${2:-60}
LG=$(pwd)/build/luminaguard
src_home=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
say() { echo "bench: $*" >&2; }
now_ms() { local t=$EPOCHREALTIME; echo $((10#${t/./} / 1000)); }
# median and p99 (nearest rank) of the arguments
stats() {
	printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {
		m = v[int((NR + 1) / 2)]; i = int(NR * 0.99 + 0.999); if (i > NR) i = NR;
		printf "median %d ms, p99 %d ms (n=%d)", m, v[i], NR }'
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }

command -v bwrap >/dev/null || { say "bwrap is not installed (SETUP_TEST_DEPS=1 scripts/setup.sh)"; exit 1; }
command -v curl >/dev/null || { say "curl is not installed"; exit 1; }
[ -f "$src_home/images/tiny/manifest.json" ] || { say "no image 'tiny': run scripts/setup.sh"; exit 1; }

# A home of our own: the images and kernels of the real one, its own sockets and snapshots.
home=$(mktemp -d /tmp/lg-bench-svc.XXXXXX)
mkdir -p "$home/images"
ln -s "$src_home/kernels" "$home/kernels"
ln -s "$src_home/images/tiny" "$home/images/tiny"
export LUMINAGUARD_HOME=$home
sock=$home/serve.sock
serve_pid=
stop_serve() {
	[ -n "$serve_pid" ] || return 0
	kill -TERM "$serve_pid" 2>/dev/null || true
	wait "$serve_pid" 2>/dev/null || true
	serve_pid=
}
# Only the main shell cleans up: the samples run in subshells, which would otherwise run it too.
main=$BASHPID
trap '[ "$BASHPID" = "$main" ] || exit; stop_serve; cp "$home/serve.log" /tmp/lg-bench-service.log 2>/dev/null; rm -rf "$home"' EXIT

api() { curl -sS --max-time 120 --unix-socket "$sock" "$@"; }
start_serve() {
	stop_serve
	"$LG" serve --image tiny "$@" 2>>"$home/serve.log" &
	serve_pid=$!
	for _ in $(seq 1 300); do
		api http://lg/healthz >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	say "serve did not start (its log: /tmp/lg-bench-service.log):"; tail -5 "$home/serve.log" >&2; exit 1
}
pool_field() { api http://lg/healthz | grep -o "\"$1\": *[0-9]*" | head -1 | grep -o '[0-9]*$'; }
wait_ready() {
	for _ in $(seq 1 1200); do
		[ "$(pool_field ready)" = "$1" ] && return 0
		sleep 0.05
	done
	say "the pool never had $1 ready"; exit 1
}
id_of() { sed -n 's/.*"id": *"\(sb-[0-9a-f]*\)".*/\1/p'; }
path_of() { sed -n 's/.*"spawn_path": *"\([a-z]*\)".*/\1/p'; }
# One sample: create, then exec `true` until its exit line; prints "ms path".
sample() {
	local t0 t1 out id
	t0=$(now_ms)
	# ephemeral: its destroy is part of the request, as `run`'s is (docs/api.md)
	out=$(api -X POST http://lg/v1/sandboxes -d '{"image":"tiny","ephemeral":true}')
	id=$(id_of <<<"$out")
	[ -n "$id" ] || { say "create failed: $out"; exit 1; }
	api -X POST "http://lg/v1/sandboxes/$id/exec" -d '{"argv":["true"]}' | grep -q exit_code
	t1=$(now_ms)
	api -X DELETE "http://lg/v1/sandboxes/$id" >/dev/null
	echo "$((t1 - t0)) $(path_of <<<"$out")"
}
# PSS in KiB of every process under pid $1 (the VMMs: the service forks them).
pss_kib() {
	local total=0 p kids
	kids=$(ps -e -o pid=,ppid= | awk -v root="$1" '
		{ parent[$1] = $2 } END { for (p in parent) { q = p;
			while (q in parent && q != root && q > 1) q = parent[q];
			if (q == root && p != root) print p } }')
	for p in $kids; do
		[ -r "/proc/$p/smaps_rollup" ] || continue
		total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
	done
	echo "$total"
}

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r); accelerator: $("$LG" doctor 2>/dev/null | awk '$1 == "accelerator" {print $2}')"

parts=" ${BENCH_PARTS:-1 2 3 4} "
part() { [[ $parts == *" $1 "* ]]; }

# ---- 1. create -> first output, per path ----
if part 1; then
declare -a t_pool t_restore t_boot t_bwrap
start_serve --pool tiny=1 --no-snapshots
wait_ready 1
for ((i = 0; i < runs; i++)); do
	read -r ms path < <(sample)
	[ "$path" = pool ] || { say "expected a pool hit, got $path"; exit 1; }
	t_pool+=("$ms")
	wait_ready 1
done
start_serve --snapshots
read -r ms path < <(sample) # the first create of the shape boots and asks for a snapshot
for _ in $(seq 1 600); do
	read -r ms path < <(sample)
	[ "$path" = restore ] && break
done
[ "$path" = restore ] || { say "no restore: the snapshot was never made (see $home/serve.log)"; exit 1; }
for ((i = 0; i < runs; i++)); do
	read -r ms path < <(sample)
	t_restore+=("$ms")
done
start_serve --no-snapshots
for ((i = 0; i < runs; i++)); do
	read -r ms path < <(sample)
	t_boot+=("$ms")
done
for ((i = 0; i < runs; i++)); do
	t0=$(now_ms)
	bwrap --unshare-all --ro-bind / / true
	t1=$(now_ms)
	t_bwrap+=($((t1 - t0)))
done
echo "create -> first output of true (API over the unix socket, curl included):"
echo "  pool hit:         $(stats "${t_pool[@]}")"
echo "  snapshot restore: $(stats "${t_restore[@]}")"
echo "  cold boot:        $(stats "${t_boot[@]}")"
echo "  bwrap:            $(stats "${t_bwrap[@]}")"
echo "  restore vs cold boot: $(awk -v a="$(median "${t_boot[@]}")" -v b="$(median "${t_restore[@]}")" 'BEGIN { printf "%.1fx faster", a / b }')"

fi

# ---- 2. luminaguard run -- true: through the service (pool hit), bwrap, standalone ----
if part 2; then
declare -a r_svc r_bwrap r_alone
start_serve --pool tiny=1
wait_ready 1
for ((i = 0; i < runs; i++)); do
	t0=$(now_ms)
	"$LG" run --image tiny -- true </dev/null
	t1=$(now_ms)
	r_svc+=($((t1 - t0)))
	t0=$(now_ms)
	bwrap --unshare-all --ro-bind / / true
	t1=$(now_ms)
	r_bwrap+=($((t1 - t0)))
	wait_ready 1
done
hits=$(pool_field hits)
[ "$hits" -ge "$runs" ] || { say "run went to the pool only $hits times of $runs"; exit 1; }
for ((i = 0; i < 5; i++)); do
	t0=$(now_ms)
	"$LG" run --standalone --image tiny -- true </dev/null
	t1=$(now_ms)
	r_alone+=($((t1 - t0)))
done
echo "luminaguard run -- true:"
echo "  through the service, pool hit: $(stats "${r_svc[@]}")"
echo "  bwrap, same loop:              $(stats "${r_bwrap[@]}")"
echo "  --standalone (cold boot):      $(stats "${r_alone[@]}")"
echo "  service vs bwrap: $(awk -v a="$(median "${r_svc[@]}")" -v b="$(median "${r_bwrap[@]}")" 'BEGIN { printf "%.2fx", a / b }') (goal: within 2x)"

fi

# ---- 3. PSS of idle pooled sandboxes ----
if part 3; then
echo "PSS of idle pooled sandboxes (all their processes):"
for mode in no-snapshots snapshots; do
	for n in 1 8; do
		start_serve --pool "tiny=$n" "--$mode" --max-sandboxes 16 --max-vcpus 16
		wait_ready "$n"
		sleep 2
		kib=$(pss_kib "$serve_pid")
		label=booted
		[ "$mode" = snapshots ] && label=restored
		echo "  $label, $n: $((kib / 1024)) MiB in all, $((kib / 1024 / n)) MiB each"
	done
done

fi

# ---- 4. pool hit rate under bursts ----
part 4 || exit 0
# The budget is raised for this part: 8 claimed and up to 16 pooled VMs, mostly idle.
start_serve --pool tiny=4 --snapshots --max-sandboxes 32 --max-vcpus 32
wait_ready 4
h0=$(pool_field hits)
m0=$(pool_field misses)
fails=0
end=$(($(now_ms) + duration * 1000))
while [ "$(now_ms)" -lt "$end" ]; do
	next=$(($(now_ms) + 2000))
	pids=()
	for _ in 1 2 3 4 5 6 7 8; do
		{ (sample >/dev/null 2>&1) || echo fail; } >>"$home/fails" &
		pids+=($!)
	done
	wait "${pids[@]}" # not a bare wait: the service is a child too
	left=$((next - $(now_ms)))
	[ "$left" -le 0 ] || sleep "$(awk -v ms="$left" 'BEGIN { printf "%.3f", ms / 1000 }')"
done
fails=$(wc -l <"$home/fails" 2>/dev/null || echo 0)
h=$(($(pool_field hits) - h0))
m=$(($(pool_field misses) - m0))
echo "pool hit rate, bursts of 8 every 2 s against a pool of 4 for ${duration} s: $h hits, $m misses ($fails failed): $(awk -v h="$h" -v m="$m" 'BEGIN { printf "%.1f %%", 100 * h / (h + m) }')"
