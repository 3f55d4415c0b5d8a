#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Root file system formats and writable layers for issue 9, measured under
# QEMU microvm (TCG) with the project's guest kernel and machine line.
#
#  1. builds a minimal Debian root with python3 (mmdebstrap --mode=unshare,
#     the host's apt sources; never touches the host's root or package db),
#     or reuses a tarball: ROOTFS_TAR=FILE;  KEEP_TAR=FILE keeps the built one;
#  2. makes read-only base images from it: ext4 (mkfs.ext4 -d, no journal,
#     shrunk to fit), erofs (plain and lz4hc), squashfs (lz4 and zstd);
#     prints build time and size of each;
#  3. boots each under QEMU with a throwaway busybox initramfs that insmods
#     virtio_blk, erofs, squashfs and overlay, mounts the base and runs
#     python3 in a chroot; wall time from QEMU start to the markers on the
#     serial console, RUNS runs per configuration, interleaved, medians;
#  4. the writable layer per sandbox: a qcow2 overlay over a raw ext4 base,
#     or overlayfs with the upper layer on a second virtio disk (ext4 made on
#     the host, or ext2 made in the guest by busybox mke2fs) or on tmpfs in
#     guest RAM; host cost per sandbox; one fill run each (expects ENOSPC);
#     the base images' SHA-256 must be unchanged afterwards;
#  5. a snapshot probe: a guest with overlayfs on a tmpfs upper plus a
#     second writable disk writes a file to each, is snapshotted (RAM in a
#     memory-backend-file, x-ignore-shared, as in ARCHITECTURE.md), and two
#     clones are restored (share=off, each with its own copy of the disk
#     file as it was at the snapshot); each must see the pre-snapshot files
#     and not the other clone's, and read the base after drop_caches.
#
# Usage: bench/rootfs-formats.sh [RUNS]        (RUNS default 5)
# Env:   ROOTFS_TAR, KEEP_TAR, DISK_MIB (writable layer, default 128),
#        LAYER_BASE (base format under the overlayfs layers, default erofs-lz4hc),
#        MEM_MIB (guest RAM, default 256), LUMINAGUARD_HOME, BUSYBOX,
#        TSC_KHZ (default: /proc/cpuinfo), VM_TIMEOUT (s, default 120).
# Needs root (the root tree is extracted with its owners), mmdebstrap (unless
# ROOTFS_TAR), e2fsprogs, erofs-utils, squashfs-tools, qemu-utils,
# qemu-system-x86, busybox-static, python3 (QMP), and scripts/fetch-kernel.sh +
# `luminaguard image build` done once.  No mounts or loop devices on the host.
set -euo pipefail
export LC_ALL=C

