#!/bin/bash
# MCP benchmark (see bench/bench_mcp.mjs).  Usage: bench/run-mcp.sh [RUNS]
# Needs scripts/setup.sh and the SDK in tests/mcp (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d tests/mcp/node_modules ] || (cd tests/mcp && npm ci --no-audit --no-fund >/dev/null)
# The SDK resolves from tests/mcp/node_modules.
ln -sfn ../tests/mcp/node_modules bench/node_modules
trap 'rm -f bench/node_modules' EXIT
LUMINAGUARD=$PWD/build/luminaguard RUNS=${1:-30} node bench/bench_mcp.mjs
