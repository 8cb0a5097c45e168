#!/bin/bash
# Daemon CPU with 50 apps whose exec probe (`true`) runs every 0.2 s: 250 probes a second. usage: bench/probes-cpu.sh HERD_BIN
set -euo pipefail
H=$(realpath "$1"); home=$(mktemp -d); chmod 700 "$home"
export HERD_HOME=$home HERD_HTTP_LISTEN=
"$H" up >/dev/null
for i in $(seq 50); do printf '[[app]]\nname = "p%d"\ncommand = "sleep"\nargs = ["100000"]\n[app.health]\nexec = ["true"]\ninterval_s = 0.2\n\n' $i; done > $home/apps.toml
"$H" start $home/apps.toml >/dev/null
sleep 3
pid=$("$H" ping --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["pid"])')
a=$(awk '{print $14+$15}' /proc/$pid/stat); sleep 20; b=$(awk '{print $14+$15}' /proc/$pid/stat)
echo "$1: daemon CPU $((b-a)) ticks in 20 s ($(( (b-a)*100/2000 )).$(( (b-a)*10000/2000 % 100 )) % of a core)"
"$H" down >/dev/null; rm -rf "$home"
