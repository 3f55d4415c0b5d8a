#!/bin/bash
# End-to-end tests of `luminaguard run --net`: real micro-VMs whose only way
# out is the host's egress proxy, against test hosts the test creates itself
# in network namespaces (never real internet addresses).
#
#   test_net.sh PATH/TO/luminaguard
#
# Needs root (network namespaces, veth pairs) and `ip`; exits 77 (skip)
# without them.  Uses the default image when it carries the lg-agent built
# next to luminaguard, otherwise builds a temporary image from it (the
# guest's network forwarder lives in the agent) and removes it afterwards.
#
# (busybox wget -T crashes in busybox 1.35, so timeouts come from `timeout`.)
#
# Topology (host netns <-> two namespaces, one /24 each):
#   host lgA<pid>h 10.231.1.1 <-> lgtA<pid> lgA<pid>n 10.231.1.2  httpd :8080 (a.txt)
#   host lgB<pid>h 10.231.2.1 <-> lgtB<pid> lgB<pid>n 10.231.2.2  httpd :8080 (b.txt)
#   host loopback 127.0.0.1:LPORT httpd (l.txt)
set -u
LG=${1:?usage: test_net.sh LUMINAGUARD}

if [ "$(id -u)" != 0 ]; then
	echo "skip: needs root (network namespaces and veth pairs for the test hosts)"
	exit 77
fi
for tool in ip busybox sha256sum; do
	if ! command -v "$tool" >/dev/null; then
		echo "skip: '$tool' is not installed"
		exit 77
	fi
done
# `ip netns add` makes / a mount slave, which a chroot whose root is not a
# mount point refuses (EINVAL): there are no test hosts to be had.
if ! awk '$5 == "/" { found = 1 } END { exit !found }' /proc/self/mountinfo; then
	echo "skip: running chroot'ed (/ is not a mount point): ip netns cannot create the test hosts"
	exit 77
fi
for net in 10.231.1.0/24 10.231.2.0/24; do
	if [ -n "$(ip route show "$net")" ]; then
		echo "skip: $net is already routed on this host; the test hosts need it"
		exit 77
	fi
done

PASS=0
FAIL=0
N=0
TMP=$(mktemp -d)
ID=$$
NSA=lgtA$ID
NSB=lgtB$ID
VA=lgA$ID
VB=lgB$ID
LPORT=$((20000 + ID % 20000))
# A memory size no other user picks: it marks this test's VMMs for the
# "nothing is left" check (other VMs may run on the host at the same time).
MEM=237
PIDS=()
# busybox's wget and nc are the clients (the Debian image has neither).
IMAGE=tiny
OWN_IMAGE=""

