#!/usr/bin/env bash
# Runs one command for as long as this script's standard input stays open,
# then stops it by PID. The test harness holds the other end of that pipe, so
# every process it started stops when the harness exits, even after a panic
# or a kill. Optionally removes a directory once the command has stopped.
#
#   supervise.sh [--remove-after DIR] -- COMMAND [ARGS...]
set -u

remove_after=""
if [ "${1:-}" = "--remove-after" ]; then
  remove_after=$2
  shift 2
fi
[ "${1:-}" = "--" ] && shift

"$@" </dev/null &
child=$!

stop() {
  kill -TERM "$child" 2>/dev/null
  for _ in $(seq 50); do
    kill -0 "$child" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  [ -n "$remove_after" ] && rm -rf "$remove_after"
  exit 0
}
trap stop TERM INT

# Returns when the harness closes the pipe or the child exits on its own.
while kill -0 "$child" 2>/dev/null; do
  if read -r -t 1 _; then :; elif [ $? -le 128 ]; then break; fi
done
stop