prog=${0##*/}
die() {
	echo "$prog: $*" >&2
	exit 1
}
say() { echo "$prog: $*" >&2; }

runs=${1:-5}
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"
disk_mib=${DISK_MIB:-128}
layer_base=${LAYER_BASE:-erofs-lz4hc}
mem_mib=${MEM_MIB:-256}
vm_timeout=${VM_TIMEOUT:-120}
busybox=${BUSYBOX:-/bin/busybox}
suite=bookworm
packages=python3

[[ $EUID -eq 0 ]] || die "run as root: the root tree is extracted with its owners and the mkfs tools copy them from the directory"
need() {
	command -v "$1" >/dev/null || die "$1 not found: apt-get install -y $2"
}
[[ -n ${ROOTFS_TAR:-} ]] || need mmdebstrap mmdebstrap
need mkfs.ext4 e2fsprogs
need resize2fs e2fsprogs
need mkfs.erofs erofs-utils
need mksquashfs squashfs-tools
need qemu-img qemu-utils
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need timeout coreutils
need python3 python3
[[ -x $busybox ]] || die "no static busybox at $busybox: apt-get install -y busybox-static (or BUSYBOX=PATH)"
[[ ${BASH_VERSINFO[0]} -ge 5 ]] || die "needs bash 5 (EPOCHREALTIME)"

# The data directory, as lg_home_dir() in src/common/paths.c.
if [[ -n ${LUMINAGUARD_HOME:-} ]]; then
	home=$LUMINAGUARD_HOME
elif [[ ${XDG_DATA_HOME:-} == /* ]]; then
	home=$XDG_DATA_HOME/luminaguard
else
	home=$HOME/.local/share/luminaguard
fi
vmlinux=$home/images/default/vmlinux
[[ -f $vmlinux ]] || die "no $vmlinux: run scripts/fetch-kernel.sh and luminaguard image build"
kver=$(sed -n 's/^ *"kernel_version": *"\([^"]*\)".*/\1/p' "$home/images/default/manifest.json")
moddir=$home/kernels/$kver/lib/modules/$kver
[[ -d $moddir ]] || die "no modules for $kver under $home/kernels (scripts/fetch-kernel.sh)"

tsc_khz=${TSC_KHZ:-}
if [[ -z $tsc_khz ]]; then
	mhz=$(sed -n 's/^cpu MHz[[:space:]]*: *\([0-9]*\).*/\1/p' /proc/cpuinfo | head -n1)
	[[ -n $mhz ]] && tsc_khz=$((mhz * 1000))
fi
# base_cmdline in src/hv/qemu.c, plus tsc_early_khz as the backend passes it.
cmdline="console=ttyS0 quiet loglevel=3 panic=-1 reboot=t tsc=reliable no_timer_check i8042.noaux i8042.nokbd 8250.nr_uarts=1 cryptomgr.notests random.trust_cpu=on${tsc_khz:+ tsc_early_khz=$tsc_khz}"

work=$(mktemp -d "${TMPDIR:-/tmp}/lg-rootfs-formats.XXXXXX")
qpid=
cleanup() {
	local rc=$?
	if [[ -n $qpid ]]; then
		kill "$qpid" 2>/dev/null || true
		wait "$qpid" 2>/dev/null || true
	fi
	rm -rf -- "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() {
	local t=$EPOCHREALTIME
	echo $((10#${t/./} / 1000))
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
kib2mib() {
	case $1 in
	'' | - | '?') echo "${1:--}" ;;
	*) mib $(($1 * 1024)) ;;
	esac
}
alloc_bytes() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }

# ---- 1. the root tree --------------------------------------------------------
declare -A build_ms size_b
tar=${ROOTFS_TAR:-}
if [[ -z $tar ]]; then
	tar=$work/rootfs.tar
	src=()
	[[ -f /etc/apt/sources.list.d/debian.sources ]] && src=(/etc/apt/sources.list.d/debian.sources)
	say "mmdebstrap --mode=unshare --variant=apt --include=$packages $suite (${src[*]:-default mirror})"
	t0=$(now_ms)
	mmdebstrap --quiet --mode=unshare --variant=apt --include="$packages" "$suite" "$tar" "${src[@]}" >&2
	build_ms[mmdebstrap]=$(($(now_ms) - t0))
	if [[ -n ${KEEP_TAR:-} ]]; then cp -- "$tar" "$KEEP_TAR"; fi
else
	[[ -f $tar ]] || die "ROOTFS_TAR=$tar: no such file"
	build_ms[mmdebstrap]=cached
fi
size_b[tar]=$(stat -c %s "$tar")

root=$work/root
mkdir "$root"
t0=$(now_ms)
tar -xpf "$tar" --numeric-owner -C "$root"
build_ms[extract]=$(($(now_ms) - t0))
[[ -x $root/usr/bin/python3 ]] || die "the root tree has no /usr/bin/python3"
size_b[tree]=$(du -sb "$root" | cut -f1)
nfiles=$(find "$root" | wc -l)

# ---- 2. base images ------------------------------------------------------------
img=$work/img
mkdir "$img"
formats=(ext4 erofs erofs-lz4hc squashfs-lz4 squashfs-zstd)
fstype() { echo "${1%%-*}"; }
for f in "${formats[@]}"; do
	out=$img/$f
	t0=$(now_ms)
	case $f in
	ext4)
		# Generous first, then e2fsck + resize2fs -M: sized to fit.
		sz=$((size_b[tree] * 3 / 2 / 1048576 + 64))
		mkfs.ext4 -q -F -L lgroot -O ^has_journal -m 0 -E lazy_itable_init=0 -d "$root" "$out" "${sz}M" >/dev/null
		e2fsck -fy "$out" >/dev/null 2>&1 || [[ $? -le 1 ]]
		resize2fs -M "$out" >/dev/null 2>&1
		blocks=$(dumpe2fs -h "$out" 2>/dev/null | sed -n 's/^Block count: *//p')
		bsz=$(dumpe2fs -h "$out" 2>/dev/null | sed -n 's/^Block size: *//p')
		truncate -s $((blocks * bsz)) "$out"
		;;
	erofs) mkfs.erofs --quiet "$out" "$root" ;;
	erofs-lz4hc) mkfs.erofs --quiet -zlz4hc "$out" "$root" ;;
	squashfs-lz4) mksquashfs "$root" "$out" -noappend -quiet -no-progress -comp lz4 -Xhc >/dev/null ;;
	squashfs-zstd) mksquashfs "$root" "$out" -noappend -quiet -no-progress -comp zstd >/dev/null ;;
	esac
	build_ms[$f]=$(($(now_ms) - t0))
	size_b[$f]=$(stat -c %s "$out")
	say "$f: built in ${build_ms[$f]} ms, $(mib "${size_b[$f]}") MiB"
