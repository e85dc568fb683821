# Shared by smoke.sh and bench.sh: a zsc server of our own on a free loopback port, and a fixture
# (org, administrator, console and consumer accounts, key) made with the generated Java clients.
# Sourced, not run. Needs build.sh to have run.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
CP="$(cat "$here/build/classpath"):$here/build/tests.jar"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server BINARY [ARGS...]: sets ZSC_PID, ZSC_ADDR, ZSC_DATA; stopped on exit.
start_server() {
  local binary="$1"; shift
  ZSC_DATA="$(mktemp -d)"
  ZSC_ADDR="127.0.0.1:$(free_port)"
  "$binary" serve --listen "$ZSC_ADDR" --data-dir "$ZSC_DATA" "$@" 2>"$ZSC_DATA/server.log" &
  ZSC_PID=$!
  trap 'kill "$ZSC_PID" 2>/dev/null; wait "$ZSC_PID" 2>/dev/null; rm -rf "$ZSC_DATA"' EXIT
  for _ in $(seq 100); do
    [ -s "$ZSC_DATA/operator.token" ] && (exec 3<>"/dev/tcp/${ZSC_ADDR%:*}/${ZSC_ADDR#*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "zsc did not start; its log:" >&2; cat "$ZSC_DATA/server.log" >&2; return 1
}

# fixture: sets ORG_ID, EMAIL, KEY, CONSOLE_TOKEN, CONSUMER_TOKEN.
fixture() {
  eval "$(java -Djava.library.path="$here/build/native" -cp "$CP" io.zsc.verifier.Fixture setup "$ZSC_ADDR" "$ZSC_DATA")"
}
