#!/bin/bash
# Callgrind instructions per call: ValidateKey vs Health/Check, one call at a time over one
# connection (h2load -c1 -m1), after a warm-up; counters zeroed and dumped with callgrind_control.
# usage: benches/callgrind_row1.sh ZSC_BINARY OUTDIR [CALLS]   (e.g. target/release/zsc /tmp/cg 2000)
# Needs valgrind, grpcurl, jq, python3 and nghttp2-client (h2load, nghttp). Prints instructions per call for each
# dump: health1, validate1, health2, validate2. EMAIL=Ada@Acme.example sends an address not in canonical form.
set -euo pipefail
BIN=$1; OUT=$2; N=${3:-2000}
mkdir -p "$OUT"; DATA=$(mktemp -d); PORT=$((20000 + RANDOM % 20000))
ZSC=127.0.0.1:$PORT
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" --dump-instr=no --collect-atstart=yes \
  "$BIN" serve --listen "$ZSC" --data-dir "$DATA" > "$OUT/server.log" 2>&1 & VG=$!
for _ in $(seq 300); do [ -s "$DATA/operator.token" ] && grpcurl -plaintext "$ZSC" grpc.health.v1.Health/Check >/dev/null 2>&1 && break; sleep 0.2; done
OPERATOR="authorization: Bearer $(cat "$DATA/operator.token")"
ORG_ID=$(grpcurl -plaintext -H "$OPERATOR" -d '{"name": "Acme", "edition": "EDITION_ENTERPRISE"}' "$ZSC" zsc.v1.UserService/CreateOrg | jq -r .orgId)
grpcurl -plaintext -H "$OPERATOR" -d "{\"org_id\": \"$ORG_ID\", \"email\": \"ada@acme.example\", \"display_name\": \"Ada\", \"profile\": \"PROFILE_ADMINISTRATOR\"}" "$ZSC" zsc.v1.UserService/CreateUser >/dev/null
DESK=$(grpcurl -plaintext -H "$OPERATOR" -d '{"name": "desk", "role": "ROLE_CONSUMER"}' "$ZSC" zsc.v1.AccessService/CreateServiceAccount | jq -r .token)
KEY=$(grpcurl -plaintext -H "$OPERATOR" -d "{\"org_id\": \"$ORG_ID\", \"actor_email\": \"ada@acme.example\"}" "$ZSC" zsc.v1.KeyService/GenerateKey | jq -r .key)
python3 - "$OUT" "${EMAIL:-ada@acme.example}" "$KEY" <<'PY'
import sys, struct
out, email, key = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
def field(n, b): return bytes([n << 3 | 2, len(b)]) + b
msg = field(1, email) + field(2, key)
open(out + "/validate.grpc", "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
open(out + "/health.grpc", "wb").write(b"\0" + struct.pack(">I", 0))
PY
H=(-H "content-type: application/grpc" -H "te: trailers" -H "authorization: Bearer $DESK")
nghttp -v "${H[@]}" -d "$OUT/validate.grpc" "http://$ZSC/zsc.v1.KeyService/ValidateKey" | grep -a grpc-status | tail -1
run() { # name path body
  h2load -c1 -m1 -n 300 "${H[@]}" -d "$3" "http://$ZSC$2" > /dev/null   # warm-up
  callgrind_control -z $VG > /dev/null
  h2load -c1 -m1 -n "$N" "${H[@]}" -d "$3" "http://$ZSC$2" | grep -E "^requests:"
  callgrind_control -d "$1" $VG > /dev/null
}
for round in 1 2; do
  run "health$round" /grpc.health.v1.Health/Check "$OUT/health.grpc"
  run "validate$round" /zsc.v1.KeyService/ValidateKey "$OUT/validate.grpc"
done
kill $VG; wait $VG || true
for f in "$OUT"/cg.*.*; do
  ir=$(grep -E "^(summary|totals):" "$f" | head -1 | awk '{print $2}')
  echo "$(grep -m1 '^desc: Trigger' "$f" | sed 's/.*Trigger: //') $f Ir=$ir per_call=$((ir / N))"
done
rm -rf "$DATA"