done
# The qcow2 layer writes into the base's own file system: an ext4 base with
# DISK_MIB of free space (sparse on the host).
t0=$(now_ms)
cp --sparse=always "$img/ext4" "$img/ext4-slack"
truncate -s "+${disk_mib}M" "$img/ext4-slack"
resize2fs "$img/ext4-slack" >/dev/null 2>&1
build_ms[ext4-slack]=$(($(now_ms) - t0))
size_b[ext4-slack]=$(stat -c %s "$img/ext4-slack")
rm -rf -- "$root"

declare -A sha
for f in "${formats[@]}" ext4-slack; do sha[$f]=$(sha256sum "$img/$f" | cut -d' ' -f1); done

# ---- 3. the throwaway initramfs ------------------------------------------------
ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,lower,upper,newroot,mods}
cp "$busybox" "$ird/bin/busybox"
for a in sh mount umount insmod mkdir cat echo sleep usleep chroot poweroff mke2fs du df dd sync rm tail sed; do
	ln -s busybox "$ird/bin/$a"
done
: >"$ird/mods.list"
for m in kernel/drivers/virtio/virtio_ring kernel/drivers/virtio/virtio kernel/drivers/virtio/virtio_mmio \
	kernel/drivers/block/virtio_blk kernel/lib/libcrc32c kernel/fs/erofs/erofs \
	kernel/fs/squashfs/squashfs kernel/fs/overlayfs/overlay; do
	name=${m##*/}
	if [[ -f $moddir/$m.ko ]]; then
		cp "$moddir/$m.ko" "$ird/mods/$name.ko"
	elif [[ -f $moddir/$m.ko.xz ]]; then
		xz -dc "$moddir/$m.ko.xz" >"$ird/mods/$name.ko"
	elif grep -qx "$m.ko" "$moddir/modules.builtin" 2>/dev/null; then
		continue
	else
		die "module $m not in $moddir"
	fi
	echo "/mods/$name.ko" >>"$ird/mods.list"
done
cat >"$ird/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mods.list); do insmod "$m" || echo "LGRF-ERR insmod $m"; done
fs= layer=none fill=0 disk=128
for w in $(cat /proc/cmdline); do
	case $w in
	lgrf.fs=*) fs=${w#*=} ;;
	lgrf.layer=*) layer=${w#*=} ;;
	lgrf.fill=*) fill=${w#*=} ;;
	lgrf.disk=*) disk=${w#*=} ;;
	esac
done
off() { sync; poweroff -f; sleep 10; }
fail() { echo "LGRF-ERR $*"; off; }
# virtio-mmio probe order is not the command line's: find disks by serial.
blk() {
	i=0
	while [ $i -lt 1000 ]; do
		for d in /sys/block/vd*; do
			[ -e "$d/serial" ] && [ "$(cat "$d/serial")" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
		done
		usleep 5000
		i=$((i + 1))
	done
	return 1
}
if [ "$fs" = - ]; then
	# The baseline: boot and insmod only, no disk.
	echo "LGRF-MOUNTED"; echo "LGRF-PY 42"; echo "LGRF-PY2 ok"; echo "LGRF-END"; off
fi
if [ "$layer" = snap ]; then
	# Snapshot probe: overlayfs with a tmpfs upper, plus a second writable
	# disk on /data; write before the snapshot, then wait for a clone name
	# on the console (sent after restore), look, write, re-read the base.
	mount -t "$fs" -o ro "$(blk base)" /lower || fail "mount $fs"
	mount -t tmpfs -o "size=${disk}m,mode=0755" tmpfs /upper || fail "mount tmpfs"
	mkdir -p /upper/u /upper/w /data
	mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || fail "mount overlay"
	mount -t ext4 "$(blk upper)" /data || fail "mount upper"
	echo pre >/newroot/etc/lgrf-pre-snap
	echo pre >/data/lgrf-pre-snap
	sync
	echo "LGRF-READY"
	read -r name </dev/console
	echo "LGRF-SEES tmpfs: $(cd /newroot/etc && echo lgrf-*) disk: $(cd /data && echo lgrf-*)"
	echo "$name" >"/newroot/etc/lgrf-clone-$name"
	echo "$name" >"/data/lgrf-clone-$name"
	sync
	echo 3 >/proc/sys/vm/drop_caches
	echo "LGRF-PY $(chroot /newroot /usr/bin/python3 -c 'print(6*7)' 2>&1)"
	echo "LGRF-END"
	off
fi
case $layer in
none)
	b=$(blk base) || fail "no base disk"
	mount -t "$fs" -o ro "$b" /newroot || fail "mount $fs"
	;;
qcow2)
	b=$(blk root) || fail "no root disk"
	mount -t ext4 -o rw "$b" /newroot || fail "mount ext4 rw"
	;;
