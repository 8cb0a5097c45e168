#!/bin/bash
# Idle memory of cluster daemons: 3 voters + 1 pinned agent on 127.0.0.11-14 (static seeds,
# no Redis), idle SECONDS, then VmRSS / RssAnon / threads of each daemon.
# Usage: cargo build --release -p herd --bin herd && bench/idle-agent.sh [HERD_BINARY] [SECONDS]
# KEEP=1 leaves the daemons running (stop them with `HERD_HOME=$DIR/nN herd down`).
set -e
B=$(realpath "${1:-target/release/herd}"); SECS=${2:-60}
D=${TMPDIR:-/tmp}/herd-idle-agent
for n in 1 2 3 4; do [ -d $D/n$n ] && HERD_HOME=$D/n$n HERD_HTTP_LISTEN= $B down >/dev/null 2>&1 || true; done
rm -rf $D; mkdir -p $D
printf 's3cret' > $D/cluster.key; chmod 600 $D/cluster.key
port=$((19700 + RANDOM % 200))
seeds="127.0.0.11:$port,127.0.0.12:$port,127.0.0.13:$port"
for n in 1 2 3 4; do
  mkdir -p $D/n$n; addr=127.0.0.1$n:$port
  role=""; [ $n = 4 ] && role='role = "agent"'
  printf '[cluster]\nenabled = true\nname = "idle"\nadvertise = "%s"\nlisten = "%s"\ndiscovery = "static:%s"\nvoters = 3\nsecret_file = "%s"\n%s\n' \
    $addr $addr $seeds $D/cluster.key "$role" > $D/n$n/config.toml
done
for n in 1 2 3 4; do HERD_HOME=$D/n$n HERD_HTTP_LISTEN= $B up >/dev/null & done; wait
# Formed: the agent names a leader.
for _ in $(seq 120); do
  HERD_HOME=$D/n4 HERD_HTTP_LISTEN= $B cluster status --json 2>/dev/null | grep -q '"leader_id": *[0-9]' && break; sleep 1
done
sleep $SECS
for n in 1 2 3 4; do
  p=$(HERD_HOME=$D/n$n HERD_HTTP_LISTEN= $B ping --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["pid"])')
  echo $p > $D/n$n.pid
  what=voter; [ $n = 4 ] && what=agent
  awk -v w="$what n$n pid $p" '/^VmRSS/{r=$2} /^RssAnon/{a=$2} /^Threads/{t=$2} END{printf "%s: VmRSS %.1f MiB, RssAnon %.1f MiB, %d threads\n", w, r/1024, a/1024, t}' /proc/$p/status
done
[ -n "$KEEP" ] && { echo "left running under $D"; exit 0; }
for n in 4 1 2 3; do HERD_HOME=$D/n$n HERD_HTTP_LISTEN= $B down >/dev/null 2>&1 || true; done
