#!/bin/bash
# A bounded load test of `luminaguard serve` (issue 10) with real VMs of the
# `tiny` image: 8 clients at once, each creating, running a command in and
# destroying 4 sandboxes (32 in all) against a pool of 4, with snapshots.
# Checks that no sandbox is handed out twice (every id is new, and every
# guest answers `hostname` with its own id: a VM claimed twice would answer
# with the other claimer's), that every command ran, and that nothing is
# left afterwards: no sandbox, no VMM, no fd of the service, no cgroup, no
# uid lease, no mount, no file under the data directory but its own.
# Usage: test_service_load.sh PATH/TO/luminaguard
set -u
LG=$(realpath "${1:?usage: test_service_load.sh LUMINAGUARD}")
SRC_HOME=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
N=0
FAIL=0
TMP=$(mktemp -d /tmp/lg-load-test.XXXXXX)
H=$TMP/home
SPID=
cleanup() {
	if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
		kill -TERM "$SPID" 2>/dev/null
		wait "$SPID" 2>/dev/null
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
check() { # check NAME CONDITION-RESULT DETAILS...
	local name=$1 cond=$2
	shift 2
	N=$((N + 1))
	if [ "$cond" = 0 ]; then
		echo "ok $N - $name"
	else
		FAIL=$((FAIL + 1))
		echo "not ok $N - $name"
		for l in "$@"; do echo "#   $l"; done
	fi
}

for need in curl jq; do
	command -v $need >/dev/null || { echo "1..0 # SKIP $need is not installed (scripts/setup.sh installs it)"; exit 77; }
done
[ -d "$SRC_HOME/kernels" ] || { echo "1..0 # SKIP no kernel in $SRC_HOME (run scripts/setup.sh)"; exit 77; }
mkdir -m 700 "$H"
ln -s "$SRC_HOME/kernels" "$H/kernels"
export LUMINAGUARD_HOME=$H
"$LG" image build --name tiny >"$TMP/image.log" 2>&1 || { echo "not ok 1 - cannot build the tiny image"; cat "$TMP/image.log"; exit 1; }
SOCK=$H/serve.sock
api() { curl -sS --max-time 120 --unix-socket "$SOCK" "$@"; }

mounts0=$(wc -l </proc/self/mountinfo)
leases0=$(ls /run/luminaguard/uids 2>/dev/null | wc -l)
cg0=$(find /sys/fs/cgroup -maxdepth 4 -type d -name 'vm-*' 2>/dev/null | wc -l)
"$LG" serve --image tiny --pool tiny=4 --max-sandboxes 24 --max-vcpus 32 >"$TMP/serve.log" 2>&1 &
SPID=$!
for _ in $(seq 1 600); do
	[ "$(api http://lg/healthz 2>/dev/null | jq -r '.pools[0].ready' 2>/dev/null)" = 4 ] && break
	sleep 0.1
done
check "the pool of 4 is ready" "$([ "$(api http://lg/healthz | jq -r '.pools[0].ready')" = 4 ]; echo $?)" "$(tail -3 "$TMP/serve.log")"
fds0=$(ls "/proc/$SPID/fd" | wc -l)

# One client: 4 times create, run `hostname; echo N`, destroy; one line per sandbox.
client() {
	local c=$1 i out id res
	for i in 1 2 3 4; do
		out=$(api -X POST http://lg/v1/sandboxes -d '{"ephemeral":true}') || { echo "ERR create $c.$i"; continue; }
		id=$(jq -r '.id // empty' <<<"$out")
		[ -n "$id" ] || { echo "ERR create $c.$i: $out"; continue; }
		res=$(api -X POST "http://lg/v1/sandboxes/$id/exec?wait=1" -d "{\"command\":\"hostname; echo $c.$i\"}")
		echo "$id $(jq -r '.exit_code' <<<"$res") $(jq -r '.stdout' <<<"$res" | tr '\n' ' ') $(jq -r '.spawn_path // empty' <<<"$out")"
		api -X DELETE "http://lg/v1/sandboxes/$id" >/dev/null || echo "ERR delete $id"
	done
}
t0=$(date +%s)
for c in 1 2 3 4 5 6 7 8; do client "$c" >"$TMP/client.$c" & done
wait $(jobs -p | grep -v "^$SPID\$")
took=$(($(date +%s) - t0))
cat "$TMP"/client.* >"$TMP/all"
errs=$(grep -c '^ERR' "$TMP/all")
check "32 sandboxes created, run and destroyed by 8 concurrent clients (${took} s)" "$([ "$errs" = 0 ] && [ "$(wc -l <"$TMP/all")" = 32 ]; echo $?)" "$(grep '^ERR' "$TMP/all" | head -3)"
ids=$(awk '{print $1}' "$TMP/all" | sort -u | wc -l)
check "no sandbox id handed out twice" "$([ "$ids" = 32 ]; echo $?)" "$ids distinct of 32"
# "ID 0 ID C.I": exit 0, its own hostname, its own marker.
bad=$(awk '$2 != 0 || $3 != $1' "$TMP/all" | head -3)
check "every command ran, each in a guest of its own (hostname = its id)" "$([ -z "$bad" ]; echo $?)" "$bad"
marks=$(awk '{print $4}' "$TMP/all" | sort -u | wc -l)
check "every client's every command answered its own marker" "$([ "$marks" = 32 ]; echo $?)" "$marks distinct"
hits=$(api http://lg/healthz | jq -r '.pools[0].hits')
check "the pool served some of them (hits $hits)" "$([ "$hits" -ge 4 ]; echo $?)"

# Nothing left while the service runs, but the pool it keeps.
sleep 1
left=$(api http://lg/v1/sandboxes | jq '.sandboxes | length')
check "no sandbox left in the registry" "$([ "$left" = 0 ]; echo $?)" "$left left"
for _ in $(seq 1 100); do
	fds1=$(ls "/proc/$SPID/fd" | wc -l)
	[ "$fds1" -le "$fds0" ] && break
	sleep 0.1
done
# The pool may have grown by the burst: each pooled VM holds about nine fds
# (its pidfd, agent and QMP sockets, console and stderr pipes, the net
# port's mux and its wake-up fd, ...), so allow ten; a leak of one fd per
# sandbox (32) would still show.
ready=$(api http://lg/healthz | jq -r '.pools[0].ready')
check "no fd leaked by the service (fds $fds0 with 4 pooled -> $fds1 with $ready pooled)" "$([ "$fds1" -le $((fds0 + (ready - 4) * 10)) ]; echo $?)" "$(ls -l "/proc/$SPID/fd" | tail -n +2 | awk '{print $NF}' | sort | uniq -c | sort -rn | head -5)"
vmms=$(pgrep -P "$SPID" -f qemu-system | wc -l)
check "only the pooled VMMs run ($vmms for $ready ready)" "$([ "$vmms" = "$ready" ]; echo $?)"

kill -TERM "$SPID"
wait "$SPID"
rc=$?
SPID=
check "SIGTERM: the service exits 0" "$([ $rc = 0 ]; echo $?)" "rc=$rc"
vmms=$(pgrep -f "qemu-system.*$H" | wc -l)
check "no VMM left" "$([ "$vmms" = 0 ]; echo $?)" "$(pgrep -fa qemu-system | head -3)"
cg1=$(find /sys/fs/cgroup -maxdepth 4 -type d -name 'vm-*' 2>/dev/null | wc -l)
check "no cgroup left ($cg0 before, $cg1 after)" "$([ "$cg1" -le "$cg0" ]; echo $?)"
mounts1=$(wc -l </proc/self/mountinfo)
check "no mount left" "$([ "$mounts1" = "$mounts0" ]; echo $?)" "$mounts0 -> $mounts1"
extra=$(cd "$H" && find . -mindepth 1 -maxdepth 1 ! -name kernels ! -name images ! -name snapshots ! -name 'audit.jsonl*' ! -name serve.lock | head -5)
check "nothing left in the data directory but images, snapshots, the audit log and the lock" "$([ -z "$extra" ]; echo $?)" "$extra"
leases1=$(ls /run/luminaguard/uids 2>/dev/null | wc -l)
check "no uid lease left ($leases0 before, $leases1 after)" "$([ "$leases1" -le "$leases0" ]; echo $?)"

echo "1..$N"
[ "$FAIL" = 0 ]
