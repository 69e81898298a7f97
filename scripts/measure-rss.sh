#!/usr/bin/env bash
# Uploads and downloads one large file through the ioe CLI while sampling the server's RSS
# every 100 ms; prints the RSS before, the peak during each transfer, and the times.
# Usage: scripts/measure-rss.sh [SIZE_MIB] (default 2048). Needs `npm run build` first.
set -euo pipefail
size_mib=${1:-2048}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/big.mp4"
node "$here/dist/scripts/server.js" --port 0 --root "$work/media" --log-level warn < /dev/null > "$work/out" &
server=$!
until grep -q 'listening on' "$work/out" 2>/dev/null; do sleep 0.1; done
export IOE_PORT=$(grep -o '[0-9]*$' "$work/out")
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$server/status"; }
peak_during() { # runs "$@" while sampling; prints peak RSS in MiB and seconds taken
  local peak=0 start=$(date +%s.%N) pid
  "$@" > /dev/null & pid=$!
  while kill -0 "$pid" 2>/dev/null; do r=$(rss); ((r > peak)) && peak=$r; sleep 0.1; done
  wait "$pid"
  echo "$peak MiB peak, $(echo "$(date +%s.%N) - $start" | bc) s"
}
echo "file: $size_mib MiB; server RSS at start: $(rss) MiB"
echo "WRITE (ioe put): $(peak_during node "$here/dist/scripts/client.js" put "$work/big.mp4")"
echo "READ  (ioe get): $(peak_during node "$here/dist/scripts/client.js" get big.mp4 -o "$work/copy.mp4")"
cmp "$work/big.mp4" "$work/copy.mp4" && echo "bytes identical"
echo "server RSS at end: $(rss) MiB"
