#!/usr/bin/env bash
# Interop of `softrdma perftest` and `softrdma pingpong` with the C binaries on a Linux
# kernel rxe: boots ../shared/rxe-vm's VM (Debian 12: kernel 6.1 rdma_rxe, rdma-core 44,
# perftest 4.5-0.17 = version 6.06), and for each test runs both pairings
#   C server in the guest  + softrdma client in the namespace
#   softrdma server        + C client in the guest
# checks both exit codes and that both sides printed a result line, prints a table and
# stops the VM. Needs root (network namespace) and a built tree (npm run build).
# Traffic stays on the namespace's link 10.77.0.0/24.
#
#   sudo scripts/interop/perftest.sh            # all tests
#   sudo scripts/interop/perftest.sh write_bw send_lat pingpong_rc   # some
#   RXE_VM=/path/to/rxe-vm KEEP_LOGS=1 ...      # keep per-run logs (printed at the end)
#
# Not part of npm test: CI machines have no VM.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VM=${RXE_VM:-/work/shared/rxe-vm}/vm.sh
CLI="node $ROOT/dist/src/cli/main.js"
HOST_IP=10.77.0.1 GUEST_IP=10.77.0.2
GID=1                      # the guest's RoCEv2 IPv4 GID (::ffff:10.77.0.2)
LOGS=$(mktemp -d /tmp/perftest-interop.XXXXXX)
export RXE_QUIET=1

ALL=(write_bw read_bw send_bw send_bw_default atomic_bw atomic_bw_cas write_lat read_lat send_lat atomic_lat atomic_lat_cas write_bw_q2
     send_bw_b pingpong_rc pingpong_ud pingpong_uc pingpong_rc_check pingpong_ud_default pingpong_srq pingpong_srq_q4
     write_bw_R read_bw_R send_bw_R atomic_bw_R write_lat_R send_lat_R)
TESTS=("${@:-${ALL[@]}}")