disk | mkfs | tmpfs)
	b=$(blk base) || fail "no base disk"
	mount -t "$fs" -o ro "$b" /lower || fail "mount $fs"
	case $layer in
	disk)
		u=$(blk upper) || fail "no upper disk"
		mount -t ext4 "$u" /upper || fail "mount upper"
		;;
	mkfs)
		u=$(blk upper) || fail "no upper disk"
		mke2fs -q "$u" >/dev/null 2>&1 || mke2fs "$u" >/dev/null || fail "mke2fs"
		mount -t ext4 "$u" /upper || fail "mount upper"
		;;
	tmpfs) mount -t tmpfs -o "size=${disk}m,mode=0755" tmpfs /upper || fail "mount tmpfs" ;;
	esac
	mkdir -p /upper/u /upper/w
	mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || fail "mount overlay"
	;;
esac
echo "LGRF-MOUNTED"
echo "LGRF-PY $(chroot /newroot /usr/bin/python3 -c 'print(6*7)' 2>&1)"
echo "LGRF-PY2 $(chroot /newroot /usr/bin/python3 -c 'import asyncio, json, email.parser, http.client, unittest; print("ok")' 2>&1)"
if [ "$layer" != none ]; then
	[ -e /newroot/etc/lgrf-write ] && echo "LGRF-LEAK a write from an earlier sandbox is visible"
	echo written >/newroot/etc/lgrf-write && echo "LGRF-WRITE $(cat /newroot/etc/lgrf-write)"
	sync
	if [ "$layer" = qcow2 ]; then
		# shellcheck disable=SC2046
		set -- $(df -k /newroot | tail -n 1)
		echo "LGRF-LAYER-KB rw ext4: $3 used, $4 free"
	else
		echo "LGRF-LAYER-KB $(du -sk /upper | sed 's/\t.*//')"
	fi
	if [ "$fill" = 1 ]; then
		echo "LGRF-FILL $(dd if=/dev/zero of=/newroot/fill bs=1M 2>&1 | tail -n 3 | sed -n '/rror\|space/p' | head -n 1)"
		echo "LGRF-AFTERFILL $(echo still >/newroot/etc/lgrf-after 2>&1 || echo refused)"
		sync
		grep -E '^(MemFree|Shmem):' /proc/meminfo | sed 's/^/LGRF-MEM /'
	fi
