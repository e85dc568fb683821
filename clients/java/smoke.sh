#!/usr/bin/env bash
# End-to-end smoke test of the Java Verifier's line protocol against a real zsc:
# verify -> ACCEPT (then from the cache), regenerate -> the old key REJECT, the new one ACCEPT.
# Usage: clients/java/smoke.sh [ZSC_BINARY]   (default target/debug/zsc; build.sh first)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
start_server "${1:-$repo/target/debug/zsc}"
fixture

coproc VERIFIER { ZSC_URLS="http://$ZSC_ADDR" ZSC_TOKEN="$CONSUMER_TOKEN" "$here/build/run-verifier"; }
ask() { echo "$1" >&"${VERIFIER[1]}"; read -r -t 10 reply <&"${VERIFIER[0]}"; echo "$reply"; }
expect() { # expect PATTERN REPLY WHAT
  if [[ "$2" =~ $1 ]]; then echo "ok   $3: $2"; else echo "FAIL $3: got '$2', want /$1/"; exit 1; fi
}
read -r -t 10 ready <&"${VERIFIER[0]}"
expect '^READY$' "$ready" "start"
for _ in $(seq 100); do
  [[ "$(ask stats)" == *'"fresh":true'* ]] && break
  sleep 0.05
done
expect '"connected":true.*"fresh":true' "$(ask stats)" "the stream vouches for the cache"
expect "^ACCEPT $ORG_ID zk_" "$(ask "verify $EMAIL $KEY")" "first verify (ValidateKey)"
expect "^ACCEPT $ORG_ID zk_" "$(ask "verify ${EMAIL^^} $KEY")" "second verify, email in another case"
expect '"hits":1,"misses":1,"cached_keys":1' "$(ask stats)" "the second was a cache hit"
expect '^REJECT$' "$(ask "verify someone-else@acme.example $KEY")" "another email"
expect '^ERROR ' "$(ask "verify $EMAIL")" "a malformed request"

before="$(ask stats)"
NEW_KEY="$(java -cp "$CP" io.zsc.verifier.Fixture regenerate "$ZSC_ADDR" "$CONSOLE_TOKEN" "$ORG_ID" "$EMAIL")"
regenerated=$(date +%s%N)
# The revocation arrives on the stream and evicts the cached key: no verify is needed for that.
for _ in $(seq 200); do
  after="$(ask stats)"
  [[ "$after" == *'"cached_keys":0'* ]] && break
  sleep 0.01
done
evicted=$(date +%s%N)
expect '"cached_keys":0,"applied_sequence":[1-9]' "$after" \
  "the stream evicted the old key ($(( (evicted - regenerated) / 1000000 )) ms after the regenerating process exited; stats polled every 10 ms)"
expect '^REJECT$' "$(ask "verify $EMAIL $KEY")" "the old key"
expect "^ACCEPT $ORG_ID zk_" "$(ask "verify $EMAIL $NEW_KEY")" "the new key"
expect '"cached_keys":1,"applied_sequence":[0-9]+' "$(ask stats)" "the old key evicted, the new one cached"
echo quit >&"${VERIFIER[1]}"
wait "$VERIFIER_PID"
echo "ok   quit: exit 0"

# A first URL where nothing listens: the stream and the validations move on to the next replica.
dead="http://127.0.0.1:$(free_port)"
answers="$(printf 'verify %s %s\nstats\nquit\n' "$EMAIL" "$NEW_KEY" \
  | ZSC_URLS="$dead,http://$ZSC_ADDR" ZSC_TOKEN="$CONSUMER_TOKEN" "$here/build/run-verifier" 2>/dev/null)"
expect "^READY.ACCEPT $ORG_ID zk_" "$(echo "$answers" | head -2 | tr '\n' ' ')" "a dead first replica: fail over to the second"

# TLS (through netty-tcnative, see README): a second server with a certificate from a CA of our own.
tls="$(mktemp -d)"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 1 -subj /CN=smoke-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$tls/server.key" -out "$tls/server.csr" -subj /CN=localhost 2>/dev/null
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
  -out "$tls/server.pem" -extfile <(echo "subjectAltName=IP:127.0.0.1") 2>/dev/null
kill "$ZSC_PID"; wait "$ZSC_PID" 2>/dev/null || true
"$repo/target/debug/zsc" serve --listen "$ZSC_ADDR" --data-dir "$ZSC_DATA" \
  --tls-cert "$tls/server.pem" --tls-key "$tls/server.key" 2>>"$ZSC_DATA/server.log" &
ZSC_PID=$!
verify_tls() { # verify_tls CA_FILE: the answers to one verify
  printf 'verify %s %s\nquit\n' "$EMAIL" "$NEW_KEY" | ZSC_URLS="https://$ZSC_ADDR" ZSC_TLS_CA="$1" \
    ZSC_TOKEN="$CONSUMER_TOKEN" "$here/build/run-verifier" 2>/dev/null | tr '\n' ' '
}
for _ in $(seq 50); do (exec 3<>"/dev/tcp/${ZSC_ADDR%:*}/${ZSC_ADDR#*:}") 2>/dev/null && break; sleep 0.1; done
expect "^READY ACCEPT $ORG_ID zk_" "$(verify_tls "$tls/ca.pem")" "TLS with the server's CA"
expect "^READY UNAVAILABLE $" "$(verify_tls "")" "TLS without it: not trusted, fail closed"
rm -rf "$tls"
