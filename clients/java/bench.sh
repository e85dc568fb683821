#!/usr/bin/env bash
# The Java Verifier's figures, beside the Rust Verifier's hit in the same run:
#  - the cache hit: median ns of 10^6 hits after warm-up (Java), criterion's verifier/hit (Rust);
#  - ValidateKey from grpc-java one call at a time against `zsc serve` (release build): p50/p99.
# Usage: clients/java/bench.sh [N_VALIDATE=5000]. Builds what it needs (release: minutes the first
# time). It prints figures and asserts nothing about times. ZSC_BENCH_FEATURES=etcd reuses a
# release build made with `cargo bench --features etcd` instead of making one without.
set -euo pipefail
n="${1:-5000}"
cd "$(dirname "$0")/../.."
features=(${ZSC_BENCH_FEATURES:+--features "$ZSC_BENCH_FEATURES"})
clients/java/build.sh >/dev/null
cargo bench --locked "${features[@]}" --bench micro --no-run 2>&1 | tail -1   # also builds target/release/zsc
source clients/java/lib.sh
start_server "$repo/target/release/zsc"
fixture
echo "== one run on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
java -cp "$CP" io.zsc.verifier.Bench hit "$ZSC_ADDR" "$CONSUMER_TOKEN" "$EMAIL" "$KEY"
# Just the Rust hit (criterion's filter); its bench starts its own server in-process.
cargo bench --locked "${features[@]}" --bench micro -- 'verifier/hit$' 2>&1 | grep -A1 '^verifier/hit' | sed 's/^/rust /'
java -cp "$CP" io.zsc.verifier.Bench validate "$ZSC_ADDR" "$CONSUMER_TOKEN" "$EMAIL" "$KEY" "$n"
