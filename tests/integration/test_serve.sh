#!/bin/bash
# End-to-end tests of `luminaguard serve` and its HTTP API (docs/api.md) with
# real micro-VMs of the `tiny` image, in a temporary data directory with the
# real one's kernels/ and a `tiny` image built there with this tree's
# lg-agent (half a second: pooled sandboxes need the current agent).
# Usage: test_serve.sh PATH/TO/luminaguard
set -u
LG=${1:?usage: test_serve.sh LUMINAGUARD}
LG=$(realpath "$LG")
SRC_HOME=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
PASS=0
FAIL=0
N=0
TMP=$(mktemp -d /tmp/lg-serve-test.XXXXXX)
H=$TMP/home
SPID=
cleanup() {
	if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
		kill -TERM "$SPID" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SPID" 2>/dev/null
	fi
	if [ "${KEEP:-0}" = 1 ]; then echo "# kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

ok() { N=$((N + 1)); PASS=$((PASS + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAIL=$((FAIL + 1)); echo "FAIL $N - $1"; shift; for l in "$@"; do echo "#   $l"; done; }
# lt X Y: X < Y (decimals).  since T0: seconds from T0 (date +%s.%N) to now.
lt() { awk -v x="$1" -v y="$2" 'BEGIN { exit !(x < y) }'; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }'; }
check() { # check NAME CONDITION-RESULT DETAILS...
	local name=$1 cond=$2
	shift 2
	if [ "$cond" = 0 ]; then ok "$name"; else not_ok "$name" "$@"; fi
}

for need in curl jq; do
	if ! command -v $need >/dev/null; then
		echo "1..0 # SKIP $need is not installed (scripts/setup.sh installs it)"
		exit 77
	fi
done
if [ ! -d "$SRC_HOME/kernels" ]; then
	echo "1..0 # SKIP no kernel in $SRC_HOME (run scripts/setup.sh)"
	exit 77
fi
mkdir -m 700 "$H"
ln -s "$SRC_HOME/kernels" "$H/kernels"
export LUMINAGUARD_HOME=$H
if ! "$LG" image build --name tiny >"$TMP/image.log" 2>&1; then
	echo "FAIL 0 - cannot build the tiny image"
	cat "$TMP/image.log"
	exit 1
fi
unset LUMINAGUARD_LOG
SOCK=$H/serve.sock
TOKEN=test-token-0123456789abcdef
echo "$TOKEN" >"$TMP/token"

# api METHOD PATH [curl args...]: over the unix socket; the body in $TMP/body,
# the status printed.
api() {
	local m=$1 p=$2
	shift 2
	curl -s --max-time 120 --unix-socket "$SOCK" -X "$m" -o "$TMP/body" -w '%{http_code}' "$@" "http://lg$p"
}
body() { cat "$TMP/body"; }
# A one-line JSON error with this status.
is_error() { # is_error STATUS GOT
	[ "$2" = "$1" ] && [ "$(wc -l <"$TMP/body")" = 1 ] && jq -e '.error | type == "string"' "$TMP/body" >/dev/null
}

# start_serve ARGS...: starts a service, waits for its "ready" line (60 s).
start_serve() {
	: >"$TMP/serve.log"
	"$LG" serve "$@" >>"$TMP/serve.log" 2>&1 &
	SPID=$!
	for _ in $(seq 600); do
		grep -q 'serve: ready' "$TMP/serve.log" && return 0
		kill -0 "$SPID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
# The VMMs (qemu) that are children of a process.
vmm_children() { pgrep -P "$1" -f qemu-system 2>/dev/null; }
# Deletes a sandbox; a dirty one needs a human: approved over the socket.
delete_approved() { # delete_approved ID -> the DELETE's status
	local id=$1 aid st
	curl -s --max-time 60 --unix-socket "$SOCK" -X DELETE -o "$TMP/del" -w '%{http_code}' "http://lg/v1/sandboxes/$id" >"$TMP/del.code" &
	local dpid=$!
	for _ in $(seq 100); do
		kill -0 $dpid 2>/dev/null || break
		aid=$(curl -s --unix-socket "$SOCK" http://lg/v1/approvals | jq -r --arg id "$id" '.pending[] | select(.card.tool == "sandbox_destroy") | .id' | head -1)
		if [ -n "$aid" ]; then
			curl -s --unix-socket "$SOCK" -X POST -d '{"approve":true,"reason":"test"}' "http://lg/v1/approvals/$aid" >"$TMP/decide"
			break
		fi
		sleep 0.1
	done
	wait $dpid
	st=$(cat "$TMP/del.code")
	echo "$st"
}

# --- refused at start ---
"$LG" serve --http 0.0.0.0:0 >"$TMP/out" 2>&1; rc=$?
check "a non-loopback --http without --token-file is refused at start" "$([ $rc = 2 ] && [ "$(wc -l <"$TMP/out")" = 1 ] && grep -q 'needs --token-file' "$TMP/out" && [ ! -e "$SOCK" ]; echo $?)" "rc=$rc" "$(cat "$TMP/out")"
"$LG" serve --net allow=bad::x >"$TMP/out" 2>&1; rc=$?
check "a bad --net is a usage error, in one line" "$([ $rc = 2 ] && [ "$(wc -l <"$TMP/out")" = 1 ] && grep -q -- '--net' "$TMP/out"; echo $?)" "rc=$rc" "$(cat "$TMP/out")"
"$LG" serve --pool 'tiny=0' >"$TMP/out" 2>&1; rc=$?
check "a bad --pool is a usage error" "$([ $rc = 2 ] && [ "$(wc -l <"$TMP/out")" = 1 ]; echo $?)" "rc=$rc" "$(cat "$TMP/out")"

# --- the service, with a pool of 2 ---
t0=$(date +%s.%N)
# What a snapshot build that died leaves: removed at start; a snapshot itself is kept.
LEFT=$H/snapshots/.tmp-0123456789abcdef0123456789abcdef-dead01
mkdir -p "$LEFT" "$H/snapshots/not-a-leftover" && echo x >"$LEFT/ram" && echo y >"$H/snapshots/not-a-leftover/ram"
start_serve --image tiny --pool tiny=2 --http 127.0.0.1:0 --token-file "$TMP/token"; rc=$?
check "serve removes what a dead snapshot build left, and nothing else" "$([ ! -e "$LEFT" ] && [ -e "$H/snapshots/not-a-leftover/ram" ] && grep -q 'unfinished snapshot build' "$TMP/serve.log"; echo $?)" "$(ls -a "$H/snapshots")"
rm -rf "$H/snapshots/not-a-leftover"
check "serve starts" "$rc" "$(cat "$TMP/serve.log")"
PORT=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$TMP/serve.log" | head -1)
TCP=http://127.0.0.1:$PORT

check "the socket is 0600 and the data directory 0700" "$([ "$(stat -c %a "$SOCK")" = 600 ] && [ "$(stat -c %a "$H")" = 700 ]; echo $?)" "sock=$(stat -c %a "$SOCK") dir=$(stat -c %a "$H")"

# The last wall: a peer of another uid that reached the socket (here the
# directory and socket are opened up on purpose) is refused by SO_PEERCRED.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	chmod 0711 "$TMP" "$H"
	chmod 0666 "$SOCK"
	st=$(setpriv --reuid=65534 --regid=65534 --clear-groups curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" http://lg/v1/sandboxes)
	chmod 0600 "$SOCK"
	chmod 0700 "$TMP" "$H"
	check "a peer of another uid is refused (403) even when it can reach the socket" "$([ "$st" = 403 ] && grep -q 'refused a connection from uid 65534' "$TMP/serve.log"; echo $?)" "st=$st"
fi

"$LG" serve --image tiny >"$TMP/out2" 2>&1; rc=$?
check "a second serve is refused while one runs" "$([ $rc = 1 ] && grep -q "a service is already running (pid $SPID)" "$TMP/out2"; echo $?)" "rc=$rc" "$(cat "$TMP/out2")"

st=$(api GET /healthz)
check "GET /healthz" "$([ "$st" = 200 ] && jq -e --argjson p "$SPID" '.status == "ok" and .pid == $p and (.version | type == "string")' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"

ready=0
for _ in $(seq 600); do
	api GET /healthz >/dev/null
	ready=$(jq '[.pools[].ready] | add // 0' "$TMP/body")
	[ "$ready" = 2 ] && break
	sleep 0.1
done
check "the pool has 2 ready after boot" "$([ "$ready" = 2 ]; echo $?)" "$(body)"
echo "# pool of 2 ready $(since "$t0") s after start"

# --- create: a pool hit ---
st=$(curl -s --unix-socket "$SOCK" -X POST -d '{}' -o "$TMP/body" -w '%{http_code} %{time_total}' http://lg/v1/sandboxes)
took=${st#* }
st=${st% *}
ID=$(jq -r .id "$TMP/body")
check "POST /v1/sandboxes is 201 from the pool" "$([ "$st" = 201 ] && jq -e '.spawn_path == "pool" and .state == "ready" and (.id | test("^sb-[0-9a-f]{12}$"))' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
echo "# create from the pool over the unix socket: ${took} s (curl time_total)"

st=$(api GET /v1/sandboxes)
check "GET /v1/sandboxes lists it" "$([ "$st" = 200 ] && jq -e --arg id "$ID" 'any(.sandboxes[]; .id == $id and .owner == "api")' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
st=$(api GET "/v1/sandboxes/$ID")
check "GET /v1/sandboxes/ID" "$([ "$st" = 200 ] && jq -e --arg id "$ID" '.id == $id and (.pid > 0)' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"

# --- metrics before ---
api GET /metrics >/dev/null
count0=$(awk '/^luminaguard_exec_seconds_count/ {print $2}' "$TMP/body")
check "GET /metrics has luminaguard_sandboxes" "$(grep -q '^luminaguard_sandboxes{state="ready"} 1' "$TMP/body" && [ -n "$count0" ]; echo $?)" "$(grep luminaguard_sandboxes "$TMP/body")"

# --- exec, streamed ---
st=$(api POST "/v1/sandboxes/$ID/exec" -H 'X-Request-Id: test-req.42' -D "$TMP/headers" -d '{"command":"echo out; echo err >&2; exit 7"}')
check "exec streams NDJSON: stdout, stderr, then the exit" "$([ "$st" = 200 ] && grep -qi '^content-type: application/x-ndjson' "$TMP/headers" &&
	jq -se '(map(select(.stream == "stdout") | .data) | add) == "out\n" and (map(select(.stream == "stderr") | .data) | add) == "err\n" and (.[-1] | .exit_code == 7 and .signal == 0 and .timed_out == false and (.duration_ms | type == "number"))' "$TMP/body" >/dev/null; echo $?)" "st=$st" "$(body)"
st=$(api POST "/v1/sandboxes/$ID/exec" -d '{"argv":["printf","\\377\\001"]}')
check "exec streams bytes that are not UTF-8 as data_b64" "$([ "$st" = 200 ] && jq -se '.[0].data_b64 == "/wE=" and .[0].stream == "stdout" and .[-1].exit_code == 0' "$TMP/body" >/dev/null; echo $?)" "st=$st" "$(body)"
check "X-Request-Id is echoed and on the service's log lines" "$(grep -qi '^x-request-id: test-req.42' "$TMP/headers" && grep -q 'exec.*\[req test-req.42\]' "$TMP/serve.log"; echo $?)" "$(cat "$TMP/headers")"
st=$(api POST "/v1/sandboxes/$ID/exec?wait=1" -H 'X-Request-Id: rid-into.the-vm_7' -d '{"command":"echo \"$LUMINAGUARD_REQUEST_ID\""}')
check "the request id reaches the command in the guest (LUMINAGUARD_REQUEST_ID)" "$([ "$st" = 200 ] && jq -e '.stdout == "rid-into.the-vm_7\n"' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
st=$(api POST "/v1/sandboxes/$ID/exec?wait=1" -H 'X-Request-Id: real-one' -d '{"command":"echo \"$LUMINAGUARD_REQUEST_ID\"","env":{"LUMINAGUARD_REQUEST_ID":"forged"}}')
check "a request's env cannot replace its request id" "$([ "$st" = 200 ] && jq -e '.stdout == "real-one\n"' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
api GET /healthz -H 'X-Request-Id: bad id!' -D "$TMP/headers" >/dev/null
check "a bad X-Request-Id is replaced by a new one" "$(grep -Eqi '^x-request-id: [0-9a-f]{16}' "$TMP/headers"; echo $?)" "$(cat "$TMP/headers")"

# --- a stalled reader: the command's output waits for it, nothing else does ---
curl -s --max-time 4 --limit-rate 2K --unix-socket "$SOCK" -X POST -o "$TMP/slow.body" "http://lg/v1/sandboxes/$ID/exec" -d '{"command":"head -c 20000000 /dev/zero | tr \"\\0\" a; echo done >&2"}' &
slow=$!
sleep 1.5
t0=$(date +%s.%N)
st=$(api GET /healthz)
dt=$(since "$t0")
check "while a client reads an exec's stream slowly, the service still answers at once" "$([ "$st" = 200 ] && lt "$dt" 1; echo $?)" "st=$st dt=$dt"
wait "$slow"
for _ in $(seq 100); do
	api GET "/v1/sandboxes/$ID" >/dev/null
	jq -e '.state == "ready"' "$TMP/body" >/dev/null && break
	sleep 0.1
done
st=$(api POST "/v1/sandboxes/$ID/exec?wait=1" -d '{"command":"echo after"}')
check "once that client is gone its command is ended and the sandbox takes the next one" "$([ "$st" = 200 ] && jq -e '.stdout == "after\n"' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"

# --- exec ?wait=1 ---
st=$(api POST "/v1/sandboxes/$ID/exec?wait=1" -d '{"argv":["sh","-c","cat; echo e >&2; exit 3"],"stdin":"in put","env":{"A":"b"},"cwd":"/tmp"}')
check "exec ?wait=1: exit code, stdout (with stdin), stderr" "$([ "$st" = 200 ] && jq -e '.exit_code == 3 and .stdout == "in put" and .stderr == "e\n"' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
st=$(api POST "/v1/sandboxes/$ID/exec?wait=1" -d '{"command":"echo $A $(pwd)","env":{"A":"b"},"cwd":"/tmp"}')
check "exec env and cwd apply" "$([ "$st" = 200 ] && jq -e '.stdout == "b /tmp\n"' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
st=$(api POST "/v1/sandboxes/$ID/exec?wait=1" -d '{"command":"head -c 1200000 /dev/zero | tr \"\\0\" a"}')
check "exec ?wait=1 caps output at 1 MiB with truncated" "$([ "$st" = 200 ] && jq -e '(.stdout | length) == 1048576 and .truncated == true' "$TMP/body" >/dev/null; echo $?)" "st=$st $(head -c 200 "$TMP/body")"

st=$(api POST "/v1/sandboxes/$ID/exec?wait=1" -d '{"command":"sleep 30","timeout":1}')
check "exec timeout: killed in the guest, timed_out" "$([ "$st" = 200 ] && jq -e '.timed_out == true and .duration_ms < 10000' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
st=$(api POST "/v1/sandboxes/$ID/exec" -d '{"command":"true","user":"no body"}')
check "a bad user is 400" "$(is_error 400 "$st"; echo $?)" "st=$st $(body)"

api GET /metrics >/dev/null
count1=$(awk '/^luminaguard_exec_seconds_count/ {print $2}' "$TMP/body")
check "luminaguard_exec_seconds_count goes up with execs" "$([ "${count1:-0}" -ge $((count0 + 4)) ]; echo $?)" "before=$count0 after=$count1"

# --- a client that hangs up cancels its command ---
s0=$(date +%s.%N)
curl -s --max-time 2 --unix-socket "$SOCK" -X POST -d '{"command":"echo started; sleep 60"}' "http://lg/v1/sandboxes/$ID/exec" >"$TMP/hang" 2>/dev/null
st=$(api POST "/v1/sandboxes/$ID/exec?wait=1" -d '{"command":"echo next"}')
took=$(since "$s0")
check "a client that hangs up cancels its command (the sandbox is free at once)" "$(grep -q started "$TMP/hang" && [ "$st" = 200 ] && jq -e '.stdout == "next\n"' "$TMP/body" >/dev/null && lt "$took" 8; echo $?)" "st=$st took=$took" "$(body)"

# --- files ---
head -c 3000 /dev/urandom >"$TMP/bin"
st=$(api PUT "/v1/sandboxes/$ID/files?path=/tmp/d/f.bin&mode=0600" --data-binary @"$TMP/bin")
check "PUT files" "$([ "$st" = 200 ] && jq -e '.bytes == 3000 and .path == "/tmp/d/f.bin"' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
st=$(api GET "/v1/sandboxes/$ID/files?path=/tmp/d/f.bin")
check "GET files gives the same bytes" "$([ "$st" = 200 ] && cmp -s "$TMP/body" "$TMP/bin"; echo $?)" "st=$st"
st=$(api GET "/v1/sandboxes/$ID/files?path=/tmp/d&list=1")
check "GET files ?list=1" "$([ "$st" = 200 ] && jq -e '.entries == [{"name":"f.bin","type":"file","mode":384,"size":3000}]' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"

# --- bad input: the right status and a one-line error ---
st=$(api POST /v1/sandboxes -d '{"cpus": 1,')
check "bad JSON is 400" "$(is_error 400 "$st"; echo $?)" "st=$st $(body)"
st=$(api POST /v1/sandboxes -d '{"cpus":"two"}')
check "a field of the wrong type is 400" "$(is_error 400 "$st" && grep -q cpus "$TMP/body"; echo $?)" "st=$st $(body)"
st=$(api POST /v1/sandboxes -d '{"cpu":2}')
check "an unknown field is 400" "$(is_error 400 "$st" && grep -q 'unknown field' "$TMP/body"; echo $?)" "st=$st $(body)"
st=$(api POST "/v1/sandboxes/$ID/exec" -d '{"argv":"ls"}')
check "argv not an array is 400" "$(is_error 400 "$st"; echo $?)" "st=$st $(body)"
st=$(api POST "/v1/sandboxes/$ID/exec" -d '{"command":"true","cwd":"tmp"}')
check "a relative cwd is 400" "$(is_error 400 "$st"; echo $?)" "st=$st $(body)"
st=$(api GET "/v1/sandboxes/$ID/files?path=etc/passwd")
check "a relative file path is 400" "$(is_error 400 "$st"; echo $?)" "st=$st $(body)"
st=$(api GET /v1/sandboxes/sb-000000000000)
check "an unknown sandbox is 404" "$(is_error 404 "$st"; echo $?)" "st=$st $(body)"
st=$(api POST /v1/sandboxes/sb-000000000000/exec -d '{"command":"true"}')
check "exec in an unknown sandbox is 404" "$(is_error 404 "$st"; echo $?)" "st=$st $(body)"
st=$(api GET /v1/nothing)
check "an unknown route is 404" "$(is_error 404 "$st"; echo $?)" "st=$st $(body)"
st=$(api PATCH /v1/sandboxes)
check "a wrong method is 405" "$(is_error 405 "$st"; echo $?)" "st=$st $(body)"
head -c 1100000 /dev/zero | tr '\0' ' ' >"$TMP/big"
st=$(api POST /v1/sandboxes --data-binary @"$TMP/big")
check "a body over 1 MiB is 413" "$(is_error 413 "$st"; echo $?)" "st=$st $(body)"
head -c 9000000 /dev/zero >"$TMP/big"
st=$(api PUT "/v1/sandboxes/$ID/files?path=/tmp/big" --data-binary @"$TMP/big")
check "a file over 8 MiB is 413" "$(is_error 413 "$st"; echo $?)" "st=$st $(body)"
# Ten slow 8 MiB uploads at once are 80 MiB of bodies: past the service's
# 64 MiB budget some are refused with 503, and afterwards the budget is whole.
head -c 8000000 /dev/zero >"$TMP/big"
ups=()
for i in $(seq 10); do
	curl -s --max-time 60 --limit-rate 1500K --unix-socket "$SOCK" -X PUT -o "$TMP/up$i.body" -w '%{http_code}' --data-binary @"$TMP/big" "http://lg/v1/sandboxes/$ID/files?path=/tmp/up$i" >"$TMP/up$i.code" &
	ups+=($!)
done
wait "${ups[@]}" # not a bare wait: the service runs in the background too
n503=$(cat "$TMP"/up*.code | grep -c 503)
n200=$(cat "$TMP"/up*.code | grep -c 200)
check "past the bodies' budget an upload is 503, saying why; the others are written" "$([ "$n503" -ge 1 ] && [ "$n200" -ge 1 ] && grep -l 'too many request bodies' "$TMP"/up*.body >/dev/null; echo $?)" "503: $n503, 200: $n200, $(cat "$TMP"/up*.code | tr '\n' ' ')"
st=$(api PUT "/v1/sandboxes/$ID/files?path=/tmp/up-after" --data-binary @"$TMP/big")
check "afterwards the budget is whole again: an 8 MiB upload is written" "$([ "$st" = 200 ]; echo $?)" "st=$st $(body)"
rm -f "$TMP/big" "$TMP"/up*

# --- TCP: the token and the origin ---
st=$(curl -s -o "$TMP/body" -w '%{http_code}' "$TCP/healthz")
check "TCP without a token is 401" "$(is_error 401 "$st"; echo $?)" "st=$st $(body)"
st=$(curl -s -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer wrong-token-0123456789" "$TCP/healthz")
check "TCP with a wrong token is 401" "$(is_error 401 "$st"; echo $?)" "st=$st $(body)"
st=$(curl -s -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$TCP/v1/sandboxes")
check "TCP with the token is 200" "$([ "$st" = 200 ] && jq -e --arg id "$ID" 'any(.sandboxes[]; .id == $id)' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
st=$(curl -s -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Origin: http://evil.example' "$TCP/healthz")
check "TCP with a foreign Origin is 403" "$(is_error 403 "$st"; echo $?)" "st=$st $(body)"
st=$(curl -s -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -X POST -d '{"approve":true}' "$TCP/v1/approvals/ap-000000000000")
check "deciding an approval over TCP is 403" "$(is_error 403 "$st"; echo $?)" "st=$st $(body)"

# --- ephemeral: luminaguard run's throw-away sandbox; its DELETE needs no human ---
st=$(api POST /v1/sandboxes -d '{"ephemeral":"yes"}')
check "ephemeral must be a boolean" "$(is_error 400 "$st"; echo $?)" "st=$st $(body)"
api POST /v1/sandboxes -d '{"ephemeral":true}' >/dev/null
EPH=$(jq -r .id "$TMP/body")
eph_created=$(jq -r .ephemeral "$TMP/body")
api POST "/v1/sandboxes/$EPH/exec?wait=1" -d '{"command":"echo work > /tmp/w"}' >/dev/null
api GET "/v1/sandboxes/$EPH" >/dev/null
eph_dirty=$(jq -r '.dirty and .ephemeral' "$TMP/body")
st=$(api DELETE "/v1/sandboxes/$EPH" --max-time 5)
check "an ephemeral sandbox that ran a command is deleted without a human (destroy-ephemeral)" "$([ "$eph_created" = true ] && [ "$eph_dirty" = true ] && [ "$st" = 200 ] && grep -q '"rule":"destroy-ephemeral"' "$H/audit.jsonl"; echo $?)" "created=$eph_created dirty+eph=$eph_dirty st=$st $(body)"

# --- idle_timeout: reaped when unused that long ---
api POST /v1/sandboxes -d '{"idle_timeout":1}' >/dev/null
IDLE=$(jq -r .id "$TMP/body")
IDLE_PID=$(jq -r .pid "$TMP/body")
gone=1
for _ in $(seq 60); do
	st=$(api GET "/v1/sandboxes/$IDLE")
	[ "$st" = 404 ] && { gone=0; break; }
	sleep 0.1
done
# Until its VMM is gone the reaper is still at work, and reap_idle in
# service.c reads the clock once per sweep: a sandbox created during the
# sweep's destroy looks idle since the epoch (the subtraction wraps) and is
# reaped too.  So the next create waits for the sweep to end.
for _ in $(seq 50); do kill -0 "$IDLE_PID" 2>/dev/null || break; sleep 0.1; done
sleep 0.2
check "a sandbox with idle_timeout 1 is reaped, VMM and all" "$([ $gone = 0 ] && ! kill -0 "$IDLE_PID" 2>/dev/null; echo $?)" "id=$IDLE pid=$IDLE_PID st=$st $(body)"

# --- a VMM killed under the service ---
api POST /v1/sandboxes -d '{}' >/dev/null
ID2=$(jq -r .id "$TMP/body")
api GET "/v1/sandboxes/$ID2" >/dev/null
VPID=$(jq -r .pid "$TMP/body")
kill -9 "$VPID"
k0=$(date +%s.%N)
state=
for _ in $(seq 60); do
	api GET "/v1/sandboxes/$ID2" >/dev/null
	state=$(jq -r .state "$TMP/body")
	[ "$state" = lost ] && break
	sleep 0.05
done
took=$(since "$k0")
check "a VMM killed under the service: lost with a reason within a second" "$([ "$state" = lost ] && jq -e '.lost_reason | length > 0' "$TMP/body" >/dev/null && lt "$took" 1.2; echo $?)" "took=$took $(body)"
echo "# a killed VMM was seen lost after $took s"
st=$(api POST "/v1/sandboxes/$ID2/exec" -d '{"command":"true"}')
check "exec in a lost sandbox is 409" "$(is_error 409 "$st"; echo $?)" "st=$st $(body)"
st=$(api GET /healthz)
check "the service keeps serving" "$([ "$st" = 200 ]; echo $?)" "st=$st"
st=$(api DELETE "/v1/sandboxes/$ID2")
check "DELETE of a lost (clean) sandbox is 200" "$([ "$st" = 200 ] && jq -e --arg id "$ID2" '.id == $id and .deleted == true' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"

# --- MCP sessions share the service (luminaguard mcp on stdio bridges to DATA/mcp.sock) ---
mkfifo "$TMP/mcp.in"
"$LG" mcp <"$TMP/mcp.in" >"$TMP/mcp.out" 2>"$TMP/mcp.err" &
MPID=$!
exec 7>"$TMP/mcp.in"
printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}' \
	'{"jsonrpc":"2.0","method":"notifications/initialized"}' \
	'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sandbox_create","arguments":{}}}' >&7
MID=
for _ in $(seq 300); do
	MID=$(jq -r 'select(.id == 2) | .result.structuredContent.sandbox_id // empty' "$TMP/mcp.out" 2>/dev/null)
	[ -n "$MID" ] && break
	sleep 0.1
done
st=$(api GET /v1/sandboxes)
check "an MCP session's sandbox (luminaguard mcp through the service) is listed with owner mcp" "$([ -n "$MID" ] && jq -e --arg id "$MID" 'any(.sandboxes[]; .id == $id and .owner == "mcp")' "$TMP/body" >/dev/null; echo $?)" "mid=$MID $(body)" "$(cat "$TMP/mcp.out" "$TMP/mcp.err")"
exec 7>&-
wait $MPID
gone=1
for _ in $(seq 100); do
	api GET /v1/sandboxes >/dev/null
	jq -e --arg id "$MID" 'any(.sandboxes[]; .id == $id)' "$TMP/body" >/dev/null || { gone=0; break; }
	sleep 0.1
done
check "the session's sandbox goes with the session" "$gone" "$(body)"

# --- network: attached at claim time; a destination off the list is a red action ---
st=$(api POST /v1/sandboxes -d '{"network":{"allow":["10.0.0.1:80"]}}')
check "an address in an API allowlist is 400 (host names only)" "$(is_error 400 "$st" && grep -q 'host names' "$TMP/body"; echo $?)" "st=$st $(body)"
st=$(api POST /v1/sandboxes -d '{"network":{"allow":["[::1]:80"]}}')
check "an IPv6 address in an API allowlist is 400 too" "$(is_error 400 "$st" && grep -q 'host names' "$TMP/body"; echo $?)" "st=$st $(body)"
st=$(api POST /v1/sandboxes -d '{"network":{"allow":["bad name!"]}}')
check "an allowlist entry the parser refuses is 400 with its reason" "$(is_error 400 "$st" && grep -q 'network' "$TMP/body"; echo $?)" "st=$st $(body)"
st=$(api POST /v1/sandboxes -d '{"network":{"allow":["pypi.org"],"ask":"no"}}')
check "a \"network\".ask that is not a boolean is 400" "$(is_error 400 "$st"; echo $?)" "st=$st $(body)"
st=$(api POST /v1/sandboxes -d '{"network":"pypi.org"}')
check "a malformed \"network\" is 400" "$(is_error 400 "$st"; echo $?)" "st=$st $(body)"
for _ in $(seq 300); do api GET /healthz >/dev/null; [ "$(jq '[.pools[].ready] | add' "$TMP/body")" = 2 ] && break; sleep 0.1; done
st=$(api POST /v1/sandboxes -d '{"network":{"allow":["listed.invalid:80"]}}')
NID=$(jq -r .id "$TMP/body")
check "a sandbox with network is claimed from the pool" "$([ "$st" = 201 ] && jq -e '.spawn_path == "pool"' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
st=$(api POST /v1/sandboxes -d '{}')
PID2=$(jq -r .id "$TMP/body")
st=$(api POST "/v1/sandboxes/$PID2/exec?wait=1" -d '{"command":"echo \"[$http_proxy]\"; http_proxy=http://127.0.0.1:3128 wget -q -O- http://x.invalid/ 2>&1; echo rc=$?"}')
check "a pooled sandbox claimed without network: no proxy variables, the port closed" "$([ "$st" = 200 ] && jq -e '(.stdout | startswith("[]\n")) and (.stdout | test("rc=[1-9]")) and (.stdout | test("HTTP/") | not)' "$TMP/body" >/dev/null; echo $?)" "st=$st $(body)"
delete_approved "$PID2" >/dev/null
curl -s --max-time 90 --unix-socket "$SOCK" -X POST -o "$TMP/net.body" "http://lg/v1/sandboxes/$NID/exec?wait=1" -d '{"command":"echo \"[$http_proxy]\"; wget -q -O- http://off-list.invalid/ 2>&1; echo rc=$?"}' &
npid=$!
aid=
for _ in $(seq 300); do
	aid=$(curl -s --unix-socket "$SOCK" http://lg/v1/approvals | jq -r '.pending[] | select(.card.tool == "network") | .id' | head -1)
	[ -n "$aid" ] && break
	sleep 0.1
done
st=$(api GET "/v1/approvals/$aid")
check "a destination off the allowlist is a pending \"network\" approval (risk high) naming the sandbox" "$([ -n "$aid" ] && [ "$st" = 200 ] && jq -e --arg id "$NID" '.card.tool == "network" and .card.risk == "high" and (.card.summary | test("off-list.invalid")) and (.card.where == $id)' "$TMP/body" >/dev/null; echo $?)" "aid=$aid st=$st $(body)"
api POST "/v1/approvals/$aid" -d '{"approve":false,"reason":"no"}' >/dev/null
wait $npid
check "denied: the guest's request is refused by the proxy (403), the proxy variables were set" "$(jq -e '(.stdout | startswith("[http://127.0.0.1:3128]\n")) and (.stdout | test("403")) and (.stdout | test("rc=[1-9]"))' "$TMP/net.body" >/dev/null; echo $?)" "$(cat "$TMP/net.body")"
st=$(api POST /v1/sandboxes -d '{"network":{"allow":["listed.invalid:80"],"ask":false}}')
QID=$(jq -r .id "$TMP/body")
napp0=$(curl -s --unix-socket "$SOCK" http://lg/v1/approvals | jq '[.pending[] | select(.card.tool == "network")] | length')
st=$(api POST "/v1/sandboxes/$QID/exec?wait=1" -d '{"command":"wget -q -O- http://off-list.invalid/ 2>&1; echo rc=$?"}')
napp1=$(curl -s --unix-socket "$SOCK" http://lg/v1/approvals | jq '[.pending[] | select(.card.tool == "network")] | length')
check "\"ask\": false refuses a destination off the list at once, nobody asked" "$([ "$st" = 200 ] && jq -e '(.stdout | test("403")) and (.stdout | test("rc=[1-9]"))' "$TMP/body" >/dev/null && [ "$napp0" = 0 ] && [ "$napp1" = 0 ]; echo $?)" "st=$st napp=$napp0/$napp1 $(body)"
delete_approved "$QID" >/dev/null
api GET /metrics >/dev/null
check "metrics count the refused connection" "$(grep -Eq '^luminaguard_egress_connections_total\{verdict="denied"\} [1-9]' "$TMP/body"; echo $?)" "$(grep egress "$TMP/body")"
delete_approved "$NID" >/dev/null

# --- approvals: a dirty sandbox's DELETE waits for a human ---
curl -s --max-time 60 --unix-socket "$SOCK" -X DELETE -o "$TMP/deny.body" -w '%{http_code}' "http://lg/v1/sandboxes/$ID" >"$TMP/deny.code" &
dpid=$!
aid=
for _ in $(seq 100); do
	aid=$(curl -s --unix-socket "$SOCK" http://lg/v1/approvals | jq -r '.pending[0].id // empty')
	[ -n "$aid" ] && break
	sleep 0.1
done
"$LG" approvals list >"$TMP/alist" 2>&1
st=$(api GET "/v1/approvals/$aid")
check "a pending approval: listed by luminaguard approvals and GET /v1/approvals/ID" "$([ -n "$aid" ] && grep -q "$aid" "$TMP/alist" && [ "$st" = 200 ] && jq -e '.card.tool == "sandbox_destroy"' "$TMP/body" >/dev/null; echo $?)" "aid=$aid st=$st $(body)" "$(cat "$TMP/alist")"
st=$(api POST "/v1/approvals/$aid" -d '{"approve":false,"reason":"keep it"}')
decided=$(jq -r .state "$TMP/body")
wait $dpid
st2=$(api GET "/v1/sandboxes/$ID")
check "denied over the socket: DELETE is 403 saying so, the sandbox stays" "$([ "$st" = 200 ] && [ "$decided" = denied ] && [ "$(cat "$TMP/deny.code")" = 403 ] && grep -q 'denied' "$TMP/deny.body" && [ "$st2" = 200 ]; echo $?)" "st=$st decided=$decided st2=$st2 $(cat "$TMP/deny.code" "$TMP/deny.body")"
st=$(delete_approved "$ID")
check "DELETE of a dirty sandbox waits for approval; approved over the socket it is 200" "$([ "$st" = 200 ] && jq -e '.state == "approved"' "$TMP/decide" >/dev/null; echo $?)" "st=$st $(cat "$TMP/del" "$TMP/decide" 2>/dev/null)"
st=$(api GET "/v1/sandboxes/$ID")
check "a deleted sandbox is gone" "$(is_error 404 "$st"; echo $?)" "st=$st"

# --- concurrent clients: 4 at once create, stream an exec and delete; nothing leaks ---
pool_full() {
	for _ in $(seq 300); do
		api GET /healthz >/dev/null
		[ "$(jq '[.pools[].ready] | add' "$TMP/body")" = 2 ] && return 0
		sleep 0.1
	done
	return 1
}
client() { # client N: one sandbox's life, the statuses on one line
	local id c1 c2 c3
	c1=$(curl -s --unix-socket "$SOCK" -X POST -d '{"ephemeral":true}' -o "$TMP/c$1.create" -w '%{http_code}' http://lg/v1/sandboxes)
	id=$(jq -r .id "$TMP/c$1.create")
	c2=$(curl -s --unix-socket "$SOCK" -X POST -d "{\"command\":\"seq 1 20000; echo client $1\"}" -o "$TMP/c$1.exec" -w '%{http_code}' "http://lg/v1/sandboxes/$id/exec")
	c3=$(curl -s --unix-socket "$SOCK" -X DELETE -o /dev/null -w '%{http_code}' "http://lg/v1/sandboxes/$id")
	echo "$c1 $c2 $c3 $(jq -rs --arg w "client $1" '[.[] | .data // empty] | add | contains($w)' "$TMP/c$1.exec") $(jq -s '.[-1].exit_code' "$TMP/c$1.exec")"
}
pool_full
api GET /v1/sandboxes >/dev/null
before_sb=$(jq '.sandboxes | length' "$TMP/body")
cpids=
for i in 1 2 3 4; do
	client $i >"$TMP/client$i" &
	cpids="$cpids $!"
done
# shellcheck disable=SC2086 # the list of pids
wait $cpids
pool_full
api GET /v1/sandboxes >/dev/null
after_sb=$(jq '.sandboxes | length' "$TMP/body")
results=$(cat "$TMP"/client[1-4] | sort -u)
check "4 concurrent clients: each created, streamed its own output, deleted; no sandbox left" "$([ "$results" = "201 200 200 true 0" ] && [ "$before_sb" = "$after_sb" ]; echo $?)" "$(cat "$TMP"/client[1-4])" "sandboxes $before_sb -> $after_sb"

# --- SIGKILL of the service: no VMM survives, the next one starts cleanly ---
api POST /v1/sandboxes -d '{}' >/dev/null
vmms=$(vmm_children "$SPID" | tr '\n' ' ')
old=$SPID
disown "$SPID" # (no "Killed" job notice)
kill -KILL "$SPID"
for _ in $(seq 50); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
left=
for _ in $(seq 50); do
	left=
	for p in $vmms; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
	[ -z "$left" ] && break
	sleep 0.1
done
check "SIGKILL of serve leaves no VMM running (${vmms:-none} gone)" "$([ -n "$vmms" ] && [ -z "$left" ]; echo $?)" "vmms=$vmms left=$left"
LUMINAGUARD_LOG_FORMAT=json start_serve --image tiny --max-sandboxes 1; rc=$?
st=$(api GET /v1/sandboxes -H 'X-Request-Id: json-req-1')
check "a new serve starts cleanly after a SIGKILL" "$([ $rc = 0 ] && [ "$st" = 200 ] && jq -e '.sandboxes == []' "$TMP/body" >/dev/null; echo $?)" "rc=$rc st=$st $(body)" "$(tail -5 "$TMP/serve.log")"
sleep 0.2
check "LUMINAGUARD_LOG_FORMAT=json: every log line JSON, the ready line too, and the request id on them" "$(jq -es --argjson p "$SPID" 'length > 1 and any(.[]; .msg == "serve: ready" and .pid == $p and (.unix | endswith("serve.sock"))) and any(.[]; .request_id == "json-req-1" and (.msg | test("GET /v1/sandboxes")))' "$TMP/serve.log" >/dev/null; echo $?)" "$(head -5 "$TMP/serve.log")"
stale=$(find /sys/fs/cgroup -maxdepth 3 -type d -name "vm-$old-*" 2>/dev/null | head -3)
check "no cgroup of the killed service is left" "$([ -z "$stale" ]; echo $?)" "$stale"

# --- SIGTERM: every sandbox destroyed, the socket removed, exit 0 ---
api POST /v1/sandboxes -d '{}' >/dev/null
LAST=$(jq -r .id "$TMP/body")
st=$(api POST /v1/sandboxes -d '{}')
check "over --max-sandboxes a create is 429" "$(is_error 429 "$st"; echo $?)" "st=$st $(body)"

# No pool here, so the service's fds change only with requests: after streamed,
# waited, concurrent and abandoned execs and file calls they are as before.
api POST "/v1/sandboxes/$LAST/exec?wait=1" -d '{"command":"true"}' >/dev/null
fds0=$(ls "/proc/$SPID/fd" | wc -l)
cpids=
for i in 1 2 3; do
	curl -s --unix-socket "$SOCK" -X POST -d '{"command":"seq 1 5000"}' -o /dev/null "http://lg/v1/sandboxes/$LAST/exec" &
	cpids="$cpids $!"
done
curl -s --max-time 1 --unix-socket "$SOCK" -X POST -d '{"command":"sleep 30"}' -o /dev/null "http://lg/v1/sandboxes/$LAST/exec" &
cpids="$cpids $!"
# shellcheck disable=SC2086 # the list of pids
wait $cpids
api POST "/v1/sandboxes/$LAST/exec?wait=1" -d '{"command":"echo x"}' >/dev/null
api PUT "/v1/sandboxes/$LAST/files?path=/tmp/f" -d 'x' >/dev/null
api GET "/v1/sandboxes/$LAST/files?path=/tmp/f" >/dev/null
api GET /metrics >/dev/null
sleep 0.5
fds1=$(ls "/proc/$SPID/fd" | wc -l)
check "no fd leaked by exec streams, cancels and file calls" "$([ "$fds0" = "$fds1" ]; echo $?)" "fds $fds0 -> $fds1" "$(ls -l "/proc/$SPID/fd" | tail -n +2 | awk '{print $NF}')"
vmms=$(vmm_children "$SPID" | tr '\n' ' ')
kill -TERM "$SPID"
wait "$SPID"; rc=$?
left=
for p in $vmms; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
check "SIGTERM: exit 0, socket removed, no VMM left" "$([ $rc = 0 ] && [ -n "$vmms" ] && [ -z "$left" ] && [ ! -e "$SOCK" ]; echo $?)" "rc=$rc vmms=$vmms left=$left" "$(tail -5 "$TMP/serve.log")"
SPID=

echo "# $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
