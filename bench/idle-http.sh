#!/bin/bash
# Idle daemon cost with the HTTP server (dashboard) on vs off, 100 sleep apps each, side by side.
# Usage: cargo build --release -p herd && bench/idle-http.sh [HERD_BINARY] [SECONDS]
set -e
mkdir -p ${TMPDIR:-/tmp}/herd-idle
B=${1:-target/release/herd}; SECS=${2:-60}
rm -rf ${TMPDIR:-/tmp}/herd-idle/on ${TMPDIR:-/tmp}/herd-idle/off; mkdir -p ${TMPDIR:-/tmp}/herd-idle/on ${TMPDIR:-/tmp}/herd-idle/off
app=${TMPDIR:-/tmp}/herd-idle/apps.toml
printf '[[app]]\nname = "s"\ncommand = "sleep"\nargs = ["100000"]\ninstances = 100\n' > $app
HERD_HOME=${TMPDIR:-/tmp}/herd-idle/on HERD_HTTP_LISTEN=127.0.0.1:19911 $B up >/dev/null
HERD_HOME=${TMPDIR:-/tmp}/herd-idle/off HERD_HTTP_LISTEN= $B up >/dev/null
for m in on off; do HERD_HOME=${TMPDIR:-/tmp}/herd-idle/$m HERD_HTTP_LISTEN= $B start $app >/dev/null; done
sleep 10
declare -A t0
for m in on off; do p=$(HERD_HOME=${TMPDIR:-/tmp}/herd-idle/$m $B ping --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["pid"])'); echo $p > ${TMPDIR:-/tmp}/herd-idle/$m.pid; t0[$m]=$(awk '{print $14+$15}' /proc/$p/stat); done
sleep $SECS
tck=$(getconf CLK_TCK)
for m in on off; do p=$(cat ${TMPDIR:-/tmp}/herd-idle/$m.pid); t1=$(awk '{print $14+$15}' /proc/$p/stat); rss=$(awk '/VmRSS/{print $2}' /proc/$p/status)
  python3 -c "print('http $m: cpu %.3f %% of a core over $SECS s, RSS %.1f MiB' % (($t1-${t0[$m]})/$tck/$SECS*100, $rss/1024))"; done
for m in on off; do HERD_HOME=${TMPDIR:-/tmp}/herd-idle/$m $B down >/dev/null; done
