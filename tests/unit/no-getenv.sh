#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The host program reads its environment once, in src/common/env.c
# (lg_env_load, see src/common/env.h): fails if getenv(), secure_getenv()
# or the like is called anywhere else in src/.  guest/ is another program
# (the guest agent) and is not checked.
#
# Usage: no-getenv.sh SOURCE_DIR
set -eu

cd "${1:?usage: no-getenv.sh SOURCE_DIR}"

# Files still allowed to call getenv, each with its reason.  Keep it empty.
pending=""

hits=$(grep -rnE --include='*.c' --include='*.h' '(secure_)?getenv[_a-z]*[[:space:]]*\(' src |
	grep -v '^src/common/env\.c:' || true)
bad=$hits
for f in $pending; do
	if printf '%s\n' "$hits" | grep -q "^$f:"; then
		echo "pending exception, to remove: $f"
	else
		echo "note: $f no longer calls getenv: delete it from the exceptions in $0"
	fi
	bad=$(printf '%s\n' "$bad" | grep -v "^$f:" || true)
done
if [ -n "$bad" ]; then
	printf '%s\n' "$bad"
	echo "FAIL: only src/common/env.c reads the environment: add a field to struct lg_env" \
		"(src/common/env.h) and use lg_env()" >&2
	exit 1
fi
echo "ok: no getenv in src/ outside src/common/env.c"
