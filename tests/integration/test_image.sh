#!/bin/bash
# End-to-end tests of root file system images (issue 9) with real micro-VMs:
# an image built from Debian packages by a spec file, a handmade rootfs tar
# imported, hostile tars refused, the copy-on-write layer private to each
# sandbox, the base image never written, a full layer, a damaged base, and
# nothing left behind.
# Usage: test_image.sh PATH/TO/luminaguard
#   (LUMINAGUARD_HOME must hold the kernel; images made here are removed again)
set -u
LG=${1:?usage: test_image.sh LUMINAGUARD}
PASS=0
FAIL=0
N=0
TMP=$(mktemp -d)
HOME_DIR=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
IMAGES=$HOME_DIR/images
# Every image this script makes starts with this prefix, and all go at the end.
P=lgtest-$$
cleanup() {
	for d in "$IMAGES"/"$P"-*; do
		[ -d "$d" ] && "$LG" image remove "$(basename "$d")" >/dev/null 2>&1
	done
	rm -rf "$TMP"
}
trap cleanup EXIT

ok() { N=$((N + 1)); PASS=$((PASS + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAIL=$((FAIL + 1)); echo "not ok $N - $1"; shift; for l in "$@"; do echo "#   $l"; done; }
skip() { N=$((N + 1)); echo "ok $N - $1 # SKIP $2"; }
check() { # check NAME CONDITION-RESULT DETAILS...
	local name=$1 cond=$2
	shift 2
	if [ "$cond" = 0 ]; then ok "$name"; else not_ok "$name" "$@"; fi
}
one_line() { [ "$(wc -l <"$1")" = 1 ] && grep -q '^luminaguard: ' "$1"; }
# An image command prints progress lines first; its error is the one last line.
last_line_error() { tail -1 "$1" | grep -q "^luminaguard: $2"; }
# What the host could leave behind: temp build dirs, mounts of the store, loop devices, VMMs.
leftovers() {
	{
		ls -a "$IMAGES" | grep '^\..*tmp' || true
		grep -F "$HOME_DIR" /proc/self/mountinfo || true
		losetup -a 2>/dev/null | grep -F "$HOME_DIR" || true
		pgrep -f "qemu-system.*$HOME_DIR/images/$P" || true
	} | sort
}
before=$(leftovers)

# --- an image from Debian packages, by a spec file -----------------------------
mkdir -p "$TMP/spec"
echo 'print("from the spec")' >"$TMP/spec/hello.py"
cat >"$TMP/spec/spec.json" <<EOF
{
  "name": "$P-py",
  "packages": ["python3-minimal"],
  "files": [{"src": "hello.py", "dst": "/opt/app/hello.py", "mode": "0644"}],
  "env": {"LG_SPEC_VAR": "spec value"},
  "workdir": "/opt/app",
  "user": "agent",
  "run": ["useradd --create-home --shell /bin/sh agent", "echo built >/opt/app/stamp"]
}
EOF
start=$(date +%s)
"$LG" image build -f "$TMP/spec/spec.json" >"$TMP/out" 2>"$TMP/err"; rc=$?
took=$(($(date +%s) - start))
built=0
if [ $rc = 0 ]; then
	built=1
	ok "image build -f SPEC builds a Debian image (${took}s)"
elif grep -qi 'mirror\|resolve\|could not\|download\|connection' "$TMP/err"; then
	skip "image build -f SPEC builds a Debian image" "no Debian mirror here: $(tail -1 "$TMP/err")"
else
	not_ok "image build -f SPEC builds a Debian image" "rc=$rc" "$(tail -5 "$TMP/err")"
fi
if [ $built = 1 ]; then
	out=$("$LG" image list 2>&1)
	check "image list shows the spec image as rootfs with its packages" "$(echo "$out" | grep -q "^$P-py  *rootfs  *[0-9.]* *MiB  *[0-9][0-9]*  *ok" ; echo $?)" "$out"

	out=$("$LG" run --image "$P-py" -- python3 -c 'print(6*7)' 2>"$TMP/err" </dev/null); rc=$?
	check "python3 runs in the image: 6*7" "$([ $rc = 0 ] && [ "$out" = 42 ]; echo $?)" "rc=$rc out=$out" "$(cat "$TMP/err")"

	out=$("$LG" run --image "$P-py" -- sh -c 'echo "$(id -un) $(pwd) $HOME $LG_SPEC_VAR $(cat stamp)"; python3 hello.py' 2>"$TMP/err" </dev/null); rc=$?
	check "the spec's user, workdir, env, files and build commands apply" "$([ $rc = 0 ] && [ "$out" = $'agent /opt/app /home/agent spec value built\nfrom the spec' ]; echo $?)" "rc=$rc out=$out" "$(cat "$TMP/err")"

	out=$("$LG" run --image "$P-py" --user root --env LG_SPEC_VAR=mine -- sh -c 'echo "$(id -u) $HOME $LG_SPEC_VAR"' 2>"$TMP/err" </dev/null); rc=$?
	check "--user and --env override the image's defaults" "$([ $rc = 0 ] && [ "$out" = "0 /root mine" ]; echo $?)" "rc=$rc out=$out" "$(cat "$TMP/err")"

	"$LG" run --image "$P-py" --user nobody-here -- true >"$TMP/out" 2>"$TMP/err" </dev/null; rc=$?
	check "an unknown --user is a one-line error" "$([ $rc != 0 ] && one_line "$TMP/err" && grep -q 'nobody-here' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"
fi

# --- the network, timeouts and signals behave as with the initramfs image -------
if [ $built = 1 ]; then
	# The in-guest proxy still listens after the switch into the image's
	# root, and the host refuses a host that is not on the list with 403.
	out=$("$LG" run --image "$P-py" --user root --net allow=allowed.invalid -- python3 -c '
import os, socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
s.sendall(b"GET http://blocked.invalid/ HTTP/1.1\r\nHost: blocked.invalid\r\nConnection: close\r\n\r\n")
print(os.environ.get("http_proxy"), s.recv(64).split(b"\r\n")[0].decode())
' 2>"$TMP/err" </dev/null); rc=$?
	check "--net: the guest's proxy works from the image's root and refuses an unlisted host" "$([ $rc = 0 ] && [[ $out == "http://127.0.0.1:3128 HTTP/1.1 403"* ]]; echo $?)" "rc=$rc out=$out" "$(tail -3 "$TMP/err")"
	start=$(date +%s)
	"$LG" run --image "$P-py" --timeout 2 -- sleep 60 </dev/null 2>"$TMP/err"; rc=$?
	took=$(($(date +%s) - start))
	check "--timeout kills a command in the image (exit 124)" "$([ $rc = 124 ] && [ $took -lt 40 ]; echo $?)" "rc=$rc took=${took}s" "$(cat "$TMP/err")"
	"$LG" run --image "$P-py" -- sleep 60 </dev/null >/dev/null 2>&1 &
	pid=$!
	sleep 6
	kill -INT $pid
	wait $pid; rc=$?
	check "SIGINT ends a run in the image and its VM" "$([ $rc = 130 ] && [ -z "$(pgrep -f "qemu-system.*$P-py")" ]; echo $?)" "rc=$rc"
fi

# --- a handmade tiny rootfs, imported from a tar -------------------------------
BUSYBOX=/bin/busybox
mkdir -p "$TMP/tiny/bin" "$TMP/tiny/etc" "$TMP/tiny/root" "$TMP/tiny/tmp" "$TMP/tiny/home/u"
cp "$BUSYBOX" "$TMP/tiny/bin/busybox"
for a in sh echo cat id ls dd rm sleep mkdir touch head sha256sum df; do ln -s busybox "$TMP/tiny/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000:u:/home/u:/bin/sh\n' >"$TMP/tiny/etc/passwd"
printf 'root:x:0:\nu:x:1000:\n' >"$TMP/tiny/etc/group"
echo 'tiny rootfs' >"$TMP/tiny/etc/motd"
chmod 1777 "$TMP/tiny/tmp"
tar -C "$TMP/tiny" --owner=0 --group=0 -czf "$TMP/tiny.tar.gz" .
"$LG" image import "$P-tiny" "$TMP/tiny.tar.gz" >"$TMP/out" 2>"$TMP/err"; rc=$?
check "image import of a handmade .tar.gz" "$([ $rc = 0 ]; echo $?)" "rc=$rc" "$(tail -3 "$TMP/err")"
out=$("$LG" run --image "$P-tiny" -- sh -c 'cat /etc/motd; id -u' 2>"$TMP/err" </dev/null); rc=$?
check "a command runs in the imported root" "$([ $rc = 0 ] && [ "$out" = $'tiny rootfs\n0' ]; echo $?)" "rc=$rc out=$out" "$(cat "$TMP/err")"
out=$("$LG" run --image "$P-tiny" --user u -- sh -c 'echo "$(id -u) $HOME $(pwd)"' 2>"$TMP/err" </dev/null); rc=$?
check "--user runs as the image's user, in its home" "$([ $rc = 0 ] && [ "$out" = "1000 /home/u /home/u" ]; echo $?)" "rc=$rc out=$out" "$(cat "$TMP/err")"

# --- hostile tars: refused in one line, or made harmless; nothing escapes --------
mkdir -p "$TMP/victim"
echo untouched >"$TMP/victim/file"
python3 - "$TMP" <<'EOF'
import io, sys, tarfile
tmp = sys.argv[1]
def add(t, name, data=b"x", **kw):
    i = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(i, k, v)
    if i.type == tarfile.REGTYPE:
        i.size = len(data)
        t.addfile(i, io.BytesIO(data))
    else:
        t.addfile(i)
cases = {
    "dotdot": [dict(name="../../victim/file", data=b"pwned")],
    "abs-symlink": [dict(name="evil", type=tarfile.SYMTYPE, linkname=tmp + "/victim"),
                    dict(name="evil/file", data=b"pwned")],
    "up-symlink": [dict(name="up", type=tarfile.SYMTYPE, linkname="../../../../../../.."),
                   dict(name="up" + tmp + "/victim/file", data=b"pwned")],
    "hardlink-out": [dict(name="h", type=tarfile.LNKTYPE, linkname=tmp + "/victim/file")],
}
for name, entries in cases.items():
    with tarfile.open(f"{tmp}/hostile-{name}.tar", "w", format=tarfile.GNU_FORMAT) as t:
        add(t, "bin/", type=tarfile.DIRTYPE, mode=0o755)
        for e in entries:
            e = dict(e)
            n = e.pop("name")
            add(t, n, **e)
# devices, setuid and duplicates are made harmless rather than refused: the
# tiny root plus a block device, a setuid file and a name given twice
with tarfile.open(f"{tmp}/tiny.tar.gz") as src, \
        tarfile.open(f"{tmp}/hostile-harmless.tar", "w", format=tarfile.GNU_FORMAT) as t:
    for m in src.getmembers():
        t.addfile(m, src.extractfile(m) if m.isfile() else None)
    add(t, "lg-sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
    add(t, "bin/lg-su", data=b"#!/bin/sh\n", mode=0o4755)
    add(t, "dup", data=b"first")
    add(t, "dup", data=b"second")
EOF
for c in dotdot abs-symlink up-symlink hardlink-out; do
	"$LG" image import "$P-h-$c" "$TMP/hostile-$c.tar" >"$TMP/out" 2>"$TMP/err"; rc=$?
	check "hostile tar ($c) is a one-line error and leaves no image" "$([ $rc != 0 ] && last_line_error "$TMP/err" "build image '$P-h-$c': tar entry" && [ ! -e "$IMAGES/$P-h-$c" ] && [ "$(cat "$TMP/victim/file")" = untouched ]; echo $?)" "rc=$rc" "$(cat "$TMP/err")"
done
"$LG" image import "$P-h-harmless" "$TMP/hostile-harmless.tar" >"$TMP/out" 2>"$TMP/err"; rc=$?
out=$("$LG" run --image "$P-h-harmless" -- sh -c 'ls -l /bin/lg-su | head -c 10; echo; cat /dup; echo; ls /lg-sda 2>&1' 2>&1 </dev/null)
# (setuid bits are kept for the guest, where the tar's author controls root
# anyway; on the host the tree only ever exists in a 0700 directory)
check "a tar with a device node, setuid file and duplicate imports harmlessly" "$([ $rc = 0 ] && [[ $out == $'-rwsr-xr-x\nsecond\n'*'No such file'* ]]; echo $?)" "rc=$rc out=$out" "$(tail -2 "$TMP/err")"
"$LG" image remove "$P-h-harmless" >/dev/null 2>&1
check "nothing of the refused imports is left in the store" "$([ -z "$(ls -a "$IMAGES" | grep -F "$P-h-")" ]; echo $?)" "$(ls -a "$IMAGES")"

# --- every sandbox has its own layer; the base is never written ------------------
IMG=${built:+$P-py}
[ "$built" = 1 ] || IMG=$P-tiny
base=$IMAGES/$IMG/rootfs.erofs
sum_before=$(sha256sum <"$base")
for who in A B; do
	"$LG" run --image "$IMG" --user root -- sh -c "echo $who >/etc/owner; echo $who >/tmp/owner; sleep 4; cat /etc/owner /tmp/owner; ls /etc/owner-* 2>/dev/null; touch /etc/owner-$who" \
		>"$TMP/par-$who" 2>"$TMP/par-$who.err" </dev/null &
done
wait
check "two sandboxes of one image in parallel see only their own writes" "$([ "$(cat "$TMP/par-A")" = $'A\nA' ] && [ "$(cat "$TMP/par-B")" = $'B\nB' ]; echo $?)" "A: $(cat "$TMP/par-A" "$TMP/par-A.err")" "B: $(cat "$TMP/par-B" "$TMP/par-B.err")"

"$LG" run --image "$IMG" --user root -- sh -c 'for d in / /etc /bin /usr /root /tmp /var; do echo x >"$d/lg-scribble" || exit 1; done; rm -rf /bin/* /etc/passwd; dd if=/dev/zero of=/dev/vda bs=4096 count=1 2>/dev/null && echo WROTE-VDA; true' >"$TMP/out" 2>"$TMP/err" </dev/null; rc=$?
out=$("$LG" run --image "$IMG" --user root -- sh -c 'ls /lg-scribble /etc/lg-scribble 2>&1; cat /etc/passwd | head -1' 2>&1 </dev/null)
sum_after=$(sha256sum <"$base")
check "writes everywhere (and to the disk device) never reach the base image" "$([ $rc = 0 ] && ! grep -q WROTE-VDA "$TMP/out" && [ "$sum_before" = "$sum_after" ] && [[ $out == *"No such file"*"No such file"*root:* ]]; echo $?)" "rc=$rc $(cat "$TMP/out" "$TMP/err")" "next sandbox: $out" "$sum_before / $sum_after"

# --- a full layer is ENOSPC in the guest, and the host carries on -----------------
"$LG" run --image "$IMG" --user root --disk 32 -- sh -c 'dd if=/dev/zero of=/fill bs=1M count=64; echo "dd=$?"; df -k / | tail -1' >"$TMP/out" 2>"$TMP/err" </dev/null; rc=$?
check "a full writable layer is ENOSPC in the guest" "$([ $rc = 0 ] && grep -q 'No space left on device' "$TMP/err" && grep -q 'dd=1' "$TMP/out"; echo $?)" "rc=$rc $(cat "$TMP/out")" "$(tail -3 "$TMP/err")"
out=$("$LG" run --image "$IMG" -- echo still-fine 2>&1 </dev/null)
check "the next sandbox of the image is fine" "$([ "$out" = still-fine ]; echo $?)" "$out"

# --- a damaged or missing base disk: one line naming the fix ---------------------
B=$IMAGES/$P-tiny/rootfs.erofs
orig=$(dd if="$B" bs=1 skip=5000 count=1 2>/dev/null | od -An -tx1 | tr -d ' ')
printf '\xff' | dd of="$B" bs=1 seek=5000 conv=notrunc 2>/dev/null
[ "$orig" = ff ] && printf '\xfe' | dd of="$B" bs=1 seek=5000 conv=notrunc 2>/dev/null
"$LG" run --image "$P-tiny" -- true >"$TMP/out" 2>"$TMP/err" </dev/null; rc=$?
check "a corrupt base disk is a one-line error naming the command that fixes it" "$([ $rc = 125 ] && one_line "$TMP/err" && grep -q 'rootfs.erofs' "$TMP/err" && grep -q "luminaguard image import $P-tiny" "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"
"$LG" image verify "$P-tiny" >"$TMP/out" 2>"$TMP/err"; rc=$?
check "image verify reports the corrupt base" "$([ $rc != 0 ] && grep -q 'rootfs.erofs' "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"
printf "\\x$orig" | dd of="$B" bs=1 seek=5000 conv=notrunc 2>/dev/null
out=$("$LG" run --image "$P-tiny" -- echo repaired 2>&1 </dev/null)
check "the same bytes back: the image opens again" "$([ "$out" = repaired ]; echo $?)" "$out"
rm -f "$B"
"$LG" run --image "$P-tiny" -- true >"$TMP/out" 2>"$TMP/err" </dev/null; rc=$?
check "a missing base disk is a one-line error naming the command that fixes it" "$([ $rc = 125 ] && one_line "$TMP/err" && grep -q 'rootfs.erofs' "$TMP/err" && grep -q "luminaguard image import $P-tiny" "$TMP/err"; echo $?)" "rc=$rc" "$(cat "$TMP/err")"

# --- nothing left behind ------------------------------------------------------------
cleanup_images() { for d in "$IMAGES"/"$P"-*; do [ -d "$d" ] && "$LG" image remove "$(basename "$d")" >/dev/null 2>&1; done; }
cleanup_images
after=$(leftovers)
check "nothing left behind (temp dirs, mounts, loop devices, VMMs, images)" "$([ "$before" = "$after" ] && [ -z "$(ls "$IMAGES" | grep -F "$P")" ]; echo $?)" "before: $before" "after: $after"

echo "$PASS passed, $FAIL failed"
[ $FAIL = 0 ]
