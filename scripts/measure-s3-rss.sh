#!/usr/bin/env bash
# Like measure-rss.sh, on the S3 store: starts a replica on s3://$IOE_S3_BUCKET/<fresh prefix>
# (AWS_* from the environment, e.g. `set -a; . $CEPH_BASE/s3.env; set +a` after
# scripts/ceph-rgw.sh up), uploads and downloads one large file through the ioe CLI while
# sampling the replica's RSS every 100 ms; prints the RSS before, the peak during each transfer,
# the times and rates. Then deletes nothing: run `ioe-server gc` or drop the test cluster.
# Usage: scripts/measure-s3-rss.sh [SIZE_MIB] (default 1024). Needs `npm run build` first.
set -euo pipefail
size_mib=${1:-1024}
bucket=${IOE_S3_BUCKET:-ioe}
prefix="measure-$(date +%s)-$$"
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/big.mp4"
node "$here/dist/scripts/server.js" --storage "s3://$bucket/$prefix" --s3-path-style --port 0 \
  --no-http --log-level warn </dev/null >"$work/out" &
server=$!
for _ in $(seq 1 100); do grep -q 'listening on' "$work/out" 2>/dev/null && break; sleep 0.1; done
grep -q 'listening on' "$work/out" || { cat "$work/out"; exit 1; }
IOE_PORT=$(grep -o '[0-9]*$' "$work/out")
export IOE_PORT
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$server/status"; }
peak_during() { # runs "$@" while sampling; prints peak RSS in MiB, seconds and MiB/s
  local peak=0 start end pid r
  start=$(date +%s.%N)
  "$@" >/dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    r=$(rss)
    ((r > peak)) && peak=$r
    sleep 0.1
  done
  wait "$pid"
  end=$(date +%s.%N)
  echo "$peak MiB peak, $(echo "$end - $start" | bc) s, $(echo "$size_mib / ($end - $start)" | bc) MiB/s"
}
echo "file: $size_mib MiB on s3://$bucket/$prefix; replica RSS at start: $(rss) MiB"
echo "WRITE (ioe put): $(peak_during node "$here/dist/scripts/client.js" put "$work/big.mp4")"
echo "READ  (ioe get): $(peak_during node "$here/dist/scripts/client.js" get big.mp4 -o "$work/copy.mp4")"
cmp "$work/big.mp4" "$work/copy.mp4" && echo "bytes identical"
echo "replica RSS at end: $(rss) MiB"
