# shellcheck shell=bash disable=SC2034 # STOP_RC and PIDS are read by the sourcing script
# Shell helpers shared by scripts/bench.sh and scripts/bench-load.sh (sourced). The
# sourcing script defines log() and the PIDS array of the processes it started.

# stop_pid PID [LIMIT]: SIGTERM, then SIGKILL after LIMIT s (default 20); the exit status
# in STOP_RC. Not in a $(…) subshell: only this shell can wait for its children.
STOP_RC=0
stop_pid() {
  local pid=$1 limit=${2:-20} i keep=() p
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < limit * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM for ${limit}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  STOP_RC=$?
  # Reaped: forget it, so that the clean-up never signals a recycled pid.
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
