#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Fetches a Debian/Ubuntu kernel package into LuminaGuard's kernel cache
# without installing it: `apt-get download` + `dpkg-deb -x` need no root and
# leave /boot and the package database alone.  The result is
#   $LUMINAGUARD_HOME/kernels/<version>/{boot/vmlinuz-<version>,lib/modules/<version>/...}
# which `luminaguard image build` picks up by default.  Prints that directory.
#
# Usage: scripts/fetch-kernel.sh [--force] [META_PACKAGE]
#   META_PACKAGE  default: the first available of linux-image-cloud-amd64,
#                 linux-image-amd64, linux-image-virtual, linux-image-generic
#   --force       fetch again even if the version is already in the cache
set -euo pipefail

prog=${0##*/}
force=0
meta=

die() {
	echo "$prog: $*" >&2
	exit 1
}
say() {
	echo "$prog: $*" >&2
}

while [[ $# -gt 0 ]]; do
	case $1 in
	-h | --help)
		sed -n '4,16s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	-f | --force) force=1 ;;
	-*)
		echo "$prog: unknown option '$1' (see: $prog --help)" >&2
		exit 2
		;;
	*)
		[[ -z $meta ]] || {
			echo "$prog: only one package name, please (see: $prog --help)" >&2
			exit 2
		}
		meta=$1
		;;
	esac
	shift
done

for tool in apt-cache apt-get dpkg-deb; do
	command -v "$tool" >/dev/null || die "$tool not found: this script needs a Debian or Ubuntu host"
done

# The same rules as lg_home_dir() in src/common/paths.c.
if [[ -n ${LUMINAGUARD_HOME:-} ]]; then
	home=$LUMINAGUARD_HOME
elif [[ ${XDG_DATA_HOME:-} == /* ]]; then
	home=$XDG_DATA_HOME/luminaguard
else
	user_home=${HOME:-}
	[[ $user_home == /* ]] || user_home=$(getent passwd "$(id -u)" | cut -d: -f6)
	home=${user_home:-/tmp}/.local/share/luminaguard
fi
kernels=$home/kernels

# The concrete linux-image-<version> package a meta package points at.
resolve() {
	local pkg=$1 dep
	if [[ $pkg =~ ^linux-image-[0-9] ]]; then
		apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 && echo "$pkg"
		return 0
	fi
	dep=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
		--no-replaces --no-enhances "$pkg" 2>/dev/null |
		sed -n 's/^ *|\{0,1\}Depends: <\{0,1\}\(linux-image-[0-9][^ >]*\)>\{0,1\}$/\1/p' |
		head -n1) || true
	[[ -n $dep ]] && echo "$dep"
	return 0
}

pkg=
if [[ -n $meta ]]; then
	pkg=$(resolve "$meta")
	[[ -n $pkg ]] || die "no kernel package found for '$meta' (is it in your apt sources? try: apt-get update)"
else
	for m in linux-image-cloud-amd64 linux-image-amd64 linux-image-virtual linux-image-generic; do
		pkg=$(resolve "$m")
		if [[ -n $pkg ]]; then
			meta=$m
			break
		fi
	done
	[[ -n $pkg ]] || die "no kernel package found (looked for linux-image-cloud-amd64, linux-image-amd64, linux-image-virtual, linux-image-generic; try: apt-get update)"
fi

# linux-image-6.1.0-56-cloud-amd64 -> 6.1.0-56-cloud-amd64 (Ubuntu: -unsigned packages too).
version=${pkg#linux-image-}
version=${version#unsigned-}
[[ $version =~ ^[A-Za-z0-9._+~-]+$ ]] || die "unexpected package name '$pkg'"
dest=$kernels/$version

if [[ $force -eq 0 && -f $dest/boot/vmlinuz-$version && -d $dest/lib/modules/$version ]]; then
	say "kernel $version already in $dest"
	echo "$dest"
	exit 0
fi

say "fetching $pkg${meta:+ (from $meta)}"
mkdir -p "$kernels"
# apt-get download runs its fetcher as the unprivileged _apt user when
# started as root; a world-writable scratch directory keeps it from
# warning (and, on some versions, from failing) about a directory it
# cannot write.  Only .deb files land there and they are checked by apt.
dl=$(mktemp -d /tmp/lg-fetch-kernel.XXXXXX)
stage=$(mktemp -d "$kernels/.fetch-$version.XXXXXX")
cleanup() {
	rm -rf -- "$dl" "$stage"
}
trap cleanup EXIT
chmod 0777 "$dl"

pkgs=("$pkg")
# Ubuntu ships most modules in a separate linux-modules-<version> package.
if apt-cache show --no-all-versions "linux-modules-$version" >/dev/null 2>&1; then
	pkgs+=("linux-modules-$version")
fi
(cd "$dl" && apt-get download -q "${pkgs[@]}") >&2 || die "apt-get download ${pkgs[*]} failed"

shopt -s nullglob
debs=("$dl"/*.deb)
[[ ${#debs[@]} -gt 0 ]] || die "apt-get download left no .deb in $dl"
for deb in "${debs[@]}"; do
	say "extracting ${deb##*/}"
	dpkg-deb -x "$deb" "$stage"
done

[[ -f $stage/boot/vmlinuz-$version ]] || die "$pkg holds no boot/vmlinuz-$version"
if [[ ! -d $stage/lib/modules/$version && -d $stage/usr/lib/modules/$version ]]; then
	mkdir -p "$stage/lib/modules"
	ln -s "../../usr/lib/modules/$version" "$stage/lib/modules/$version"
fi
[[ -d $stage/lib/modules/$version ]] || die "$pkg holds no lib/modules/$version"
# Ubuntu packages make vmlinuz readable by root only; ours is our copy.
chmod -R u+rwX "$stage"
chmod 0755 "$stage"

rm -rf -- "$dest"
mv -T -- "$stage" "$dest"
say "kernel $version in $dest"
echo "$dest"
