#!/usr/bin/env bash
# Starts or stops the three local controllers of `make cluster` (ports
# 9091-9093 from config/services.json). Start refuses while any controller
# it started is still running: a second start would truncate the running
# controllers' logs and overwrite their pid files, and stop would then
# orphan them.
#
#   scripts/cluster.sh start|stop|status
#
# BIN (default bin), LOGS (default logs), DATA (default data/cluster),
# SERVICES (default config/services.json) and IDS (default "1 2 3") may be
# set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${BIN:-bin}
logs=${LOGS:-logs}
data=${DATA:-data/cluster}
services=${SERVICES:-config/services.json}
ids=${IDS:-1 2 3}

# running_pid prints the pid of controller id if its pid file names a live
# dmqd process (its command is dmqd, whatever else names dmqd).
running_pid() {
  pidfile="$logs/dmqd-$1.pid"
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  command=$(ps -o comm= -p "$pid" 2>/dev/null || true)
  if [ "$command" = "dmqd" ]; then
    echo "$pid"
  fi
}

# running prints the ids whose pid file names a live dmqd process.
running() {
  for id in $ids; do
    if [ -n "$(running_pid "$id")" ]; then
      echo "$id"
    fi
  done
}

case "${1:-}" in
start)
  live=$(running | tr '\n' ' ')
  if [ -n "$live" ]; then
    echo "a cluster is already running (controllers ${live% }: pid files in $logs/); stop it first with: make cluster-stop" >&2
    exit 1
  fi
  mkdir -p "$logs" "$data"
  for id in $ids; do
    "$bin/dmqd" --id "$id" --services.config-path "$services" --metadata.data-dir "$data/node-$id" \
      >"$logs/dmqd-$id.log" 2>&1 &
    echo $! >"$logs/dmqd-$id.pid"
    echo "controller $id: pid $!, log $logs/dmqd-$id.log"
  done
  echo "stop with: make cluster-stop"
  ;;
stop)
  for id in $ids; do
    pidfile="$logs/dmqd-$id.pid"
    [ -f "$pidfile" ] || continue
    if [ -n "$(running_pid "$id")" ]; then # not a pid reused by another process
      kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  ;;
status)
  running
  ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
