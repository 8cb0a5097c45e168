#!/bin/bash
# What cgroups cost at spawn: `herd start` of N `sleep` apps, then poll `herd ps --json`
# until all run, once with `cgroups = true` and once with `cgroups = false`, side by side.
# Needs root (cgroups) and python3.  usage: bench/spawn-cgroups.sh [HERD_BIN] [N] [ROUNDS]
set -euo pipefail
H=$(realpath "${1:-target/release/herd}"); N=${2:-1000}; ROUNDS=${3:-2}
one() {
  local cg=$1 home; home=$(mktemp -d); chmod 700 "$home"
  echo "cgroups = $cg" > "$home/config.toml"
  export HERD_HOME=$home HERD_HTTP_LISTEN=
  "$H" up >/dev/null
  for i in $(seq 1 "$N"); do
    printf '[[app]]\nname = "s%d"\ncommand = "sleep"\nargs = ["100000"]\n' "$i"
  done > "$home/apps.toml"
  local t0 t1; t0=$(date +%s.%N)
  "$H" start "$home/apps.toml" >/dev/null
  until [ "$("$H" ps --json | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["status"] == "running" and r["pid"]))')" -ge "$N" ]; do
    sleep 0.01
  done
  t1=$(date +%s.%N)
  printf 'cgroups=%-5s %d apps running in %.2f s\n' "$cg" "$N" "$(echo "$t1 - $t0" | bc)"
  "$H" down >/dev/null
  rm -rf "$home"
}
for _ in $(seq 1 "$ROUNDS"); do one true; one false; done