ok() { N=$((N + 1)); PASS=$((PASS + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAIL=$((FAIL + 1)); echo "not ok $N - $1"; shift; for l in "$@"; do echo "#   $l"; done; }
check() { # check NAME CONDITION-RESULT DETAILS...
	local name=$1 cond=$2
	shift 2
	if [ "$cond" = 0 ]; then ok "$name"; else not_ok "$name" "$@"; fi
}

cleanup() {
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	PIDS=()
	ip link del "${VA}h" 2>/dev/null
	ip link del "${VB}h" 2>/dev/null
	ip netns del "$NSA" 2>/dev/null
	ip netns del "$NSB" 2>/dev/null
	if [ -n "$OWN_IMAGE" ]; then
		"$LG" image remove "$OWN_IMAGE" >/dev/null 2>&1
		OWN_IMAGE=""
	fi
}
trap 'cleanup; rm -rf "$TMP"' EXIT

# --- the image: the guest side of the network is in lg-agent ---
agent=$(dirname "$LG")/lg-agent
home=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
want="sha256:$(sha256sum "$agent" | cut -d' ' -f1)"
if ! grep -q "\"agent\": \"$want\"" "$home/images/tiny/manifest.json" 2>/dev/null; then
	OWN_IMAGE=net-e2e-$ID
	echo "# the tiny image carries another lg-agent; building $OWN_IMAGE from $agent"
	if ! "$LG" image build -n "$OWN_IMAGE" --agent "$agent" >/dev/null 2>"$TMP/err"; then
		echo "Bail out! cannot build a test image: $(cat "$TMP/err")"
		OWN_IMAGE=""
		exit 1
	fi
	IMAGE=$OWN_IMAGE
fi

# --- the test hosts ---
setup_host() { # NS VETH SUBNET(third octet) NAME
	local ns=$1 v=$2 n=$3 name=$4
	ip netns add "$ns" &&
		ip link add "${v}h" type veth peer name "${v}n" &&
		ip link set "${v}n" netns "$ns" &&
		ip addr add "10.231.$n.1/24" dev "${v}h" &&
		ip link set "${v}h" up &&
		ip -n "$ns" addr add "10.231.$n.2/24" dev "${v}n" &&
		ip -n "$ns" link set "${v}n" up &&
		ip -n "$ns" link set lo up || return 1
	mkdir -p "$TMP/www$name"
	echo "content of host $name $ID" >"$TMP/www$name/$name.txt"
	ip netns exec "$ns" busybox httpd -f -p "10.231.$n.2:8080" -h "$TMP/www$name" &
	PIDS+=($!)
}
if ! setup_host "$NSA" "$VA" 1 a || ! setup_host "$NSB" "$VB" 2 b; then
	echo "Bail out! cannot create the test hosts"
	exit 1
fi
mkdir -p "$TMP/wwwl"
echo "content of the host loopback $ID" >"$TMP/wwwl/l.txt"
busybox httpd -f -p "127.0.0.1:$LPORT" -h "$TMP/wwwl" &
PIDS+=($!)

# The servers answer from the host (so a failure below is the sandbox's doing).
up=1
for _ in $(seq 1 50); do
	if busybox wget -q -O- "http://10.231.1.2:8080/a.txt" >/dev/null 2>&1 &&
		busybox wget -q -O- "http://10.231.2.2:8080/b.txt" >/dev/null 2>&1 &&
		busybox wget -q -O- "http://127.0.0.1:$LPORT/l.txt" >/dev/null 2>&1; then
		up=0
		break
	fi
	sleep 0.1
done
check "the test hosts answer from the host" "$up"

A="content of host a $ID"
B="content of host b $ID"
L="content of the host loopback $ID"

lg() { "$LG" run --image "$IMAGE" --memory $MEM "$@" </dev/null; }

# --- no --net: no network device, nothing gets out ---
# shellcheck disable=SC2016 # expanded in the guest
out=$(lg -- sh -c '
	echo "links: $(ls /sys/class/net | tr "\n" " ")"
	echo "proxy: ${http_proxy:-none}"
	timeout 5 wget -q -O- http://10.231.1.2:8080/a.txt && echo WGET-OK
	echo x | nc -w 3 10.231.1.2 8080 && echo NC-OK
	echo x | nc -w 3 127.0.0.1 3128 && echo PROXY-OK
	true' 2>&1); rc=$?
check "no --net: only lo in the guest" "$([ $rc = 0 ] && echo "$out" | grep -qx 'links: lo '; echo $?)" "rc=$rc" "$out"
check "no --net: no proxy, wget and raw TCP to a test host fail" "$(echo "$out" | grep -qx 'proxy: none' && echo "$out" | grep -q "can't connect" && ! echo "$out" | grep -q -e WGET-OK -e NC-OK -e PROXY-OK -e 'Segmentation' -e "$A"; echo $?)" "$out"

# --- --net allow=10.231.1.2:8080: the proxy, and only the proxy ---
# One VM for the cases that need no separate log: the guest script prints
# markers, the checks read them.
# shellcheck disable=SC2016 # expanded in the guest
LUMINAGUARD_LOG=info lg --net allow=10.231.1.2:8080 -- sh -c '
	echo "links: $(ls /sys/class/net | tr "\n" " ")"
	echo "proxy: ${http_proxy:-none}"
	echo "== wget-a"; timeout 20 wget -q -O- http://10.231.1.2:8080/a.txt
	echo "== connect-a"
	(printf "CONNECT 10.231.1.2:8080 HTTP/1.1\r\nHost: 10.231.1.2:8080\r\n\r\n"; sleep 2
	 printf "GET /a.txt HTTP/1.0\r\nHost: 10.231.1.2:8080\r\n\r\n"; sleep 3) | nc -w 10 127.0.0.1 3128
	echo "== wget-b"; timeout 20 wget -q -O- http://10.231.2.2:8080/b.txt; echo "wget-b rc=$?"
	echo "== raw-b"
	(printf "GET http://10.231.2.2:8080/b.txt HTTP/1.0\r\nHost: 10.231.2.2:8080\r\n\r\n"; sleep 3) | nc -w 10 127.0.0.1 3128
	echo "== loop-ip"; timeout 20 wget -q -O- http://127.0.0.1:'"$LPORT"'/l.txt; echo "loop-ip rc=$?"
	echo "== loop-connect"
	(printf "CONNECT 127.0.0.1:'"$LPORT"' HTTP/1.1\r\nHost: 127.0.0.1:'"$LPORT"'\r\n\r\n"; sleep 3) | nc -w 10 127.0.0.1 3128
	echo "== direct"; timeout 5 wget -Y off -q -O- http://10.231.1.2:8080/a.txt; echo "direct-wget rc=$?"
	echo x | nc -w 3 10.231.1.2 8080; echo "direct-nc rc=$?"
	echo "== dns"; nslookup example.org >/dev/null 2>&1; echo "dns rc=$?"
	echo "== end"' >"$TMP/out" 2>"$TMP/err"
rc=$?
out=$(tr -d '\r' <"$TMP/out")
section() { echo "$out" | sed -n "/^== $1\$/,/^== /p"; }
errs=$(cat "$TMP/err")
check "allow: the guest runs with the proxy set and still only lo" "$([ $rc = 0 ] && echo "$out" | grep -qx 'links: lo ' && echo "$out" | grep -q '^proxy: http://127.0.0.1:3128'; echo $?)" "rc=$rc" "$out" "$errs"
check "allow: wget through the proxy gets host a's file" "$(section wget-a | grep -qx "$A"; echo $?)" "$(section wget-a)" "$errs"
check "allow: a CONNECT tunnel to host a carries a GET" "$(section connect-a | grep -q '^HTTP/1.1 200' && section connect-a | grep -qx "$A"; echo $?)" "$(section connect-a)"
check "not listed: wget to host b fails" "$(section wget-b | grep -q 'wget-b rc=[1-9]' && ! section wget-b | grep -q "$B"; echo $?)" "$(section wget-b)"
check "not listed: the guest sees a 403 naming host b" "$(section raw-b | grep -q '^HTTP/1.[01] 403' && section raw-b | grep -q '10\.231\.2\.2' && ! section raw-b | grep -q "$B"; echo $?)" "$(section raw-b)"
check "host loopback: 127.0.0.1 is refused without an entry" "$(section loop-ip | grep -q 'loop-ip rc=[1-9]' && section loop-connect | grep -q '^HTTP/1.[01] 403' && ! echo "$out" | grep -q "$L"; echo $?)" "$(section loop-ip)" "$(section loop-connect)"
check "no raw TCP: direct wget and nc to host a fail" "$(section direct | grep -q 'direct-wget rc=[1-9]' && section direct | grep -q 'direct-nc rc=[1-9]' && ! section direct | grep -q "$A"; echo $?)" "$(section direct)"
check "no DNS from the guest" "$(section dns | grep -q 'dns rc=[1-9]'; echo $?)" "$(section dns)"
check "the log names each connection and its verdict" "$(echo "$errs" | grep -q 'sandbox run-[0-9]*: net GET 10\.231\.1\.2:8080 -> 10\.231\.1\.2 allowed' &&
	echo "$errs" | grep -q 'net CONNECT 10\.231\.1\.2:8080 -> 10\.231\.1\.2 allowed' &&
	echo "$errs" | grep -q 'warning: sandbox run-[0-9]*: net GET 10\.231\.2\.2:8080.* denied' &&
	echo "$errs" | grep -q "warning: sandbox run-[0-9]*: net CONNECT 127\.0\.0\.1:$LPORT.* denied"; echo $?)" "$errs"

# Denied connections are shown without LUMINAGUARD_LOG; allowed ones are not.
lg --net allow=10.231.1.2:8080 -- sh -c 'timeout 20 wget -q -O- http://10.231.1.2:8080/a.txt; timeout 20 wget -q -O- http://10.231.2.2:8080/b.txt' >"$TMP/out" 2>"$TMP/err"
rc=$?
check "by default the log shows denials, not allowed connections" "$(grep -qx "$A" "$TMP/out" && grep -q 'warning: sandbox run-[0-9]*: net GET 10\.231\.2\.2:8080.* denied' "$TMP/err" && ! grep -q 'allowed' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/out" "$TMP/err")"

# --- a name that resolves to loopback is still refused ---
# Needs "localhost" in the host's /etc/hosts, as every installed system has
# (a bare debootstrap chroot has none: then the check says it skips).
if getent ahostsv4 localhost | grep -q '^127\.0\.0\.1 '; then
	lg --net "allow=localhost:$LPORT" -- sh -c "timeout 20 wget -q -O- http://localhost:$LPORT/l.txt; echo \"rc=\$?\"" >"$TMP/out" 2>"$TMP/err"
	rc=$?
	check "allow=localhost:PORT does not reach the host's loopback" "$(grep -q 'rc=[1-9]' "$TMP/out" && ! grep -q "$L" "$TMP/out" && grep -q "net GET localhost:$LPORT.* denied" "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/out" "$TMP/err")"
else
	N=$((N + 1))
	echo "ok $N - allow=localhost:PORT does not reach the host's loopback # SKIP 'localhost' does not resolve here (no /etc/hosts)"
fi

# --- a bad allowlist is a usage error, before any VM ---
"$LG" run --net 'allow=bad host!' -- true >"$TMP/out" 2>"$TMP/err" </dev/null
rc=$?
check "a bad allowlist is one line and exit 2" "$([ $rc = 2 ] && [ "$(wc -l <"$TMP/err")" = 1 ] && grep -q '^luminaguard: --net' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"

# --- --approve tty: a destination not on the list is a question ---
# script(1) gives the prompt a terminal; the answer is typed once the card is shown.
approve() { # ANSWER ALLOW URL: runs wget URL with ALLOW on the list; sets rc
	local answer=$1 allow=$2 url=$3
	: >"$TMP/tty"
	rm -f "$TMP/done"
	(
		for _ in $(seq 1 1200); do
			[ -e "$TMP/done" ] && exit 0
			grep -q 'Allow it' "$TMP/tty" 2>/dev/null && break
			sleep 0.1
		done
		sleep 0.5
		echo "$answer"
		sleep 2
	) | {
		script -qec "$LG run --image $IMAGE --memory $MEM --net allow=$allow --approve tty -- timeout 60 wget -q -O- $url" /dev/null >"$TMP/tty" 2>&1
		echo $? >"$TMP/rc"
		touch "$TMP/done"
	}
	rc=$(cat "$TMP/rc")
}
# A yes can only open what the host's own allowlist would let through: an
# approved name reaches the host's loopback here because 127.0.0.1:LPORT is
# written on the host.  The card says what "localhost" is.
if getent ahostsv4 localhost | grep -q '^127\.0\.0\.1 '; then
	audit_before=$(wc -l <"$home/audit.jsonl" 2>/dev/null || echo 0)
	approve y "127.0.0.1:$LPORT" "http://localhost:$LPORT/l.txt"
	new_audit=$(tail -n +$((audit_before + 1)) "$home/audit.jsonl" 2>/dev/null)
	check "--approve tty: the question and the connection are in the audit log" "$(echo "$new_audit" | grep '"network"' | grep -q "localhost" && echo "$new_audit" | grep -E '"type": ?"net"' | grep -E '"verdict": ?"allowed"' | grep -q "localhost"; echo $?)" "$new_audit"
	check "--approve tty: y lets the connection through" "$([ "$rc" = 0 ] && grep -q "connect to localhost:$LPORT" "$TMP/tty" && grep -q 'this host itself' "$TMP/tty" && tr -d '\r' <"$TMP/tty" | grep -qx "$L"; echo $?)" "rc=$rc" "$(cat "$TMP/tty")"
	approve n "127.0.0.1:$LPORT" "http://localhost:$LPORT/l.txt"
	check "--approve tty: n refuses it" "$([ "$rc" != 0 ] && grep -q "connect to localhost:$LPORT" "$TMP/tty" && ! tr -d '\r' <"$TMP/tty" | grep -qx "$L"; echo $?)" "rc=$rc" "$(cat "$TMP/tty")"
else
	for name in "--approve tty: y lets the connection through" "--approve tty: n refuses it"; do
		N=$((N + 1))
		echo "ok $N - $name # SKIP 'localhost' does not resolve here (no /etc/hosts)"
	done
fi
# Issue 8: an address an approval cannot open (host b is in 10/8, host
# loopback is 127/8) is refused without a question, saying why; before, a
# yes to 127.0.0.1:PORT opened the host's loopback.
lg --net allow=10.231.1.2:8080 --approve tty -- sh -c "timeout 20 wget -q -O- http://10.231.2.2:8080/b.txt; timeout 20 wget -q -O- http://127.0.0.1:$LPORT/l.txt; echo rc=\$?" >"$TMP/out" 2>"$TMP/err"
rc=$?
check "--approve tty: private and loopback addresses are refused without asking" "$(grep -q 'rc=[1-9]' "$TMP/out" && ! grep -q -e "$B" -e "$L" "$TMP/out" && grep -q 'net GET 10\.231\.2\.2:8080.* denied: .*no approval can open it' "$TMP/err" && grep -q "net GET 127\.0\.0\.1:$LPORT.* denied: .*loopback.*no approval can open it" "$TMP/err" && ! grep -q -e 'not asked' -e 'Allow it' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/out" "$TMP/err")"

# --- nothing is left behind ---
cleanup
left=""
ip netns list | grep -q -e "$NSA" -e "$NSB" && left="$left netns"
ip link show | grep -q -e "${VA}h" -e "${VB}h" && left="$left veth"
pgrep -f "httpd -f -p (10\.231\.|127\.0\.0\.1:$LPORT)" >/dev/null && left="$left httpd"
pgrep -f "qemu-system-x86_64 .*-m $MEM .*org.luminaguard" >/dev/null && left="$left qemu"
[ -d "$home/images/net-e2e-$ID" ] && left="$left image"
check "nothing is left: no netns, veth, servers, VMMs or image" "$([ -z "$left" ]; echo $?)" "left:$left"

echo "1..$N"
echo "# $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