# The latency tests' -s: an atomic test's size is 8, and perftest refuses another.
declare -A SIZE_LAT=([atomic_lat]=8)
# Per test: the C binary, its arguments (-F: under TCG perftest's CPU clock estimate can fail its
# own r^2 check and refuse to report: "Can't produce a report"), softrdma's arguments (both sides get the same -s/-n:
# perftest does not exchange them). Small sizes and counts: the guest runs under TCG.
c_args() {
  case $1 in
    write_bw|read_bw|send_bw) echo "ib_$1 -d rxe0 -F -x $GID -s 4096 -n 200" ;;
    write_bw_q2) echo "ib_write_bw -d rxe0 -F -x $GID -s 4096 -n 100 -q 2" ;;
    send_bw_b) echo "ib_send_bw -d rxe0 -F -x $GID -s 4096 -n 100 -b" ;;
    # no -n on either side: the two defaults must agree (perftest's 1000 for send_bw)
    send_bw_default) echo "ib_send_bw -d rxe0 -F -x $GID -s 4096" ;;
    atomic_bw) echo "ib_atomic_bw -d rxe0 -F -x $GID -n 200" ;;
    atomic_bw_cas) echo "ib_atomic_bw -d rxe0 -F -x $GID -n 200 -A CMP_AND_SWAP" ;;
    write_lat|read_lat|send_lat|atomic_lat) echo "ib_$1 -d rxe0 -F -x $GID -s ${SIZE_LAT[$1]:-64} -n 200" ;;
    atomic_lat_cas) echo "ib_atomic_lat -d rxe0 -F -x $GID -n 200 -A CMP_AND_SWAP" ;;
    pingpong_rc) echo "ibv_rc_pingpong -d rxe0 -g $GID -n 50" ;;
    pingpong_ud) echo "ibv_ud_pingpong -d rxe0 -g $GID -s 512 -n 50" ;;
    pingpong_uc) echo "ibv_uc_pingpong -d rxe0 -g $GID -n 50" ;;
    # -c (check the data) with a message of three pages: rc_pingpong's page pattern
    pingpong_rc_check) echo "ibv_rc_pingpong -d rxe0 -g $GID -s 12288 -c -n 20" ;;
    # both sides' default size (ud_pingpong.c: 1024 in its code, whatever its --help says)
    pingpong_ud_default) echo "ibv_ud_pingpong -d rxe0 -g $GID -n 50" ;;
    # srq_pingpong: 16 RC QPs on one SRQ (its default), and 4 with small messages
    pingpong_srq) echo "ibv_srq_pingpong -d rxe0 -g $GID -n 200" ;;
    pingpong_srq_q4) echo "ibv_srq_pingpong -d rxe0 -g $GID -q 4 -s 64 -n 200" ;;
    # -R: the QPs connected by the rdma_cm, the exchange over an rdma_cm connection (no TCP)
    write_bw_R|read_bw_R|send_bw_R) echo "ib_${1%_R} -d rxe0 -F -R -s 4096 -n 200" ;;
    atomic_bw_R) echo "ib_atomic_bw -d rxe0 -F -R -n 200" ;;
    write_lat_R|send_lat_R) echo "ib_${1%_R} -d rxe0 -F -R -s 64 -n 200" ;;
  esac
}
s_args() {
  case $1 in
    write_bw|read_bw|send_bw) echo "perftest $1 --bind $HOST_IP -s 4096 -n 200 --timeout 60" ;;
    write_bw_q2) echo "perftest write_bw --bind $HOST_IP -s 4096 -n 100 -q 2 --timeout 60" ;;
    send_bw_b) echo "perftest send_bw --bind $HOST_IP -s 4096 -n 100 -b --timeout 60" ;;
    send_bw_default) echo "perftest send_bw --bind $HOST_IP -s 4096 --timeout 60" ;;
    atomic_bw) echo "perftest atomic_bw --bind $HOST_IP -n 200 --timeout 60" ;;
    atomic_bw_cas) echo "perftest atomic_bw --bind $HOST_IP -n 200 -A CMP_AND_SWAP --timeout 60" ;;
    write_lat|read_lat|send_lat|atomic_lat) echo "perftest $1 --bind $HOST_IP -s ${SIZE_LAT[$1]:-64} -n 200 --timeout 60" ;;
    atomic_lat_cas) echo "perftest atomic_lat --bind $HOST_IP -n 200 -A CMP_AND_SWAP --timeout 60" ;;
    pingpong_rc) echo "pingpong rc --bind $HOST_IP -n 50" ;;
    pingpong_ud) echo "pingpong ud --bind $HOST_IP -s 512 -n 50" ;;
    pingpong_uc) echo "pingpong uc --bind $HOST_IP -n 50" ;;
    pingpong_rc_check) echo "pingpong rc --bind $HOST_IP -s 12288 -c -n 20" ;;
    pingpong_ud_default) echo "pingpong ud --bind $HOST_IP -n 50" ;;
    pingpong_srq) echo "pingpong srq --bind $HOST_IP -n 200" ;;
    pingpong_srq_q4) echo "pingpong srq --bind $HOST_IP -q 4 -s 64 -n 200" ;;
    write_bw_R|read_bw_R|send_bw_R) echo "perftest ${1%_R} -R --bind $HOST_IP -s 4096 -n 200 --timeout 60" ;;
    atomic_bw_R) echo "perftest atomic_bw -R --bind $HOST_IP -n 200 --timeout 60" ;;
    write_lat_R|send_lat_R) echo "perftest ${1%_R} -R --bind $HOST_IP -s 64 -n 200 --timeout 60" ;;
  esac
}
# What a side prints when it has a result: a row of perftest's table, or pingpong's summary.
# perftest's read_lat and atomic_lat servers print no table, only their closing line of dashes.
result_re() {
  case $1 in
    pingpong_*) echo 'iters in [0-9.]+ seconds' ;;
    *_lat|*_lat_R|*_lat_cas) echo '^ *[0-9]+[[:space:]]+[0-9]+[[:space:]]+[0-9.]+[[:space:]]+[0-9.]+' ;;
    *) echo '^ *[0-9]+[[:space:]]+[0-9]+[[:space:]]+[0-9.]+[[:space:]]+[0-9.]+[[:space:]]+[0-9.]+' ;;
  esac
}
server_has_result() { case $1 in read_lat|atomic_lat|atomic_lat_cas) return 1 ;; esac; }

vm_exec() { RXE_EXEC_TIMEOUT=${2:-120} "$VM" exec "$1"; }

# Wait (bounded) until nobody else's VM runs: only one VM fits on the machine, and it is not ours to stop.
for _ in $(seq 60); do "$VM" status 2>/dev/null | grep -q '^VM running' || break; sleep 5; done
if "$VM" status 2>/dev/null | grep -q '^VM running'; then echo "another VM is still running after 5 minutes; not starting ours" >&2; exit 3; fi

[ -f "$ROOT/dist/src/cli/main.js" ] || { echo "build first: npm run build" >&2; exit 2; }
echo "booting the VM ..."
"$VM" serve 'true' >/dev/null || { echo "VM did not boot" >&2; exit 3; }
trap '"$VM" stop >/dev/null 2>&1' EXIT
guest_ver=$(vm_exec 'dpkg-query -W -f "\${Version}" perftest; echo " (ib_write_bw $(ib_write_bw -V 2>&1 | tr -d "\n"))"; uname -r' | tr '\n' ' ')
echo "guest: perftest $guest_ver"

