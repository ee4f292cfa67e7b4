#!/usr/bin/env bash
# Interop of `softrdma rping` (softrdma/cm: the rdma_cm API over softrdma's IB CM) with the
# kernel's rping (rdma-core 44's librdmacm over the Linux 6.1 rdma_cm and rdma_rxe) in
# ../shared/rxe-vm's VM. For IPv4 (10.77.0.1 ↔ 10.77.0.2) and IPv6 (fd77::1 ↔ fd77::2):
#   softrdma server in the namespace + kernel client in the guest (rping -c -C N -V -v)
#   kernel server in the guest (rping -s -v -C N) + softrdma client in the namespace (-C N -V -v)
# and one RC connect to a port nobody listens on (the kernel must answer REJ with reason 8).
# Then UD through SIDR against the kernel's udaddy, both ways (test/cm/vm-interop-udaddy.ts is
# the softrdma side: SIDR_REQ/SIDR_REP, 10 datagrams each way, SEND WITH_IMM of the QPN).
# Each pairing passes when both exit 0 and the client printed N verified "ping data" lines.
# Needs root (network namespace) and a built tree (npm run build). Traffic stays on the
# namespace's link. Prints SKIPPED and exits 0 when the VM cannot be used here.
#
#   sudo scripts/interop/rping.sh            # -C 100
#   sudo COUNT=10 scripts/interop/rping.sh
#   sudo PARTS=udaddy scripts/interop/rping.sh   # only the UD part (PARTS=rping: only rping)
#   sudo CAPTURE=1 scripts/interop/rping.sh      # also tcpdump on tap0 and tshark: the CM MADs
#                                                # decoded by its InfiniBand dissector, none malformed
#   RXE_VM=/path/to/rxe-vm KEEP_LOGS=1 ...   # keep the logs (printed at the end)
#
# Not part of npm test: CI machines have no VM.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VM=${RXE_VM:-/work/shared/rxe-vm}/vm.sh
CLI="node $ROOT/dist/src/cli/main.js"
COUNT=${COUNT:-100}
PORT=${PORT:-7174}
LOGS=$(mktemp -d /tmp/rping-interop.XXXXXX)
export RXE_QUIET=1

