#!/usr/bin/env bash
# A throw-away local redis-server for development, benchmarks and CI (the tests start their own).
#
#   scripts/redis.sh install        apt-get install redis-server if it is missing (needs root)
#   scripts/redis.sh start [PORT]   start one on 127.0.0.1 (PORT, else a free one); prints its URL
#   scripts/redis.sh url            the URL of the running one
#   scripts/redis.sh stop           stop it and remove its folder
#
# No persistence (--save '' --appendonly no): it is a cache, refilled by `larr store copy`.
# State (pidfile, port, log) lives in $LARR_REDIS_DIR (default: $TMPDIR/larr-redis).
set -euo pipefail
STATE="${LARR_REDIS_DIR:-${TMPDIR:-/tmp}/larr-redis}"

install() {
  command -v redis-server >/dev/null && return 0
  echo "installing redis-server (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

running() { [[ -f "$STATE/redis.pid" ]] && kill -0 "$(cat "$STATE/redis.pid")" 2>/dev/null; }
url() { echo "redis://127.0.0.1:$(cat "$STATE/port")/0"; }

start() {
  if running; then url; return 0; fi
  install
  local port="${1:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
  mkdir -p "$STATE"
  echo "$port" >"$STATE/port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$STATE" \
    --daemonize yes --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log"
  for _ in $(seq 100); do  # up to 10 s for the pidfile and the first PONG
    running && redis-cli -p "$port" ping >/dev/null 2>&1 && { url; return 0; }
    sleep 0.1
  done
  echo "redis-server did not start on port $port; see $STATE/redis.log" >&2
  return 1
}

stop() {
  if running; then
    local pid; pid="$(cat "$STATE/redis.pid")"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$STATE"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  url) running && url || { echo "no redis-server running from $STATE" >&2; exit 1; } ;;
  stop) stop ;;
  *) echo "usage: $0 install | start [PORT] | url | stop" >&2; exit 2 ;;
esac