fi
echo "LGRF-END"
off
EOF
chmod 0755 "$ird/init"
(cd "$ird" && find . -mindepth 1 | sort | cpio -o -H newc --quiet -R 0:0) >"$work/initrd.cpio"

# ---- 4. boots --------------------------------------------------------------------
# name:fs:layer:base-image
configs=(
	none:-:none:-
	ext4:ext4:none:ext4
	erofs:erofs:none:erofs
	erofs-lz4hc:erofs:none:erofs-lz4hc
	squashfs-lz4:squashfs:none:squashfs-lz4
	squashfs-zstd:squashfs:none:squashfs-zstd
	qcow2-ext4:ext4:qcow2:ext4-slack
	"upper-disk:$(fstype "$layer_base"):disk:$layer_base"
	"upper-mkfs:$(fstype "$layer_base"):mkfs:$layer_base"
	"upper-tmpfs:$(fstype "$layer_base"):tmpfs:$layer_base"
)

# The upper-disk template: mkfs once, copied per sandbox.
template=$work/upper-template.img
truncate -s "${disk_mib}M" "$template"
mkfs.ext4 -q -F -O ^has_journal -m 0 -E lazy_itable_init=0,lazy_journal_init=1,root_owner=0:0 "$template"

declare -A t_mnt t_py t_py2 t_exit fails layer_kb fillmsg memmsg rss_kb fill_rss
# shellcheck disable=SC2054 # commas belong to QEMU's options
machine=(qemu-system-x86_64 -M microvm,pit=on,pic=on,rtc=on,isa-serial=on -accel tcg,tb-size=64
	-cpu max -smp 1 -m "$mem_mib" -nodefaults -no-user-config -display none -no-reboot
	-kernel "$vmlinux" -initrd "$work/initrd.cpio" -serial stdio)

# shellcheck disable=SC2054
# boot NAME FS LAYER BASE FILL -> appends to the arrays; 0 when the markers came.
boot() {
	local name=$1 fs=$2 layer=$3 base=$4 fill=$5 drives=() line t0 tm='' tp='' tp2='' te ok=0 log qq hwm=''
	local w=$work/layer
	rm -f "$w"
	case $layer in
	none) [[ $base == - ]] || drives=(-drive "file=$img/$base,format=raw,if=none,id=base,readonly=on" -device virtio-blk-device,drive=base,serial=base) ;;
	qcow2)
		qemu-img create -q -f qcow2 -b "$img/$base" -F raw "$w"
		drives=(-drive "file=$w,format=qcow2,if=none,id=root" -device virtio-blk-device,drive=root,serial=root)
		;;
	disk | mkfs)
		if [[ $layer == disk ]]; then cp --sparse=always "$template" "$w"; else truncate -s "${disk_mib}M" "$w"; fi
		drives=(-drive "file=$img/$base,format=raw,if=none,id=base,readonly=on" -device virtio-blk-device,drive=base,serial=base
			-drive "file=$w,format=raw,if=none,id=upper" -device virtio-blk-device,drive=upper,serial=upper)
		;;
	tmpfs) drives=(-drive "file=$img/$base,format=raw,if=none,id=base,readonly=on" -device virtio-blk-device,drive=base,serial=base) ;;
	esac
	log=$work/log.$name
	: >"$log"
	t0=$(now_ms)
	exec {fd}< <(exec timeout "$vm_timeout" "${machine[@]}" "${drives[@]}" \
		-append "$cmdline lgrf.fs=$fs lgrf.layer=$layer lgrf.fill=$fill lgrf.disk=$disk_mib" </dev/null 2>&1)
	qpid=$!
	while IFS= read -r line <&$fd; do
		line=${line%$'\r'}
		echo "$line" >>"$log"
		case $line in
		LGRF-MOUNTED*) tm=$(now_ms) ;;
		"LGRF-PY 42"*) tp=$(now_ms) ;;
		"LGRF-PY2 ok"*) tp2=$(now_ms) ;;
		LGRF-LAYER-KB*) layer_kb[$name]=${line#LGRF-LAYER-KB } ;;
		LGRF-FILL*) fillmsg[$name]=${line#LGRF-FILL } ;;
		LGRF-LEAK*) leaks=$((leaks + 1)) ;;
		LGRF-MEM*) memmsg[$name]+="${line#LGRF-MEM } " ;;
		LGRF-END*)
			ok=1
			# The VMM's peak RSS, just before the guest powers off.
			qq=$(pgrep -P "$qpid" | head -n1) || true
			if [[ -n $qq ]]; then
				hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$qq/status" 2>/dev/null) || true
			fi
			;;
		esac
	done
	exec {fd}<&-
	wait "$qpid" 2>/dev/null || true
	qpid=
	te=$(now_ms)
	if [[ $layer == qcow2 || $layer == disk || $layer == mkfs ]]; then
		if [[ $fill -eq 0 ]]; then host_alloc[$name]=$(alloc_bytes "$w"); else host_fill[$name]=$(alloc_bytes "$w"); fi
	fi
	rm -f "$w"
	if [[ $ok -eq 1 && -n $tm && -n $tp && -n $tp2 ]]; then
		if [[ $fill -eq 0 ]]; then
			t_mnt[$name]+=" $((tm - t0))"
			t_py[$name]+=" $((tp - t0))"
			t_py2[$name]+=" $((tp2 - t0))"
			t_exit[$name]+=" $((te - t0))"
			[[ -n $hwm ]] && rss_kb[$name]+=" $hwm"
		else
			fill_rss[$name]=${hwm:-?}
		fi
		return 0
	fi
	fails[$name]=$((${fails[$name]:-0} + 1))
	say "$name: run failed; serial log:"
	sed 's/^/    /' "$log" >&2
	return 1
}
declare -A host_alloc host_fill
leaks=0

