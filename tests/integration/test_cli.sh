#!/bin/bash
# End-to-end tests of the `luminaguard` command with real micro-VMs.
# Usage: test_cli.sh PATH/TO/luminaguard   (LUMINAGUARD_HOME must hold a default image)
set -u
LG=${1:?usage: test_cli.sh LUMINAGUARD}
PASS=0
FAIL=0
N=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

ok() { N=$((N + 1)); PASS=$((PASS + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAIL=$((FAIL + 1)); echo "not ok $N - $1"; shift; for l in "$@"; do echo "#   $l"; done; }
check() { # check NAME CONDITION-RESULT DETAILS...
	local name=$1 cond=$2
	shift 2
	if [ "$cond" = 0 ]; then ok "$name"; else not_ok "$name" "$@"; fi
}


# --- the guest's kernel, not the host's ---
out=$("$LG" run -- uname -a 2>"$TMP/err"); rc=$?
host=$(uname -r)
check "run uname -a prints the guest kernel" "$([ $rc = 0 ] && [[ $out == Linux\ luminaguard\ * ]] && [[ $out != *"$host"* ]]; echo $?)" "rc=$rc out=$out" "$(cat "$TMP/err")"

# --- exit codes ---
"$LG" run -- sh -c 'exit 42' </dev/null; rc=$?
check "exit code passes through" "$([ $rc = 42 ]; echo $?)" "rc=$rc"

"$LG" run -- no-such-command 2>"$TMP/err" </dev/null; rc=$?
check "missing command exits 127 with a message" "$([ $rc = 127 ] && grep -q 'no-such-command: command not found' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"

"$LG" run -- sh -c 'kill -KILL $$' </dev/null; rc=$?
check "signal death is 128+N" "$([ $rc = 137 ]; echo $?)" "rc=$rc"

# --- stdout and stderr are kept apart, stdin flows in ---
out=$(printf 'hello\nworld\n' | "$LG" run -- sh -c 'cat; echo to-err >&2' 2>"$TMP/err"); rc=$?
check "stdin to the guest, stdout and stderr apart" "$([ $rc = 0 ] && [ "$out" = $'hello\nworld' ] && grep -qx to-err "$TMP/err"; echo $?)" "rc=$rc out=$out"

# --- large piped stdin reaches EOF (it used to stall at about 2 MB until the timeout) ---
head -c 3000000 /dev/urandom >"$TMP/big"
want="3000000 $(sha256sum <"$TMP/big" | cut -d' ' -f1)"
"$LG" run --timeout 60 -- sh -c 'tee /tmp/in | wc -c; sha256sum </tmp/in' <"$TMP/big" >"$TMP/out" 2>"$TMP/err"; rc=$?
out=$(tr -s ' \n' '  ' <"$TMP/out" | cut -d' ' -f1,2)
check "3 MB of piped stdin reach EOF intact" "$([ $rc = 0 ] && [ "$out" = "$want" ]; echo $?)" "rc=$rc out=$out want=$want" "$(cat "$TMP/err")"
rm -f "$TMP/big"

# --- --timeout kills the guest command ---
start=$(date +%s)
"$LG" run --timeout 2 -- sleep 60 </dev/null 2>"$TMP/err"; rc=$?
took=$(( $(date +%s) - start ))
check "--timeout kills the command (exit 124)" "$([ $rc = 124 ] && [ $took -lt 40 ] && grep -q 'timed out' "$TMP/err"; echo $?)" "rc=$rc took=${took}s" "$(cat "$TMP/err")"

# --- options reach the guest ---
# (guest RAM is --memory plus the --disk layer, which is a tmpfs in it)
out=$("$LG" run --cpus 2 --memory 300 --disk 32 --env GREETING=hi --workdir /tmp -- sh -c 'echo "$GREETING $(pwd) $(nproc)"; grep MemTotal /proc/meminfo; df -k / | tail -1' </dev/null); rc=$?
mem_kb=$(echo "$out" | awk '/MemTotal/ {print $2}')
layer_kb=$(echo "$out" | awk 'END {print $2}')
check "--cpus --memory --disk --env --workdir apply in the guest" "$([ $rc = 0 ] && [[ "$out" == "hi /tmp 2"* ]] && [ "${mem_kb:-0}" -gt 230000 ] && [ "${mem_kb:-0}" -lt 345000 ] && [ "${layer_kb:-0}" = 32768 ]; echo $?)" "rc=$rc out=$out"

# --- bad input: one line, non-zero exit, no VM started ---
for args in "--cpus 0 -- true" "--disk 1 -- true" "--user 'a b' -- true" "--memory 10 -- true" "--memory 99999999 -- true" "--accel warp -- true" "--bogus -- true" "--env X -- true" ""; do
	# shellcheck disable=SC2086
	"$LG" run $args >"$TMP/out" 2>"$TMP/err" </dev/null; rc=$?
	lines=$(wc -l <"$TMP/err")
	check "bad usage '$args' is one line and exit 2 or 125" "$([ $rc = 2 -o $rc = 125 ] && [ "$lines" = 1 ] && grep -q '^luminaguard: ' "$TMP/err"; echo $?)" "rc=$rc lines=$lines" "$(cat "$TMP/err")"
done

"$LG" run --image does-not-exist -- true 2>"$TMP/err" </dev/null; rc=$?
check "missing image says how to fix it" "$([ $rc = 125 ] && [ "$(wc -l <"$TMP/err")" = 1 ] && grep -q 'luminaguard image build' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"

LUMINAGUARD_QEMU=/nonexistent/qemu "$LG" run -- true 2>"$TMP/err" </dev/null; rc=$?
check "missing QEMU is a clear error" "$([ $rc = 125 ] && grep -q 'qemu' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"

"$LG" nonsense >/dev/null 2>"$TMP/err"; rc=$?
check "unknown subcommand" "$([ $rc = 2 ] && grep -q "unknown command 'nonsense'" "$TMP/err"; echo $?)" "rc=$rc"

for sub in "" run image doctor; do
	"$LG" $sub --help >"$TMP/out" 2>&1; rc=$?
	check "luminaguard $sub --help" "$([ $rc = 0 ] && grep -qi usage "$TMP/out"; echo $?)" "rc=$rc"
done

"$LG" version | grep -q '^luminaguard [0-9]'
check "version" "$?"

"$LG" doctor >"$TMP/out" 2>&1; rc=$?
check "doctor finds qemu, the kvm kind and the default image" "$([ $rc = 0 ] && grep -q '^backend qemu' "$TMP/out" && grep -q '^kvm ' "$TMP/out" && grep -q 'default: ok' "$TMP/out"; echo $?)" "rc=$rc" "$(cat "$TMP/out")"

# --- the approval cliff in `run` ---
cat >"$TMP/red.json" <<'POLICY'
{"version": 1, "rules": [
  {"name": "danger", "tool": "sandbox_run", "match": {"command": {"regex": "dangerous"}},
   "verdict": "red", "risk": "high", "reason": "test rule"},
  {"name": "rest", "tool": "sandbox_run", "verdict": "green", "risk": "low", "reason": "ok"}]}
POLICY
"$LG" run --policy "$TMP/red.json" -- echo dangerous >"$TMP/out" 2>"$TMP/err" </dev/null; rc=$?
check "a red command is refused without --approve" "$([ $rc = 125 ] && [ ! -s "$TMP/out" ] && grep -q 'approve tty' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"
"$LG" run --policy "$TMP/red.json" -- echo harmless >"$TMP/out" 2>&1 </dev/null; rc=$?
check "a green command under the same policy runs" "$([ $rc = 0 ] && grep -qx harmless "$TMP/out"; echo $?)" "rc=$rc"
# script(1) gives the prompt a real terminal; the answer comes after the card appears.
(sleep 3; echo y) | script -qec "$LG run --policy $TMP/red.json --approve tty -- echo dangerous" /dev/null >"$TMP/out" 2>&1; rc=$?
check "--approve tty: y runs it" "$([ $rc = 0 ] && grep -q 'needs your approval' "$TMP/out" && tr -d '\r' <"$TMP/out" | grep -qx dangerous; echo $?)" "rc=$rc" "$(cat "$TMP/out")"
(sleep 3; echo n) | script -qec "$LG run --policy $TMP/red.json --approve tty -- echo dangerous" /dev/null >"$TMP/out" 2>&1; rc=$?
check "--approve tty: n denies it, and it does not run" "$([ $rc = 125 ] && grep -q 'denied' "$TMP/out" && ! tr -d '\r' <"$TMP/out" | grep -qx dangerous; echo $?)" "rc=$rc" "$(cat "$TMP/out")"

# --- two MCP servers of one user share the data directory ---
H2=$TMP/home2
mkdir -p "$H2"
(sleep 4 | LUMINAGUARD_HOME=$H2 "$LG" mcp >/dev/null 2>"$TMP/s1") &
sleep 1
(sleep 2 | LUMINAGUARD_HOME=$H2 "$LG" mcp >/dev/null 2>"$TMP/s2") &
sleep 1
socks=$(ls "$H2"/control*.sock 2>/dev/null | wc -l)
wait
left=$(ls "$H2"/control*.sock 2>/dev/null | wc -l)
check "a second mcp server gets its own control socket, and both clean up" "$([ "$socks" = 2 ] && [ "$left" = 0 ] && grep -q -- '--socket' "$TMP/s2" && "$LG" audit verify "$H2/audit.jsonl" >/dev/null; echo $?)" "sockets while running: $socks, after: $left" "$(cat "$TMP/s1" "$TMP/s2")"

# --- signals: the VM is destroyed, nothing is left ---
# The QEMU children of a running `luminaguard run`, once its guest command runs.
vm_pids_of() {
	local pid=$1 pids=""
	for _ in $(seq 1 600); do
		pids=$(pgrep -f "qemu-system-x86_64 .*org.luminaguard.agent" -P "$pid" 2>/dev/null)
		[ -n "$pids" ] && break
		sleep 0.1
	done
	echo "$pids"
}
alive() { for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

for sig in INT TERM; do
	"$LG" run -- sleep 600 </dev/null >/dev/null 2>"$TMP/err" &
	pid=$!
	vms=$(vm_pids_of $pid)
	sleep 4 # let the guest boot so the signal hits mid-command
	kill -$sig $pid
	wait $pid; rc=$?
	want=$([ $sig = INT ] && echo 130 || echo 143)
	# shellcheck disable=SC2086
	check "SIG$sig destroys the VM (exit $want, its QEMU gone)" "$([ $rc = $want ] && [ -n "$vms" ] && ! alive $vms; echo $?)" "rc=$rc vms=$vms" "$(cat "$TMP/err")"
done

# SIGKILL of luminaguard: PR_SET_PDEATHSIG takes QEMU down with it.
"$LG" run -- sleep 600 </dev/null >/dev/null 2>&1 &
pid=$!
vms=$(vm_pids_of $pid)
kill -KILL $pid; wait $pid 2>/dev/null
# shellcheck disable=SC2086
for _ in $(seq 1 50); do alive $vms || break; sleep 0.1; done
# shellcheck disable=SC2086
check "SIGKILL of luminaguard takes QEMU down too" "$([ -n "$vms" ] && ! alive $vms; echo $?)" "vms=$vms"

# --- nothing of the jail left: the next run sweeps what the SIGKILL left ---
if [ "$(id -u)" = 0 ]; then
	"$LG" run -- true </dev/null >/dev/null 2>&1
	cg_left=$(ls -d /sys/fs/cgroup/*/luminaguard/vm-* /sys/fs/cgroup/luminaguard/vm-* 2>/dev/null | wc -l)
	uid_procs=$(awk '/^Uid:/ { if ($2 >= 2100000000 && $2 <= 2100065535) n++ } END { print n + 0 }' /proc/[0-9]*/status 2>/dev/null)
	mnt_left=$(grep -c luminaguard /proc/self/mountinfo)
	check "no cgroup, pool-uid process or mount of a VM is left" "$([ "$cg_left" = 0 ] && [ "$uid_procs" = 0 ] && [ "$mnt_left" = 0 ]; echo $?)" "cgroups: $cg_left, processes: $uid_procs, mounts: $mnt_left"
fi

# --- nothing left behind in /tmp or the data directory ---
tmp_left=$(find /tmp -maxdepth 1 -newer "$TMP" -name '*luminaguard*' 2>/dev/null | wc -l)
check "no temp files left" "$([ "$tmp_left" = 0 ]; echo $?)" "left: $tmp_left"

echo "1..$N"
echo "# $PASS passed, $FAIL failed"
[ $FAIL = 0 ]
