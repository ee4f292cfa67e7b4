#!/usr/bin/env bash
# SMC-R with no code change: two network namespaces joined by a veth pair stand for two hosts.
# In one, scripts/smcr-demo.mjs runs an echo server on plain node:net; in the other, its client
# moves 64 MiB and 5000 14-byte round trips. Both run under `--import softrdma/smc/auto`: the
# server brings up an rxe device on its address (UDP 4791), the client its own, asks the
# server's host whether it has an SMC-R listener (one SIDR query), and the connections go over
# RoCEv2. Then the same client again with SOFTRDMA_SMCR=0 (TCP), for comparison. Prints how each
# process's connections settled (the preload's SOFTRDMA_SMC_SUMMARY) and the figures.
#
#   npm run build && sudo scripts/smcr-demo.sh
#
# Needs root (namespaces). Traffic stays on the veth pair; the namespaces go at the end.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$(id -u)" != 0 ]; then echo "smcr-demo: needs root to make network namespaces (sudo $0)"; exit 1; fi
if [ ! -f "$root/dist/src/smc/auto.js" ]; then echo "smcr-demo: build first (npm run build)"; exit 1; fi
t="smd$$"; A=10.236.0.1; B=10.236.0.2
tmp="$(mktemp -d)"
srv=""
cleanup() {
  [ -n "$srv" ] && kill "$srv" 2>/dev/null || true
  ip netns del "${t}a" 2>/dev/null || true
  ip netns del "${t}b" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "${t}a"; ip netns add "${t}b"
ip link add "${t}va" type veth peer name "${t}vb"
ip link set "${t}va" netns "${t}a"; ip link set "${t}vb" netns "${t}b"
ip -n "${t}a" addr add "$A/24" dev "${t}va"; ip -n "${t}b" addr add "$B/24" dev "${t}vb"
for ns in a b; do ip -n "$t$ns" link set lo up; ip -n "$t$ns" link set "${t}v$ns" up; done

auto="file://$root/dist/src/smc/auto.js"
demo="$root/scripts/smcr-demo.mjs"
SOFTRDMA_SMC_SUMMARY="$tmp/server.jsonl" ip netns exec "${t}a" node --import "$auto" "$demo" server "$A" > "$tmp/server.out" &
srv=$!
# The server is ready once it listens and its rxe device holds UDP 4791 on its address.
for _ in $(seq 100); do
  grep -q listening "$tmp/server.out" 2>/dev/null && ip netns exec "${t}a" ss -H -uln "sport = :4791" | grep -q "$A:4791" && break
  sleep 0.1
done

run() { # $1: label, then environment assignments for the client
  local label="$1"; shift
  rm -f "$tmp/client.jsonl"
  local out
  out="$(env "$@" SOFTRDMA_SMC_SUMMARY="$tmp/client.jsonl" ip netns exec "${t}b" node --import "$auto" "$demo" client "$A")"
  local settled
  settled="$(node -e 'const l=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n").pop());console.log(`SMCR ${l.smcr??0}, SMCD ${l.smcd}, TCP ${l.tcp}`)' "$tmp/client.jsonl")"
  printf '%-22s %-24s %s\n' "$label" "$settled" "$out"
}
echo "client in ${t}b ($B) -> echo server in ${t}a ($A:7000), both under --import softrdma/smc/auto"
printf '%-22s %-24s %s\n' "run" "client's connections" "result"
# A client's first connection to a host waits about one round trip for discovery's answer and
# otherwise goes TCP (the next one has the answer). A fresh process also brings up its device
# first, so here each connection may wait up to 1 s: the demo's two connections are SMC-R.
run "SMC-R (the default)" SOFTRDMA_SMCR_DISCOVERY_WAIT_MS=1000
run "TCP (SOFTRDMA_SMCR=0)" SOFTRDMA_SMCR=0
