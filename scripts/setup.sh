#!/bin/bash
# Sets up LuminaGuard on a Debian/Ubuntu machine: installs what is missing
# from Debian's packages, builds, fetches the guest kernel (without touching
# /boot) and builds the guest images: "default", a Debian root file system
# with python3 (the sandbox an agent works in), and "tiny", the busybox
# initramfs alone (the fastest start).  Idempotent: a second run only
# rebuilds what changed.
#
#   scripts/setup.sh            # build into ./build
#   SETUP_TEST_DEPS=1 ...       # also the test tools (cmocka, clang for fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }

SUDO=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || { say "not root and no sudo: install the packages listed in $0 by hand"; exit 1; }
	SUDO=sudo
fi

PKGS=(gcc libc6-dev meson ninja-build pkg-config libjansson-dev liblzma-dev
	qemu-system-x86 busybox-static xz-utils cpio kmod libcmocka-dev libmicrohttpd-dev
	libseccomp-dev mmdebstrap erofs-utils uidmap zstd)
if [ "${SETUP_TEST_DEPS:-0}" = 1 ]; then
	# curl, jq: the serve API tests; bubblewrap: bench/run-service.sh's process-sandbox floor.
	PKGS+=(clang libclang-rt-14-dev procps iproute2 curl jq bubblewrap)
	# The MCP protocol tests (tests/mcp) run the official MCP SDK on node >= 18;
	# a node that brings its own npm (e.g. nodesource's) is used as it is.
	command -v npm >/dev/null || PKGS+=(nodejs npm)
fi

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD=${BUILD_DIR:-build}
if [ ! -f "$BUILD/build.ninja" ]; then
	say "configuring $BUILD"
	meson setup "$BUILD" >/dev/null
fi
say "building"
ninja -C "$BUILD" >/dev/null

say "fetching the guest kernel"
scripts/fetch-kernel.sh >/dev/null

# Rebuild an image when it is missing, older than the agent it carries, or
# (for "default") made by a version whose default had no Debian root.
home=${LUMINAGUARD_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/luminaguard}
stale() { # stale NAME: true if images/NAME must be (re)built
	local m="$home/images/$1/manifest.json"
	[ ! -f "$m" ] || [ "$BUILD/lg-agent" -nt "$m" ]
}
if stale tiny; then
	say "building the guest image \"tiny\" (busybox)"
	"$BUILD/luminaguard" image build --name tiny >/dev/null
fi
if stale default || ! grep -q '"rootfs.erofs"' "$home/images/default/manifest.json"; then
	say "building the guest image \"default\" (Debian with python3; a minute or two)"
	"$BUILD/luminaguard" image build --name default --packages python3 >/dev/null
fi
say "ready: $BUILD/luminaguard run -- python3 -c 'print(6*7)'"