for ((i = 1; i <= runs; i++)); do
	for c in "${configs[@]}"; do
		IFS=: read -r name fs layer base <<<"$c"
		boot "$name" "$fs" "$layer" "$base" 0 || true
	done
	say "run $i/$runs done"
done
for c in "${configs[@]}"; do
	IFS=: read -r name fs layer base <<<"$c"
	[[ $layer == none ]] && continue
	boot "$name" "$fs" "$layer" "$base" 1 || true
done

# ---- 4b. snapshot and two clones -------------------------------------------------
# RAM in a shared memory-backend-file, x-ignore-shared, migrate to a state file
# (docs: ARCHITECTURE.md, "Snapshots with QEMU 7.2"); the upper disk file is
# copied at the snapshot and again per clone; every clone restores with
# share=off, gets its name on the console, and reports what it sees.
snap_out=$(python3 - "$work" "$img/$layer_base" "$template" "$vm_timeout" "${machine[@]}" \
	-append "$cmdline lgrf.fs=$(fstype "$layer_base") lgrf.layer=snap lgrf.disk=$disk_mib" <<'PY' 2>&1
import json, os, socket, subprocess, sys, time
work, base, template, tmo = sys.argv[1:5]
qemu = sys.argv[5:]
qemu[qemu.index("-M") + 1] += ",memory-backend=mem"
mem = qemu[qemu.index("-m") + 1]

def argv(share, upper, sock, incoming):
    a = ["timeout", tmo] + qemu + [
        "-object", "memory-backend-file,id=mem,size=%sM,mem-path=%s/ram,share=%s" % (mem, work, share),
        "-qmp", "unix:%s,server=on,wait=off" % sock,
        "-drive", "file=%s,format=raw,if=none,id=base,readonly=on" % base,
        "-device", "virtio-blk-device,drive=base,serial=base",
        "-drive", "file=%s,format=raw,if=none,id=upper" % upper,
        "-device", "virtio-blk-device,drive=upper,serial=upper"]
    return a + (["-incoming", "defer"] if incoming else [])

def start(a):
    return subprocess.Popen(a, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

class QMP:
    def __init__(self, path):
        for _ in range(500):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                time.sleep(0.01)
        self.f = self.s.makefile("rw")
        self.f.readline()
        self.cmd("qmp_capabilities")
        self.cmd("migrate-set-capabilities", capabilities=[{"capability": "x-ignore-shared", "state": True}])
    def cmd(self, c, **args):
        self.f.write(json.dumps({"execute": c, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "error" in r:
                raise RuntimeError("%s: %s" % (c, r["error"]))
            if "return" in r:
                return r["return"]
    def migrated(self):
        while True:
            st = self.cmd("query-migrate").get("status")
            if st in ("completed", "failed", "cancelled"):
                return st
            time.sleep(0.002)

def until(p, marker, log):
    for raw in iter(p.stdout.readline, b""):
        line = raw.decode(errors="replace").rstrip("\r\n")
        log.append(line)
        if marker in line:
            return True
    return False

def ms(t0):
    return (time.monotonic() - t0) * 1000

def alloc(path):
    return os.stat(path).st_blocks * 512

up = os.path.join(work, "snap-up.img")
subprocess.run(["cp", "--sparse=always", template, up], check=True)
p = start(argv("on", up, work + "/qa.sock", False))
log = []
t0 = time.monotonic()
if not until(p, "LGRF-READY", log):
    sys.exit("snapshot: the guest did not get ready: %s" % log)
boot = ms(t0)
q = QMP(work + "/qa.sock")
t0 = time.monotonic()
q.cmd("stop")
q.cmd("migrate", uri="exec:cat > %s/state" % work)
st = q.migrated()
save = ms(t0)
subprocess.run(["cp", "--sparse=always", up, up + ".snap"], check=True)
save_cp = ms(t0)
q.cmd("quit")
p.wait()
print("snapshot: boot to ready %.0f ms; stop + migrate %s %.0f ms (with the copy of the upper disk: %.0f ms); "
      "state %d B; RAM file %.1f MiB on disk; upper disk %.1f MiB on disk"
      % (boot, st, save, save_cp, os.path.getsize(work + "/state"), alloc(work + "/ram") / 1048576,
         alloc(up + ".snap") / 1048576))
for name in ("c1", "c2"):
    t0 = time.monotonic()
    cu = "%s/%s-up.img" % (work, name)
    subprocess.run(["cp", "--sparse=always", up + ".snap", cu], check=True)
    sock = "%s/q%s.sock" % (work, name)
    p = start(argv("off", cu, sock, True))
    q = QMP(sock)
    q.cmd("migrate-incoming", uri="exec:cat %s/state" % work)
    st = q.migrated()
    if q.cmd("query-status")["status"] != "running":
        q.cmd("cont")
    restored = ms(t0)
    p.stdin.write((name + "\n").encode())
    p.stdin.flush()
    log = []
    ok = until(p, "LGRF-END", log)
    sees = [l[len("LGRF-SEES "):] for l in log if l.startswith("LGRF-SEES ")]
    py = [l for l in log if l.startswith("LGRF-PY ")]
    print("clone %s: migrate-incoming %s, running after %.0f ms, done (python3 from a cold cache) after %.0f ms; sees %s; %s"
          % (name, st, restored, ms(t0), sees[0] if sees else "?", py[0] if py else "no python output"))
    p.wait()
    if not ok:
        print("clone %s: serial log: %s" % (name, log))
PY
) || snap_out="snapshot probe failed: $snap_out"

# Host cost per sandbox, RUNS times each.
hc_qcow=() hc_mkfs=() hc_cp=()
for ((i = 1; i <= runs; i++)); do
	t0=$(now_ms)
	qemu-img create -q -f qcow2 -b "$img/ext4-slack" -F raw "$work/hc.qcow2"
	hc_qcow+=($(($(now_ms) - t0)))
	t0=$(now_ms)
	truncate -s "${disk_mib}M" "$work/hc.raw"
	mkfs.ext4 -q -F -O ^has_journal -m 0 -E lazy_itable_init=0,lazy_journal_init=1,root_owner=0:0 "$work/hc.raw"
	hc_mkfs+=($(($(now_ms) - t0)))
	t0=$(now_ms)
	cp --sparse=always "$template" "$work/hc.cp"
	hc_cp+=($(($(now_ms) - t0)))
	alloc_qcow=$(alloc_bytes "$work/hc.qcow2")
	alloc_raw=$(alloc_bytes "$work/hc.raw")
	rm -f "$work/hc.qcow2" "$work/hc.raw" "$work/hc.cp"
done

unchanged=yes
for f in "${formats[@]}" ext4-slack; do
	[[ $(sha256sum "$img/$f" | cut -d' ' -f1) == "${sha[$f]}" ]] || {
		unchanged="NO ($f changed)"
		say "base image $f changed!"
	}
done

# ---- 5. the table --------------------------------------------------------------
# shellcheck disable=SC2086 # $1 is a space-separated list of numbers
med() { if [[ -n ${1// /} ]]; then median $1; else echo -; fi; }
echo
echo "## rootfs formats: $(date -u +%Y-%m-%dT%H:%MZ), kernel $kver, $(qemu-system-x86_64 --version | head -n1 | sed 's/QEMU emulator version //'), TCG, -m $mem_mib, median of $runs"
echo
echo "root tree: $nfiles entries, $(mib "${size_b[tree]}") MiB; tarball $(mib "${size_b[tar]}") MiB; mmdebstrap ${build_ms[mmdebstrap]} ms; tar -x ${build_ms[extract]} ms"
echo
echo "| base image | build ms | size MiB | on disk MiB |"
echo "|---|---:|---:|---:|"
for f in "${formats[@]}"; do
	echo "| $f | ${build_ms[$f]} | $(mib "${size_b[$f]}") | $(mib "$(alloc_bytes "$img/$f")") |"
done
echo "| ext4 + ${disk_mib} MiB free (qcow2 base) | +${build_ms[ext4-slack]} | $(mib "${size_b[ext4-slack]}") apparent, $(mib "$(alloc_bytes "$img/ext4-slack")") on disk |"
echo
echo "| config | base | layer | mounted ms | python3 42 ms | +stdlib imports ms | QEMU exit ms | VMM peak RSS MiB | failed | layer after boot (guest KiB) | host file/sandbox |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"
for c in "${configs[@]}"; do
	IFS=: read -r name fs layer base <<<"$c"
	ha=-
	[[ -n ${host_alloc[$name]:-} ]] && ha=$(mib "${host_alloc[$name]}")\ MiB
	echo "| $name | $base | $layer | $(med "${t_mnt[$name]:-}") | $(med "${t_py[$name]:-}") | $(med "${t_py2[$name]:-}") | $(med "${t_exit[$name]:-}") | $(kib2mib "$(med "${rss_kb[$name]:-}")") | ${fails[$name]:-0} | ${layer_kb[$name]:--} | $ha |"
done
echo
echo "writable layer full (${disk_mib} MiB; dd to /fill in the guest):"
for c in "${configs[@]}"; do
	IFS=: read -r name fs layer base <<<"$c"
	[[ $layer == none ]] && continue
	echo "  $name: ${fillmsg[$name]:-no message}; host file after fill: ${host_fill[$name]:+$(mib "${host_fill[$name]}") MiB}$([[ $layer == tmpfs ]] && echo '(none: guest RAM)'); VMM peak RSS $(kib2mib "${fill_rss[$name]:-}") MiB; guest ${memmsg[$name]:-}"
done
echo
echo "host, per sandbox (median of $runs): qemu-img create qcow2 $(median "${hc_qcow[@]}") ms ($(mib "$alloc_qcow") MiB); truncate + mkfs.ext4 ${disk_mib} MiB $(median "${hc_mkfs[@]}") ms ($(mib "$alloc_raw") MiB allocated); cp --sparse=always of that template $(median "${hc_cp[@]}") ms"
echo "base images unchanged after all runs (SHA-256): $unchanged; runs that saw an earlier sandbox's write: $leaks"
echo
echo "snapshot probe ($layer_base base, tmpfs upper + ${disk_mib} MiB upper disk):"
# shellcheck disable=SC2001
echo "$snap_out" | sed 's/^/  /'