declare -A RES
# C server in the guest, softrdma client in the namespace.
c_server() {
  local t=$1 log=$LOGS/$t.c-server
  vm_exec "rm -f /root/s.out /root/s.rc; (timeout 90 $(c_args "$t") > /root/s.out 2>&1; echo \$? > /root/s.rc) >/dev/null 2>&1 &" >/dev/null
  # Wait until its TCP port listens (the guest has ss), then run our client. With -R there is no
  # TCP port: wait for its rdma_cm listener (iproute2's rdma tool lists the cm_ids).
  local up=0 ready='ss -ltn | grep -q ":18515 "'
  case $t in *_R) ready='rdma res show cm_id | grep -q "LISTEN.*18515"' ;; esac
  for _ in $(seq 40); do vm_exec "$ready" >/dev/null && { up=1; break; }; sleep 0.5; done
  local crc=99
  if [ $up = 1 ]; then
    ip netns exec rxepeer timeout 120 $CLI $(s_args "$t") $GUEST_IP > "$log.softrdma" 2>&1; crc=$?
  else echo "C server never listened" > "$log.softrdma"; fi
  local src=""
  for _ in $(seq 120); do src=$(vm_exec 'cat /root/s.rc 2>/dev/null'); [ -n "$src" ] && break; sleep 1; done
  vm_exec 'cat /root/s.out' > "$log.c" 2>&1
  verdict "$t" "C server" "${src:-timeout}" "$log.c" "$crc" "$log.softrdma"
}
# softrdma server in the namespace, C client in the guest.
s_server() {
  local t=$1 log=$LOGS/$t.s-server
  ip netns exec rxepeer timeout 150 $CLI $(s_args "$t") > "$log.softrdma" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q 'Waiting for client\|listening' "$log.softrdma" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.2; done
  vm_exec "timeout 120 $(c_args "$t") $HOST_IP" 180 > "$log.c" 2>&1; local crc=$?
  wait $pid; local src=$?
  verdict "$t" "softrdma server" "$src" "$log.softrdma" "$crc" "$log.c"
}
# verdict TEST PAIRING SERVER_RC SERVER_LOG CLIENT_RC CLIENT_LOG
verdict() {
  local t=$1 pair=$2 re; re=$(result_re "$t")
  local ok=pass why=""
  [ "$3" = 0 ] || { ok=FAIL; why+=" server exit $3"; }
  [ "$5" = 0 ] || { ok=FAIL; why+=" client exit $5"; }
  grep -Eq "$re" "$6" || { ok=FAIL; why+=" no client result"; }
  if server_has_result "$t"; then grep -Eq "$re" "$4" || { ok=FAIL; why+=" no server result"; }; fi
  RES["$t|$pair"]="$ok$why"
  printf '%-12s %-16s %s\n' "$t" "$pair" "$ok$why"
  if [ "$ok" != pass ]; then echo "--- server ($4):"; tail -25 "$4"; echo "--- client ($6):"; tail -25 "$6"; fi
}

for t in "${TESTS[@]}"; do
  [ -n "$(c_args "$t")" ] || { echo "unknown test $t (known: ${ALL[*]})" >&2; exit 2; }
  c_server "$t"
  s_server "$t"
done

echo
echo "perftest/pingpong interop, $(date -u +%Y-%m-%dT%H:%MZ), guest perftest $guest_ver"
printf '| %-12s | %-44s | %-44s |\n' test "C server (guest) + softrdma client" "softrdma server + C client (guest)"
printf '|%s|%s|%s|\n' "--------------" "----------------------------------------------" "----------------------------------------------"
fails=0
for t in "${TESTS[@]}"; do
  a=${RES["$t|C server"]} b=${RES["$t|softrdma server"]}
  [ "${a%% *}" = pass ] || fails=$((fails + 1)); [ "${b%% *}" = pass ] || fails=$((fails + 1))
  printf '| %-12s | %-44s | %-44s |\n' "$t" "$a" "$b"
done
echo "commands: C side \`<binary> <args> [$HOST_IP]\` in the guest, softrdma side \`softrdma <args> [$GUEST_IP]\` in netns rxepeer:"
for t in "${TESTS[@]}"; do echo "  $t: $(c_args "$t")  |  softrdma $(s_args "$t")"; done
[ "${KEEP_LOGS:-0}" = 1 ] && echo "logs: $LOGS" || rm -rf "$LOGS"
exit $((fails > 0))
