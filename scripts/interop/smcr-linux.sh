#!/usr/bin/env bash
# SMC-R between softrdma/smc (in the namespace) and Linux 6.1's own SMC (AF_SMC in the rxe VM of
# ../shared/rxe-vm, Debian 12's 6.1 kernel, rdma_rxe), both directions:
#   Linux AF_SMC echo server in the guest  + softrdma client: one echo of MIB MiB, then MORE more
#                                            connections in the same link group (2 at once at the end)
#   softrdma echo server in the namespace  + Linux AF_SMC client: CONNS connections of MIB MiB
# Each passes when the data comes back byte for byte, softrdma reports mode SMCR for every
# connection (not a TCP fallback), both sides close cleanly, and one link group carried them all.
# The last row passes when softrdma answered Linux's DELETE_RKEYs (Linux sends one when it frees a
# confirmed RMB, smcr_buf_unuse) and CONFIRM_RKEYs positively, as Linux would: none of its
# answers in the capture has the RKEY_NEG flag and its link groups counted no negative answer.
# Linux's side is scripts/interop/smc-linux-peer.c (static, dropped into the guest), softrdma's
# scripts/interop/smcr-linux-peer.mjs. See docs/smc.md, "Against Linux 6.1's SMC-R".
#
# What it needs to set up, and why (details in docs/smc.md):
#  - a variant of the shared harness, never the shared one: /work/shared/rxe-vm is copied to a temp
#    dir with `smc smc_diag` added to GUEST_MODS, and its artifacts to $ART (default
#    /var/tmp/rxe-harness-smc; kernel/, debs/, rootfs/ as hard links of /var/tmp/rxe-harness, so
#    no debootstrap and no network), the helper binaries put into $ART/rootfs, then
#    build.sh --repack.
#  - in the guest: a user EID SOFTRDMA-SMCR (SMC-Rv2 needs a common EID) and a PNET ID joining
#    eth0 and rxe0 port 1 (Linux 6.1 finds no RoCE device for rxe without one).
#  - RXE_FIX=1 (default): loads rxe_cur_qp_state.ko in the guest (scripts/interop/rxe-cur-qp-state/,
#    built against Debian's linux-headers for the VM's kernel ($SRC_ART/KVER, e.g. 6.1.0-57-amd64)
#    when KHDR names them (default /tmp/kh/root/usr/src/linux-headers-$KVER), else taken from
#    $ART): without it Linux 6.1's SMC cannot send anything on an rxe QP (rxe_query_qp leaves
#    cur_qp_state at RESET, smc_link_sendable() says no): the first CONFIRM_LINK fails with
#    -ENOLINK and SMC-R never starts; and its receive CQ never fires. RXE_FIX=0 shows that (FAIL).
#    The module is kept as $ART/rxe_cur_qp_state.ko once built. To build it on a fresh host:
#      K=$(cat /var/tmp/rxe-harness/KVER); mkdir -p /tmp/kh && cd /tmp/kh && apt-get download \
#        linux-headers-$K linux-headers-${K%-amd64}-common linux-kbuild-6.1 && for d in *.deb; do dpkg-deb -x $d root; done
#      sed -i 's#include /usr/src/#include /tmp/kh/root/usr/src/#' root/usr/src/linux-headers-$K/Makefile
#    (Debian's archive keeps only its newest 6.1 ABI: build.sh takes that kernel, and the headers
#    and linux-kbuild-6.1 must be the same version.)
#  - on the host: the SMC TCP option in softrdma's SYN / SYN-ACK: each softrdma process runs
#    under `softrdma smc-tcp-option run` (src/sys/smc-tcp-option.ts: a sock_ops BPF program on a
#    fresh cgroup v2 child of $CGROUP_PARENT that only that process is in, removed when it exits).
#    Linux goes SMC only when the peer's SYN (SYN-ACK) carries it; node:net cannot send it. The
#    capture row checks that every SYN and SYN-ACK from 10.77.0.1 carried it.
#
#   sudo scripts/interop/smcr-linux.sh
#   sudo MIB=4 MORE=3 CONNS=3 scripts/interop/smcr-linux.sh
#   sudo RXE_FIX=0 TIMEOUT=40 MIB=1 scripts/interop/smcr-linux.sh   # stock 6.1 rxe: both FAIL
#   KEEP_LOGS=1 ... (logs and the pcap are kept and their directory printed)
#
# Not part of npm test: CI machines have no VM. Traffic stays on the namespace's tap0.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/scripts/interop
SHARED=${RXE_VM:-/work/shared/rxe-vm}
SRC_ART=${SRC_ART:-/var/tmp/rxe-harness}
export RXE_ART=${ART:-/var/tmp/rxe-harness-smc}
export RXE_QUIET=1
MIB=${MIB:-16}
MORE=${MORE:-3}
CONNS=${CONNS:-3}
RXE_FIX=${RXE_FIX:-1}
TIMEOUT=${TIMEOUT:-300}   # per softrdma process and Linux run (s)
KVER=$(cat "$SRC_ART/KVER" 2>/dev/null || echo unknown)
KHDR=${KHDR:-/tmp/kh/root/usr/src/linux-headers-$KVER}
CGROUP_PARENT=${CGROUP_PARENT:-$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)}
CLI=$ROOT/dist/src/cli/main.js
LOGS=$(mktemp -d /tmp/smcr-linux.XXXXXX)
PORT=7400

