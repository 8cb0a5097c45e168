#!/bin/bash
# What a lone restart costs: one daemon, one app (`restart = "always"`, no backoff), killed
# with SIGKILL every 0.2 s, 20 times, the machine otherwise quiet between kills; the
# daemon's own log gives exit -> started. usage: bench/restart-idle.sh HERD_BIN
set -euo pipefail
H=$(realpath "${1:-target/release/herd}"); home=$(mktemp -d); chmod 700 "$home"
export HERD_HOME=$home HERD_HTTP_LISTEN=
$H up >/dev/null 2>&1; sleep 0.5
printf '[[app]]\nname = "r"\ncommand = "sleep"\nargs = ["100000"]\nrestart = "always"\nbackoff_initial_ms = 0\nmax_restarts = 4294967295\n' > $home/r.toml
$H start $home/r.toml >/dev/null; sleep 0.5
for i in $(seq 20); do pid=$($H ps --json | python3 -c 'import json,sys;print([r["pid"] for r in json.load(sys.stdin) if r["name"]=="r"][0])'); kill -9 $pid; sleep 0.2; done
$H down >/dev/null
python3 - $home/daemon.log <<'PY'
import sys,datetime,statistics
ex=None; d=[]
for l in open(sys.argv[1]):
    if 'app="r"' not in l: continue
    t=datetime.datetime.fromisoformat(l[:26])
    if ' exited ' in l: ex=t
    elif ' started ' in l and ex: d.append((t-ex).total_seconds()*1000); ex=None
print(len(d),"lone restarts, exit -> started: median %.2f ms, max %.2f ms"%(statistics.median(d),max(d)))
PY
rm -rf $home
