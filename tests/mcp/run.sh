#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# The MCP protocol tests: the official MCP TypeScript SDK as the client of
# `luminaguard mcp`, over stdio and Streamable HTTP, with real VMs.
#
#   tests/mcp/run.sh LUMINAGUARD [TEST_FILE...]
#
# Installs the pinned SDK (npm ci) when node_modules is missing or older
# than package-lock.json, then runs each test file in turn (VMs under TCG
# are slow enough that two files at once only make both flaky).  Output is
# TAP; the exit status is non-zero if any test failed.  Each test starts its
# own server with a private control socket and audit log, so a running
# `luminaguard mcp` is not disturbed.  LUMINAGUARD_HOME picks the images.
set -eu

if [ $# -lt 1 ]; then
	echo "usage: $0 LUMINAGUARD [TEST_FILE...]" >&2
	exit 2
fi
lg=$1
shift
case $lg in /*) ;; *) lg=$(pwd)/$lg ;; esac
[ -x "$lg" ] || { echo "mcp tests: '$lg' is not an executable" >&2; exit 2; }

cd "$(dirname "$0")"

command -v node >/dev/null || { echo "mcp tests: node is not installed (SETUP_TEST_DEPS=1 scripts/setup.sh)" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
	echo "mcp tests: node $(node --version) is too old; the MCP SDK needs node >= 18" >&2
	exit 1
fi

stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
	echo "# mcp tests: npm ci" >&2
	# Where the system's CA bundle is, use it: registries behind a TLS proxy
	# are only trusted through it.
	cafile=
	[ -r /etc/ssl/certs/ca-certificates.crt ] && cafile=--cafile=/etc/ssl/certs/ca-certificates.crt
	# No registry here at all is not a failure of the code under test: say
	# so and skip (77), loudly.  Any other npm failure fails.
	# shellcheck disable=SC2086
	if ! timeout 60 npm ping --fetch-retries=0 $cafile >/dev/null 2>&1; then
		echo "mcp tests: SKIPPED: the npm registry cannot be reached from here, so the pinned MCP SDK cannot be installed" >&2
		exit 77
	fi
	# shellcheck disable=SC2086
	npm ci --no-audit --no-fund --loglevel=error $cafile >&2
fi

if [ $# -eq 0 ]; then
	set -- protocol.test.mjs lifecycle.test.mjs approval.test.mjs disconnect.test.mjs net.test.mjs \
		admission.test.mjs lost.test.mjs image.test.mjs metrics.test.mjs
fi

export LUMINAGUARD="$lg"
status=0
for f in "$@"; do
	echo "# mcp tests: $f"
	node --test --test-reporter=tap "$f" || status=1
done
exit $status
