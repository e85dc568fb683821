#!/usr/bin/env bash
# Builds the Java Verifier (build.sh) and runs its unit tests; exits non-zero if any fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/build.sh"
exec java -cp "$(cat "$here/build/classpath"):$here/build/tests.jar" io.zsc.verifier.Check
