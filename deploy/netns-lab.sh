#!/usr/bin/env bash
# A multi-host lab on one machine: N network namespaces ("hosts"), each with its own IP on a
# bridge in the root namespace, so herd daemons can run as if on separate machines.
#
#   deploy/netns-lab.sh up N          create hosts 1..N (idempotent: safe to run again)
#   deploy/netns-lab.sh down          remove every host, the bridge and what ran inside
#   deploy/netns-lab.sh exec I CMD... run CMD inside host I (e.g. with HERD_HOME set)
#   deploy/netns-lab.sh status        what exists now
#
# Host i is namespace ${PREFIX}i with eth0 = ${SUBNET}.(10+i)/24; the bridge ${BRIDGE} holds
# ${SUBNET}.1 in the root namespace (run redis there). Needs root and iproute2; the chaos suite
# also needs nftables (apt-get install -y iproute2 nftables). The names can be changed with
# HERD_LAB_PREFIX, HERD_LAB_BRIDGE and HERD_LAB_SUBNET (the chaos suite uses its own, so it
# never touches a lab you made).
set -euo pipefail

PREFIX="${HERD_LAB_PREFIX:-herd-h}"
BRIDGE="${HERD_LAB_BRIDGE:-herdbr0}"
SUBNET="${HERD_LAB_SUBNET:-10.88.0}"

say() { echo "netns-lab: $*"; }
die() {
  echo "netns-lab: $*" >&2
  exit 1
}
run() {
  say "+ $*"
  "$@"
}

need_root_and_ip() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, bridges and veth pairs)"
  command -v ip >/dev/null 2>&1 || die "\`ip\` is missing; install it: apt-get install -y iproute2"
}

host_ip() { echo "${SUBNET}.$((10 + $1))"; }
veth_of() { echo "${BRIDGE}-$1"; } # root-side end of host i's cable (<= 15 chars)

# Our namespaces: exactly ${PREFIX}<number>.
lab_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" || true
}

up() {
  local n="$1"
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "up: N must be 1..200, got \`$n\`"
  need_root_and_ip
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    run ip link add "$BRIDGE" type bridge
  else
    say "bridge $BRIDGE exists"
  fi
  if ! ip -4 addr show dev "$BRIDGE" | grep -q "inet ${SUBNET}.1/24"; then
    run ip addr add "${SUBNET}.1/24" dev "$BRIDGE"
  fi
  run ip link set "$BRIDGE" up
  for i in $(seq 1 "$n"); do
    local ns="${PREFIX}${i}" veth ip
    veth="$(veth_of "$i")"
    ip="$(host_ip "$i")"
    if ! ip netns list | awk '{print $1}' | grep -qx "$ns"; then
      run ip netns add "$ns"
    fi
    if ! ip link show "$veth" >/dev/null 2>&1; then
      # A half-made host (eth0 left behind without its peer) is rebuilt from scratch.
      ip -n "$ns" link del eth0 >/dev/null 2>&1 || true
      run ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    run ip link set "$veth" master "$BRIDGE"
    run ip link set "$veth" up
    if ! ip -n "$ns" -4 addr show dev eth0 | grep -q "inet ${ip}/24"; then
      run ip -n "$ns" addr add "${ip}/24" dev eth0
    fi
    run ip -n "$ns" link set lo up
    run ip -n "$ns" link set eth0 up
  done
  # With br_netfilter loaded, bridged packets cross the root iptables FORWARD chain.
  if [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0)" = 1 ] &&
    command -v iptables >/dev/null 2>&1 &&
    iptables -S FORWARD 2>/dev/null | grep -q -- '-P FORWARD DROP'; then
    say "warning: the root FORWARD policy is DROP and bridged traffic passes iptables;"
    say "         hosts may not reach each other (allow it: iptables -I FORWARD -i $BRIDGE -o $BRIDGE -j ACCEPT)"
  fi
  say "up: $n hosts on $BRIDGE (${SUBNET}.1/24): $(for i in $(seq 1 "$n"); do printf '%s=%s ' "${PREFIX}${i}" "$(host_ip "$i")"; done)"
}

down() {
  need_root_and_ip
  local ns pids
  for ns in $(lab_namespaces); do
    # Deleting a namespace does not stop what runs in it; stop those processes first.
    pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)"
    if [ -n "${pids// /}" ]; then
      say "+ kill -9 $pids (processes in $ns)"
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
    fi
    run ip netns del "$ns"
  done
  # Root-side veth ends vanish with their namespace (asynchronously); remove any orphan.
  local link
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^${BRIDGE}-[0-9]+$" || true); do
    if ip link show "$link" >/dev/null 2>&1; then
      say "+ ip link del $link"
      ip link del "$link" 2>/dev/null || true
    fi
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    run ip link del "$BRIDGE"
  fi
  say "down: no ${PREFIX}* namespaces and no $BRIDGE left"
}

exec_in() {
  [ $# -ge 2 ] || die "usage: $0 exec I CMD..."
  local i="$1"
  shift
  [[ "$i" =~ ^[0-9]+$ ]] || die "exec: I must be a host number, got \`$i\`"
  need_root_and_ip
  ip netns list | awk '{print $1}' | grep -qx "${PREFIX}${i}" ||
    die "exec: host ${PREFIX}${i} does not exist; run \`$0 up N\` first"
  exec ip netns exec "${PREFIX}${i}" "$@"
}

status() {
  need_root_and_ip
  local ns
  ip -br addr show dev "$BRIDGE" 2>/dev/null || say "no bridge $BRIDGE"
  for ns in $(lab_namespaces); do
    echo "$ns: $(ip -n "$ns" -br -4 addr show dev eth0 2>/dev/null | awk '{print $3}')"
  done
}

case "${1:-}" in
up)
  [ $# -eq 2 ] || die "usage: $0 up N"
  up "$2"
  ;;
down) down ;;
exec)
  shift
  exec_in "$@"
  ;;
status) status ;;
*)
  echo "usage: $0 up N | down | exec I CMD... | status" >&2
  exit 2
  ;;
esac