skip() { echo "SKIPPED: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespace, qemu): run with sudo"
[ -x "$VM" ] || skip "no VM harness at $VM"
[ -f /var/tmp/rxe-harness/vmlinuz ] || skip "the VM is not built (sudo $(dirname "$VM")/build.sh)"
[ -f "$ROOT/dist/src/cli/main.js" ] || { echo "build first: npm run build" >&2; exit 2; }

vm_exec() { RXE_EXEC_TIMEOUT=${2:-120} "$VM" exec "$1"; }

# Wait (bounded) until nobody else's VM runs: only one VM fits on the machine, and it is not ours to stop.
for _ in $(seq 60); do "$VM" status 2>/dev/null | grep -q '^VM running' || break; sleep 5; done
if "$VM" status 2>/dev/null | grep -q '^VM running'; then skip "another VM is still running after 5 minutes"; fi

echo "booting the VM ..."
"$VM" serve 'true' >/dev/null || { echo "VM did not boot" >&2; exit 3; }
trap '"$VM" stop >/dev/null 2>&1' EXIT
guest=$(vm_exec 'echo "kernel $(uname -r), rdma-core $(dpkg-query -W -f "\${Version}" rdmacm-utils)"')
echo "guest: $guest"

declare -A RES
ORDER=()

CAP=""
if [ "${CAPTURE:-0}" = 1 ] && command -v tcpdump >/dev/null && command -v tshark >/dev/null; then
  CAP=$LOGS/rping.pcap
  ip netns exec rxepeer tcpdump -i tap0 -w "$CAP" -U 'udp port 4791' >/dev/null 2>&1 &
  CAP_PID=$!
  for _ in $(seq 50); do [ -s "$CAP" ] && break; sleep 0.1; done
fi

# verdict NAME SERVER_RC SERVER_LOG CLIENT_RC CLIENT_LOG
verdict() {
  local name=$1 ok=pass why="" n
  [ "$2" = 0 ] || { ok=FAIL; why+=" server exit $2"; }
  [ "$4" = 0 ] || { ok=FAIL; why+=" client exit $4"; }
  n=$(grep -c '^ping data: rdma-ping-' "$5")
  [ "$n" = "$COUNT" ] || { ok=FAIL; why+=" client printed $n/$COUNT pings"; }
  grep -q 'data mismatch' "$5" && { ok=FAIL; why+=" data mismatch"; }
  RES[$name]="$ok$why ($n pings verified)"
  ORDER+=("$name")
  printf '%-44s %s\n' "$name" "${RES[$name]}"
  if [ "$ok" != pass ]; then echo "--- server ($3):"; tail -15 "$3"; echo "--- client ($5):"; tail -15 "$5"; fi
}

# softrdma server in the namespace, kernel rping client in the guest.
s_server() {
  local fam=$1 host=$2 log=$LOGS/s-server.$1
  ip netns exec rxepeer timeout 300 $CLI rping -s -a "$host" -p "$PORT" -v -d > "$log.softrdma" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q '^rdma_listen' "$log.softrdma" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  local t0=$SECONDS
  vm_exec "timeout 240 rping -c -a $host -p $PORT -C $COUNT -V -v" 300 > "$log.kernel" 2>&1; local crc=$?
  wait $pid; local src=$?
  verdict "IPv$fam softrdma server + kernel client" "$src" "$log.softrdma" "$crc" "$log.kernel"
  echo "    ($((SECONDS - t0)) s; server: $(grep -c '^server ping data' "$log.softrdma") pings read and written back)"
}

# kernel rping server in the guest, softrdma client in the namespace.
k_server() {
  local fam=$1 host=$2 guest=$3 log=$LOGS/k-server.$1
  vm_exec "rm -f /root/s.out /root/s.rc; (timeout 240 rping -s -a $guest -p $PORT -v > /root/s.out 2>&1; echo \$? > /root/s.rc) >/dev/null 2>&1 &" >/dev/null
  # Wait until its rdma_cm id listens (the guest's rdma tool lists cm ids).
  local up=0
  for _ in $(seq 60); do vm_exec "rdma resource show cm_id | grep -q 'state LISTEN.*:$PORT'" >/dev/null && { up=1; break; }; sleep 0.5; done
  local crc=99 t0=$SECONDS
  if [ $up = 1 ]; then
    ip netns exec rxepeer timeout 240 $CLI rping -c -a "$guest" -I "$host" -p "$PORT" -C "$COUNT" -V -v > "$log.softrdma" 2>&1; crc=$?
  else echo "the kernel's rping never listened" > "$log.softrdma"; fi
  local src=""
  for _ in $(seq 60); do src=$(vm_exec 'cat /root/s.rc 2>/dev/null'); [ -n "$src" ] && break; sleep 1; done
  vm_exec 'cat /root/s.out' > "$log.kernel" 2>&1
  verdict "IPv$fam kernel server + softrdma client" "${src:-timeout}" "$log.kernel" "$crc" "$log.softrdma"
  echo "    ($((SECONDS - t0)) s; kernel server: $(grep -c '^server ping data' "$log.kernel") pings)"
}

PARTS=" ${PARTS:-rping udaddy} "
if [[ $PARTS == *" rping "* ]]; then
s_server 4 10.77.0.1
k_server 4 10.77.0.1 10.77.0.2
s_server 6 fd77::1
k_server 6 fd77::1 fd77::2

# A connect to a port nobody listens on: the kernel's CM answers REJ(INVALID_SERVICE_ID).
log=$LOGS/no-listener
ip netns exec rxepeer timeout 60 $CLI rping -c -a 10.77.0.2 -I 10.77.0.1 -p $((PORT + 1)) -C 1 > "$log" 2>&1; rc=$?
if [ $rc != 0 ] && grep -q 'RDMA_CM_EVENT_REJECTED, error 8 (IB_CM_REJ_INVALID_SERVICE_ID)' "$log"; then RES[no-listener]=pass; else RES[no-listener]="FAIL (exit $rc: $(tail -1 "$log"))"; fi
ORDER+=(no-listener)
printf '%-44s %s\n' "connect to port $((PORT + 1)) (no listener)" "${RES[no-listener]}"
fi

# UD through SIDR with udaddy: pass when both exit 0, softrdma's side reports all 10 datagrams
# received, and udaddy printed "data transfers complete".
UDADDY="node $ROOT/dist/test/cm/vm-interop-udaddy.js"
u_verdict() {
  local name=$1 ok=pass why=""
  [ "$2" = 0 ] || { ok=FAIL; why+=" softrdma exit $2"; }
  [ "$4" = 0 ] || { ok=FAIL; why+=" udaddy exit $4"; }
  grep -q '"ok":true' "$3" || { ok=FAIL; why+=" softrdma: $(grep '^{' "$3" | tail -1)"; }
  grep -q 'data transfers complete' "$5" || { ok=FAIL; why+=" udaddy did not complete"; }
  RES[$name]="$ok$why"
  ORDER+=("$name")
  printf '%-44s %s\n' "$name" "${RES[$name]}"
  [ "$ok" = pass ] && echo "    softrdma: $(grep '^{' "$3" | tail -1)"
  if [ "$ok" != pass ]; then echo "--- softrdma ($3):"; tail -15 "$3"; echo "--- udaddy ($5):"; tail -15 "$5"; fi
}
u_softrdma_server() {
  local fam=$1 host=$2 guest=$3 log=$LOGS/u-s-server.$1
  ip netns exec rxepeer timeout 150 $UDADDY server "$host" 10 > "$log.softrdma" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q '^listening' "$log.softrdma" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  vm_exec "timeout 120 udaddy -s $host -b $guest -C 10" 180 > "$log.kernel" 2>&1; local crc=$?
  wait $pid; local src=$?
  u_verdict "IPv$fam UD: softrdma server + kernel udaddy client" "$src" "$log.softrdma" "$crc" "$log.kernel"
}
u_kernel_server() {
  local fam=$1 host=$2 guest=$3 log=$LOGS/u-k-server.$1
  vm_exec "rm -f /root/u.out /root/u.rc; (timeout 120 udaddy -b $guest -C 10 > /root/u.out 2>&1; echo \$? > /root/u.rc) >/dev/null 2>&1 &" >/dev/null
  local up=0
  for _ in $(seq 60); do vm_exec "rdma resource show cm_id | grep -q 'state LISTEN.*ps UDP.*:7174'" >/dev/null && { up=1; break; }; sleep 0.5; done
  local crc=99
  if [ $up = 1 ]; then ip netns exec rxepeer timeout 120 $UDADDY client "$host" "$guest" 10 > "$log.softrdma" 2>&1; crc=$?
  else echo "udaddy never listened" > "$log.softrdma"; fi
  local src=""
  for _ in $(seq 60); do src=$(vm_exec 'cat /root/u.rc 2>/dev/null'); [ -n "$src" ] && break; sleep 1; done
  vm_exec 'cat /root/u.out' > "$log.kernel" 2>&1
  u_verdict "IPv$fam UD: kernel udaddy server + softrdma client" "$crc" "$log.softrdma" "${src:-timeout}" "$log.kernel"
}
if [[ $PARTS == *" udaddy "* ]]; then
u_softrdma_server 4 10.77.0.1 10.77.0.2
u_kernel_server 4 10.77.0.1 10.77.0.2
u_softrdma_server 6 fd77::1 fd77::2
u_kernel_server 6 fd77::1 fd77::2
fi

if [ -n "$CAP" ]; then
  sleep 0.5; kill "$CAP_PID" 2>/dev/null; wait "$CAP_PID" 2>/dev/null
  cm=$(tshark -r "$CAP" -Y 'infiniband.mad.mgmtclass == 0x07' 2>/dev/null | wc -l)
  # Expert errors other than the IPv6 UDP checksum 0 that Linux rxe sends (a known rxe trait, not ours)
  bad=$(tshark -r "$CAP" -Y '_ws.malformed || (_ws.expert.severity == error && !(ipv6 && udp.checksum == 0))' 2>/dev/null | wc -l)
  zero6=$(tshark -r "$CAP" -Y 'ipv6 && udp.checksum == 0' -T fields -e ipv6.src 2>/dev/null | sort | uniq -c | awk '{printf "%s from %s ", $1, $2}')
  kinds=$(tshark -r "$CAP" -Y 'infiniband.mad.mgmtclass == 0x07' -T fields -e infiniband.mad.attributeid 2>/dev/null | sort | uniq -c | awk '{printf "%s×%s ", $2, $1}')
  if [ "$cm" -gt 0 ] && [ "$bad" = 0 ]; then RES[capture]="pass ($cm CM MADs decoded, none malformed; attribute ids: $kinds; IPv6 UDP checksum 0: ${zero6:-none})"; else RES[capture]="FAIL ($cm CM MADs, $bad malformed or in error)"; fi
  ORDER+=(capture)
  echo "capture $CAP: ${RES[capture]}"
fi

echo
echo "rping (-C $COUNT -V -v) and udaddy (-C 10) interop, $(date -u +%Y-%m-%dT%H:%MZ), guest $guest, parts:$PARTS"
fails=0
for k in "${ORDER[@]}"; do
  printf '| %-44s | %s |\n' "$k" "${RES[$k]}"
  [ "${RES[$k]%% *}" = pass ] || fails=$((fails + 1))
done
[ "${KEEP_LOGS:-0}" = 1 ] && echo "logs: $LOGS" || rm -rf "$LOGS"
exit $((fails > 0))
