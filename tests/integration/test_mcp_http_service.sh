#!/bin/bash
# `luminaguard mcp --http` in front of a running `luminaguard serve`: each
# HTTP session is carried over its own connection to DATA/mcp.sock, so its
# sandboxes live in the service (`luminaguard ps`, owner mcp) and go when the
# HTTP session ends (DELETE, or the process stopping); --standalone keeps
# its own.  Real VMs of a `tiny` image in a temporary data directory.
# Usage: test_mcp_http_service.sh PATH/TO/luminaguard
set -u
LG=${1:?usage: test_mcp_http_service.sh LUMINAGUARD}
LG=$(realpath "$LG")
SRC_HOME=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
PASS=0
FAIL=0
N=0
TMP=$(mktemp -d /tmp/lg-mcp-http-test.XXXXXX)
H=$TMP/home
SPID=
MPID=
stop_pid() { # stop_pid PID: SIGTERM, then SIGKILL after 10 s
	[ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
	kill -TERM "$1" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}
cleanup() {
	stop_pid "$MPID"
	stop_pid "$SPID"
	if [ "${KEEP:-0}" = 1 ]; then echo "# kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

ok() { N=$((N + 1)); PASS=$((PASS + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAIL=$((FAIL + 1)); echo "FAIL $N - $1"; shift; for l in "$@"; do echo "#   $l"; done; }
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
unset LUMINAGUARD_LOG
if ! "$LG" image build --name tiny >"$TMP/image.log" 2>&1; then
	echo "FAIL 0 - cannot build the tiny image"
	cat "$TMP/image.log"
	exit 1
fi

# start_mcp ARGS...: `luminaguard mcp --http 127.0.0.1:0 ARGS`; sets MPID and URL.
# Each run's log is kept apart (mcp.N.log); $TMP/mcp.log is the latest.
NMCP=0
start_mcp() {
	NMCP=$((NMCP + 1))
	: >"$TMP/mcp.$NMCP.log"
	ln -sf "mcp.$NMCP.log" "$TMP/mcp.log"
	LUMINAGUARD_LOG=info "$LG" mcp --http 127.0.0.1:0 "$@" 2>"$TMP/mcp.$NMCP.log" &
	MPID=$!
	URL=
	for _ in $(seq 300); do
		port=$(sed -n 's/.*listening on .*(port \([0-9]*\)).*/\1/p' "$TMP/mcp.log" | head -1)
		[ -n "$port" ] && { URL=http://127.0.0.1:$port/mcp; return 0; }
		kill -0 "$MPID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
# rpc SID BODY: POSTs a message; the JSON-RPC messages of the answer on
# stdout, one a line; the status in $TMP/st, the headers in $TMP/hdr.
rpc() {
	local sid=$1 body=$2
	curl -s --max-time 120 -D "$TMP/hdr" -o "$TMP/resp" -w '%{http_code}' \
		-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
		${sid:+-H "Mcp-Session-Id: $sid"} -d "$body" "$URL" >"$TMP/st"
	if grep -qi '^content-type: text/event-stream' "$TMP/hdr"; then
		sed -n 's/^data: //p' "$TMP/resp"
	else
		cat "$TMP/resp"
		echo
	fi
}
# open_session: initialize + notifications/initialized; prints the session id.
open_session() {
	rpc "" '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}' >"$TMP/init"
	local sid
	cp "$TMP/st" "$TMP/init.st"
	sid=$(sed -n 's/^[Mm][Cc][Pp]-[Ss]ession-[Ii][Dd]: *\([0-9a-f]*\).*/\1/p' "$TMP/hdr")
	rpc "$sid" '{"jsonrpc":"2.0","method":"notifications/initialized"}' >/dev/null
	echo "$sid"
}
call() { # call SID ID TOOL ARGS-JSON: the tool's result message
	rpc "$1" "{\"jsonrpc\":\"2.0\",\"id\":$2,\"method\":\"tools/call\",\"params\":{\"name\":\"$3\",\"arguments\":$4}}" | jq -c --argjson id "$2" 'select(.id == $id)'
}
in_ps() { "$LG" ps --json | jq -e --arg id "$1" 'any(.[]; .id == $id and .owner == "mcp")' >/dev/null; }
delete_session() { # delete_session SID: the status
	curl -s --max-time 120 -o /dev/null -w '%{http_code}' -X DELETE -H "Mcp-Session-Id: $1" "$URL"
}

# --- the service ---
"$LG" serve --image tiny --pool tiny=1 --net allow=listed.invalid >"$TMP/serve.log" 2>&1 &
SPID=$!
for _ in $(seq 600); do
	grep -q 'serve: ready' "$TMP/serve.log" && break
	sleep 0.1
done
check "serve starts" "$(grep -q 'serve: ready' "$TMP/serve.log"; echo $?)" "$(tail -5 "$TMP/serve.log")"

# --- mcp --http through the service ---
start_mcp --max-sandboxes 3; rc=$?
check "mcp --http finds the service, says so, and that its own settings do not apply" "$([ $rc = 0 ] && grep -q 'sessions in the running service' "$TMP/mcp.log" && grep -q 'its settings apply, not these options' "$TMP/mcp.log"; echo $?)" "rc=$rc" "$(cat "$TMP/mcp.log")"
S1=$(open_session)
check "initialize opens a session (id of 32 hex digits, the protocol version negotiated)" "$([ ${#S1} = 32 ] && [ "$(cat "$TMP/init.st")" = 200 ] && jq -e '.result.protocolVersion == "2025-06-18" and .id == 1' "$TMP/init" >/dev/null; echo $?)" "sid=$S1" "$(cat "$TMP/init")"
out=$(call "$S1" 2 sandbox_create '{}')
ID1=$(jq -r '.result.structuredContent.sandbox_id // empty' <<<"$out")
check "sandbox_create over HTTP" "$([ -n "$ID1" ]; echo $?)" "$out" "$(tail -3 "$TMP/mcp.log")"
check "the sandbox is the service's: luminaguard ps lists it, owner mcp" "$(in_ps "$ID1"; echo $?)" "$("$LG" ps 2>&1)"
out=$(call "$S1" 3 sandbox_exec "{\"sandbox_id\":\"$ID1\",\"command\":\"echo hello; echo err >&2; exit 3\"}")
check "sandbox_exec returns its output and exit code" "$(jq -e '.result.structuredContent | .stdout == "hello\n" and .stderr == "err\n" and .exit_code == 3' <<<"$out" >/dev/null; echo $?)" "$out"
out=$(call "$S1" 31 sandbox_exec "{\"sandbox_id\":\"$ID1\",\"command\":\"echo [\$http_proxy]\"}")
check "serve --net gives an MCP session's sandbox its network (the proxy variables are set)" "$(jq -e '.result.structuredContent.stdout == "[http://127.0.0.1:3128]\n"' <<<"$out" >/dev/null; echo $?)" "$out"
check "the service's audit log has the call" "$(grep -q "$ID1" "$H/audit.jsonl" 2>/dev/null; echo $?)" "$(ls "$H")"

# --- a red action of an HTTP session waits for a human at the service ---
# (the default policy: destroying a sandbox that ran something is red)
rpc "$S1" "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"sandbox_destroy\",\"arguments\":{\"sandbox_id\":\"$ID1\"}}}" >"$TMP/destroy.out" &
DPID=$!
aid=
for _ in $(seq 300); do
	aid=$(curl -s --max-time 10 --unix-socket "$H/serve.sock" http://lg/v1/approvals | jq -r --arg id "$ID1" '.pending[] | select(.card.tool == "sandbox_destroy") | .id' 2>/dev/null | head -1)
	[ -n "$aid" ] && break
	sleep 0.1
done
check "the session's red call is a pending approval of the service" "$([ -n "$aid" ]; echo $?)" "$(curl -s --unix-socket "$H/serve.sock" http://lg/v1/approvals)"
curl -s --max-time 10 --unix-socket "$H/serve.sock" -X POST -d '{"approve":false,"reason":"test says no"}' "http://lg/v1/approvals/$aid" >/dev/null
wait $DPID
out=$(jq -c 'select(.id == 4)' "$TMP/destroy.out")
check "denied at the service: the call's result comes back on its HTTP stream, the sandbox stays" "$(jq -e '.result.isError == true and (.result.content[0].text | test("denied"))' <<<"$out" >/dev/null && in_ps "$ID1"; echo $?)" "$out"

# --- another session cannot reach the first's sandbox or connection ---
S2=$(open_session)
out=$(call "$S2" 2 sandbox_exec "{\"sandbox_id\":\"$ID1\",\"command\":\"echo nope\"}")
check "a second session cannot use the first's sandbox" "$([ "$S2" != "$S1" ] && jq -e '.result.isError == true' <<<"$out" >/dev/null && ! grep -q nope <<<"$(jq -r '.result.structuredContent.stdout // ""' <<<"$out")"; echo $?)" "$out"
out=$(call "$S2" 3 sandbox_list '{}')
check "a second session's sandbox_list is empty" "$(jq -e '.result.structuredContent.sandboxes == []' <<<"$out" >/dev/null; echo $?)" "$out"
rpc "0123456789abcdef0123456789abcdef" '{"jsonrpc":"2.0","id":9,"method":"ping"}' >/dev/null
check "an unknown session id is 404" "$([ "$(cat "$TMP/st")" = 404 ]; echo $?)" "st=$(cat "$TMP/st")"

# --- DELETE ends the session: its sandbox is gone when the 200 comes ---
st=$(delete_session "$S1")
check "DELETE of the session destroys its sandbox in the service before answering" "$([ "$st" = 200 ] && ! in_ps "$ID1"; echo $?)" "st=$st" "$("$LG" ps 2>&1)"
rpc "$S1" '{"jsonrpc":"2.0","id":9,"method":"ping"}' >/dev/null
check "the deleted session is 404 afterwards" "$([ "$(cat "$TMP/st")" = 404 ]; echo $?)" "st=$(cat "$TMP/st")"
rpc "$S2" '{"jsonrpc":"2.0","id":9,"method":"ping"}' >/dev/null
check "the other session still works" "$([ "$(cat "$TMP/st")" = 200 ]; echo $?)" "st=$(cat "$TMP/st")"

# --- stopping mcp --http ends its sessions in the service ---
out=$(call "$S2" 4 sandbox_create '{}')
ID2=$(jq -r '.result.structuredContent.sandbox_id // empty' <<<"$out")
check "a sandbox of a second session is listed" "$([ -n "$ID2" ] && in_ps "$ID2"; echo $?)" "$out"
stop_pid "$MPID"
MPID=
gone=1
for _ in $(seq 100); do in_ps "$ID2" || { gone=0; break; }; sleep 0.1; done
check "SIGTERM to mcp --http: its sessions' sandboxes are destroyed in the service" "$gone" "$("$LG" ps 2>&1)"
check "the service still runs" "$(kill -0 "$SPID"; echo $?)"

# --- --standalone keeps its own sandboxes ---
start_mcp --standalone --image tiny; rc=$?
S3=$(open_session)
out=$(call "$S3" 2 sandbox_create '{}')
ID3=$(jq -r '.result.structuredContent.sandbox_id // empty' <<<"$out")
check "--standalone: sandbox_create works" "$([ $rc = 0 ] && [ -n "$ID3" ] && ! grep -q 'sessions in the running service' "$TMP/mcp.log"; echo $?)" "$out" "$(tail -3 "$TMP/mcp.log")"
check "--standalone: luminaguard ps does not list it" "$(! in_ps "$ID3"; echo $?)" "$("$LG" ps 2>&1)"
st=$(delete_session "$S3")
check "--standalone: DELETE ends the session" "$([ "$st" = 200 ]; echo $?)" "st=$st"
stop_pid "$MPID"
MPID=

# --- no service: mcp --http serves its own, as before ---
stop_pid "$SPID"
SPID=
start_mcp --image tiny; rc=$?
S4=$(open_session)
check "no service: mcp --http serves standalone" "$([ $rc = 0 ] && [ ${#S4} = 32 ] && ! grep -q 'sessions in the running service' "$TMP/mcp.log"; echo $?)" "$(cat "$TMP/mcp.log")"
stop_pid "$MPID"
MPID=

# Under a sanitizer build: no report in any log.
reports=$(grep -l 'ThreadSanitizer\|AddressSanitizer\|runtime error' "$TMP"/*.log 2>/dev/null)
check "no sanitizer report in the logs" "$([ -z "$reports" ]; echo $?)" "$reports"

echo "1..$N"
[ $FAIL = 0 ]