skip() { echo "SKIPPED: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespace, qemu, BPF, cgroup)"
[ -x "$SHARED/vm.sh" ] || skip "no VM harness at $SHARED"
[ -f "$SRC_ART/vmlinuz" ] && [ -d "$SRC_ART/rootfs" ] || skip "the shared VM is not built ($SHARED/build.sh)"
[ -f "$ROOT/dist/src/smc/index.js" ] && [ -f "$CLI" ] || { echo "build first: npx tsc -p tsconfig.json" >&2; exit 2; }
[ -n "$CGROUP_PARENT" ] && [ -d "$CGROUP_PARENT" ] || skip "no cgroup v2 mount (CGROUP_PARENT)"
node "$CLI" smc-tcp-option run --cgroup "$CGROUP_PARENT" -- true || { echo "softrdma smc-tcp-option run cannot attach the SMC TCP option program here (above)" >&2; exit 2; }

# ------------------------------------------------------------------ the variant harness
H=$(mktemp -d /tmp/rxe-vm-smc.XXXXXX)
cp -a "$SHARED"/. "$H"/
sed -i 's/^GUEST_MODS="\(.*\)"$/GUEST_MODS="\1 smc smc_diag"/' "$H/build.sh"
grep -q '^GUEST_MODS=.* smc smc_diag"$' "$H/build.sh" || { echo "could not add smc to GUEST_MODS" >&2; exit 2; }
VM=$H/vm.sh
mkdir -p "$RXE_ART"
for d in kernel debs rootfs; do [ -e "$RXE_ART/$d" ] || cp -al "$SRC_ART/$d" "$RXE_ART/$d"; done
for f in vmlinuz vmlinux KVER accel; do [ -e "$SRC_ART/$f" ] && cp -a "$SRC_ART/$f" "$RXE_ART/$f"; done

gcc -static -O2 -Wall -o "$LOGS/smc-linux-peer" "$HERE/smc-linux-peer.c" 2>"$LOGS/gcc.log" || { cat "$LOGS/gcc.log"; exit 2; }
# new files only (never write through a hard link into the shared tree)
rm -f "$RXE_ART/rootfs/usr/local/bin/smc-linux-peer"
install -D -m 0755 "$LOGS/smc-linux-peer" "$RXE_ART/rootfs/usr/local/bin/smc-linux-peer"
KO=$RXE_ART/rxe_cur_qp_state.ko
if [ -f "$KHDR/Makefile" ]; then
  mkdir -p "$LOGS/kmod" && cp "$HERE/rxe-cur-qp-state/"{rxe_cur_qp_state.c,Makefile} "$LOGS/kmod/"
  make -s -C "$KHDR" M="$LOGS/kmod" modules >"$LOGS/kmod.log" 2>&1 && cp "$LOGS/kmod/rxe_cur_qp_state.ko" "$KO"
fi
# A module kept from another kernel (the archive moved on, build.sh took the new one) would not load.
if [ -f "$KO" ] && ! modinfo -F vermagic "$KO" 2>/dev/null | grep -q "^$KVER "; then rm -f "$KO"; fi
rm -f "$RXE_ART/rootfs/usr/local/lib/rxe_cur_qp_state.ko"
[ -f "$KO" ] && install -D -m 0644 "$KO" "$RXE_ART/rootfs/usr/local/lib/rxe_cur_qp_state.ko"
if [ "$RXE_FIX" = 1 ] && [ ! -f "$KO" ]; then skip "RXE_FIX=1 but no rxe_cur_qp_state.ko for $KVER (set KHDR to Debian's linux-headers-$KVER: see the head of this script)"; fi
"$H/build.sh" --repack >"$LOGS/build.log" 2>&1 || { tail "$LOGS/build.log"; exit 2; }

for _ in $(seq 60); do "$VM" status 2>/dev/null | grep -q '^VM running' || break; sleep 5; done
RXE_ART=$SRC_ART "$VM" status 2>/dev/null | grep -q '^VM running' && skip "the shared harness's VM is running"

vm_exec() { RXE_EXEC_TIMEOUT=${2:-120} "$VM" exec "$1"; }
GUEST_SETUP="modprobe smc && modprobe smc_diag && smc-linux-peer ueid-add SOFTRDMA-SMCR >/dev/null && smc-linux-peer pnet-add SOFTRDMA eth0 rxe0 1 >/dev/null"
[ "$RXE_FIX" = 1 ] && GUEST_SETUP="insmod /usr/local/lib/rxe_cur_qp_state.ko && $GUEST_SETUP"

boot() {
  "$VM" stop >/dev/null 2>&1
  "$VM" serve true >/dev/null || { echo "VM did not boot" >&2; exit 3; }
  vm_exec "$GUEST_SETUP" || { echo "guest SMC setup failed" >&2; exit 3; }
}
cleanup() {
  [ -n "${CAP_PID:-}" ] && kill "$CAP_PID" 2>/dev/null
  "$VM" stop >/dev/null 2>&1
  rm -rf "$H"
}
trap cleanup EXIT

echo "booting the VM ..."
boot
GUEST=$(vm_exec 'echo "kernel $(uname -r) (Debian $(cat /proc/version | grep -o "Debian [0-9][^ ]*" | tail -1 | cut -d" " -f2))"' | tr -d '\r')
echo "guest: $GUEST; RXE_FIX=$RXE_FIX"

CAP=$LOGS/smcr-linux.pcap
ip netns exec rxepeer tcpdump -i tap0 -w "$CAP" -U 'udp port 4791 or tcp portrange 7400-7420' >/dev/null 2>&1 &
CAP_PID=$!
for _ in $(seq 50); do [ -s "$CAP" ] && break; sleep 0.1; done

declare -A RES
ORDER=()
row() { RES[$1]=$2; ORDER+=("$1"); printf '%-52s %s\n' "$1" "$2"; }
node_peer() { SOFTRDMA_SMC_LEARN=0 node "$CLI" smc-tcp-option run --cgroup "$CGROUP_PARENT" -- ip netns exec rxepeer timeout "$1" node "$HERE/smcr-linux-peer.mjs" "${@:2}"; }
lastjson() { grep '^{"done"' "$1" | tail -1; }

# 1. Linux server, softrdma client
t_linux_server() {
  local p=$PORT n=$((MORE + 1)) log=$LOGS/linux-server
  vm_exec "rm -f /root/s.out; (timeout $TIMEOUT smc-linux-peer server $p $n > /root/s.out 2>&1; echo rc=\$? >> /root/s.out) >/dev/null 2>&1 &" >/dev/null
  for _ in $(seq 50); do vm_exec 'grep -q listening /root/s.out' >/dev/null && break; sleep 0.2; done
  node_peer "$TIMEOUT" client --bind 10.77.0.1 --peer 10.77.0.2 --port $p --mib "$MIB" --more "$MORE" > "$log.softrdma" 2>&1; local crc=$?
  local src=""
  for _ in $(seq 30); do src=$(vm_exec 'grep -o "^rc=[0-9]*" /root/s.out' | cut -d= -f2); [ -n "$src" ] && break; sleep 1; done
  vm_exec 'cat /root/s.out' > "$log.linux" 2>&1
  local ok=pass why="" d; d=$(lastjson "$log.softrdma")
  [ "$crc" = 0 ] || { ok=FAIL; why+=" softrdma exit $crc"; }
  [ "$src" = 0 ] || { ok=FAIL; why+=" linux server exit ${src:-none}"; }
  [ "$(grep -c '"mode":"SMCR"' "$log.softrdma")" -ge "$n" ] || { ok=FAIL; why+=" not all SMCR"; }
  [ "$(grep -c 'server conn .* echoed' "$log.linux")" = "$n" ] || { ok=FAIL; why+=" linux echoed $(grep -c 'echoed' "$log.linux")/$n"; }
  grep -q 'close=-1' "$log.linux" && { ok=FAIL; why+=" linux close error"; }
  row "Linux AF_SMC server + softrdma client" "$ok$why ($(grep -c '"same":true' "$log.softrdma")/$n echoes byte-exact; $(echo "$d" | grep -o '"linkGroups":[0-9]*'))"
  [ "$ok" = pass ] || { echo "--- softrdma:"; tail -8 "$log.softrdma"; echo "--- linux:"; tail -8 "$log.linux"; }
}

# 2. softrdma server, Linux client
t_softrdma_server() {
  local p=$((PORT + 1)) log=$LOGS/softrdma-server
  node_peer "$TIMEOUT" server --bind 10.77.0.1 --port $p --count "$CONNS" > "$log.softrdma" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q '^{"listening"' "$log.softrdma" 2>/dev/null && break; sleep 0.1; done
  vm_exec "timeout $TIMEOUT smc-linux-peer client 10.77.0.1 $p $((MIB << 20)) $CONNS 1; echo rc=\$?" $((TIMEOUT + 60)) > "$log.linux" 2>&1
  local crc; crc=$(grep -o '^rc=[0-9]*' "$log.linux" | cut -d= -f2)
  wait $pid; local src=$?
  local ok=pass why="" d; d=$(lastjson "$log.softrdma")
  [ "$src" = 0 ] || { ok=FAIL; why+=" softrdma exit $src"; }
  [ "$crc" = 0 ] || { ok=FAIL; why+=" linux client exit ${crc:-none}"; }
  [ "$(grep -c 'echo verified' "$log.linux")" = "$CONNS" ] || { ok=FAIL; why+=" linux verified $(grep -c 'echo verified' "$log.linux")/$CONNS"; }
  [ "$(grep -c '"mode":"SMCR"' "$log.softrdma")" -ge "$CONNS" ] || { ok=FAIL; why+=" not all SMCR"; }
  local groups; groups=$(grep '"server":"conn"' "$log.softrdma" | grep -o '"lgrs":\[[^]]*\]' | sort -u | wc -l)
  row "softrdma server + Linux AF_SMC client" "$ok$why ($(grep -c 'echo verified' "$log.linux")/$CONNS echoes verified by Linux; Linux diag: $(grep -o 'mode=[A-Z]*' "$log.linux" | sort | uniq -c | tr -s ' ' | tr '\n' ' '))"
  [ "$ok" = pass ] || { echo "--- softrdma:"; tail -8 "$log.softrdma"; echo "--- linux:"; tail -8 "$log.linux"; }
}

t_linux_server
vm_exec 'dmesg | grep -i smc | tail -5' > "$LOGS/dmesg.1" 2>&1
boot   # a fresh guest: a failed Linux handshake can leave smc_server_lgr_pending held
t_softrdma_server
vm_exec 'dmesg | grep -i smc | tail -5' > "$LOGS/dmesg.2" 2>&1

sleep 0.5; kill "$CAP_PID" 2>/dev/null; wait "$CAP_PID" 2>/dev/null; CAP_PID=""
# tshark's RPC-over-RDMA heuristic claims SMC-R's 44-byte LLC SENDs (Linux's as much as ours) and
# then calls them malformed: it is disabled, so the SMC-R dissector gets them.
TS="tshark --disable-protocol rpcordma"
roce=$($TS -r "$CAP" -Y 'udp.dstport == 4791' 2>/dev/null | wc -l)
bad=$($TS -r "$CAP" -Y '_ws.malformed || _ws.expert.severity == error' 2>/dev/null | wc -l)
cdc=$($TS -r "$CAP" -Y smc 2>/dev/null | grep -c 'CDC Message')
clc=$($TS -r "$CAP" -Y 'smc && tcp' 2>/dev/null | grep -o '\[SMC[^]]*\]' | sort | uniq -c | awk '{printf "%s×%s ", $2, $1}')
# LLC messages (tshark does not decode SMC-Rv2 LLC): RC SEND-only frames of 102 or 146 bytes, the
# type is the first payload byte (Ethernet 14 + IPv4 20 + UDP 8 + BTH 12 = offset 54), the flags
# its fourth (RESP 0x80; on CONFIRM_RKEY / DELETE_RKEY, RKEY_NEG 0x20: "-neg"). A second line:
# softrdma's DELETE_RKEY responses, and its negative CONFIRM_RKEY / DELETE_RKEY responses.
{ read -r llc; read -r delresp negresp; } < <(node -e '
const b = require("fs").readFileSync(process.argv[1]); const names = {1:"CONFIRM_LINK",2:"ADD_LINK",4:"DELETE_LINK",5:"REQ_ADD_LINK",6:"CONFIRM_RKEY",7:"TEST_LINK",9:"DELETE_RKEY"};
const n = {}; let o = 24, del = 0, neg = 0;
while (o + 16 <= b.length) { const len = b.readUInt32LE(o + 8); const f = b.subarray(o + 16, o + 16 + len); o += 16 + len;
  if (f.length < 58 || f.readUInt16BE(12) !== 0x0800 || f[23] !== 17 || f.readUInt16BE(36) !== 4791 || f[42] !== 4) continue;
  const t = f[54]; if (t === 0xfe) continue; const who = f[29] === 2 ? "linux" : "softrdma";
  const resp = (f[57] & 0x80) !== 0, rkeyNeg = resp && ((t & 15) === 6 || (t & 15) === 9) && (f[57] & 0x20) !== 0;
  if (who === "softrdma" && resp && (t & 15) === 9) del++;
  if (who === "softrdma" && rkeyNeg) neg++;
  const k = `${who}:${names[t & 15] ?? t.toString(16)}${resp ? "-resp" : ""}${rkeyNeg ? "-neg" : ""}`; n[k] = (n[k] ?? 0) + 1; }
console.log(Object.entries(n).sort().map(([k, v]) => `${k}×${v}`).join(" "));
console.log(del, neg);' "$CAP")
# softrdma's SYNs (client) and SYN-ACKs (server): each must carry the SMC TCP option.
syns=$($TS -r "$CAP" -Y 'tcp.flags.syn == 1 && ip.src == 10.77.0.1' 2>/dev/null | wc -l)
smcopt=$($TS -r "$CAP" -Y 'tcp.flags.syn == 1 && ip.src == 10.77.0.1' -T fields -e tcp.options.experimental.exid -e tcp.options.experimental.data 2>/dev/null | grep -c '0xe2d4.c3d9')
if [ "$roce" -gt 0 ] && [ "$bad" = 0 ] && [ "$cdc" -gt 0 ] && [ "$syns" -gt 0 ] && [ "$smcopt" = "$syns" ]; then cap=pass; else cap=FAIL; fi
row "capture (tshark)" "$cap ($roce RoCEv2 packets, $bad malformed or in error, $cdc CDC decoded; softrdma SYN/SYN-ACK with the SMC TCP option: $smcopt/$syns; CLC: $clc; LLC: $llc)"
# softrdma's answers to Linux's rkey requests: positive on the wire, and no negative one counted
# by its link groups (lgr.rx.rkeyNegative, in the softrdma processes' last lines).
swneg=$(for f in "$LOGS/linux-server.softrdma" "$LOGS/softrdma-server.softrdma"; do lastjson "$f" | grep -o '"rkeyNegative":[0-9]*' | cut -d: -f2; done | awk '{ s += $1 } END { print s + 0 }')
if [ "${delresp:-0}" -gt 0 ] && [ "${negresp:-1}" = 0 ] && [ "$swneg" = 0 ]; then rk=pass; else rk=FAIL; fi
row "rkey answers (softrdma to Linux)" "$rk (DELETE_RKEY responses: ${delresp:-0}; negative CONFIRM_RKEY/DELETE_RKEY responses on the wire: ${negresp:-?}; rkeyNegative in softrdma: $swneg)"

echo
echo "SMC-R softrdma <-> Linux $GUEST, $(date -u +%Y-%m-%dT%H:%MZ), MIB=$MIB MORE=$MORE CONNS=$CONNS RXE_FIX=$RXE_FIX"
fails=0
for k in "${ORDER[@]}"; do
  printf '| %-40s | %s |\n' "$k" "${RES[$k]}"
  [ "${RES[$k]%% *}" = pass ] || fails=$((fails + 1))
done
if [ "${KEEP_LOGS:-0}" = 1 ]; then echo "logs: $LOGS"; else rm -rf "$LOGS"; fi
exit $((fails > 0))
