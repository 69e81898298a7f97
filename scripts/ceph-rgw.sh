#!/usr/bin/env bash
# A throw-away single-node Ceph cluster (Pacific 16.2 from Debian) with two RADOS Gateways (S3)
# on loopback, over the one cluster: for trying the S3 store out, and for the tests and CI.
#
#   scripts/ceph-rgw.sh up          install ceph-mon, ceph-osd, radosgw if missing (apt-get, sudo
#                                   when not root), build a cluster under $CEPH_BASE, start a
#                                   monitor, one OSD, gateway a (port $RGW_PORT) and gateway b
#                                   ($RGW_PORT + 1), create an S3 user and the bucket $S3_BUCKET,
#                                   print the settings (also in $CEPH_BASE/s3.env); on failure it
#                                   stops what it started
#   scripts/ceph-rgw.sh down        stop exactly the daemons this script started (by PID)
#   scripts/ceph-rgw.sh stop-gw G   stop gateway G (a, b or c): the tests' "store down"
#   scripts/ceph-rgw.sh start-gw G  start it (again); c, on port $RGW_PORT + 2, is configured but
#                                   started only on demand (a gateway a test may stop and start
#                                   without disturbing the tests that use a and b)
#   scripts/ceph-rgw.sh status      exit 0 when both gateways answer
#
# Everything lives in $CEPH_BASE (default ${TMPDIR:-/tmp}/ioe-s3); nothing in /etc/ceph.
# Knobs: CEPH_BASE, RGW_PORT (7480; gateway b gets the next port), MON_PORT (3300),
#        OSD_STORE (memstore: RAM, starts in 2-3 s; bluestore: a sparse file, bounded memory),
#        STORE_BYTES, S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET (ioe).
set -Eeuo pipefail

CEPH_BASE=${CEPH_BASE:-${TMPDIR:-/tmp}/ioe-s3}
RGW_PORT=${RGW_PORT:-7480}
RGW_PORT_B=$((RGW_PORT + 1))
RGW_PORT_C=$((RGW_PORT + 2))
MON_PORT=${MON_PORT:-3300}
# memstore keeps every byte (and deleted ones until RGW's own GC) in the OSD's RAM: for tests.
OSD_STORE=${OSD_STORE:-memstore}
if [ "$OSD_STORE" = memstore ]; then STORE_BYTES=${STORE_BYTES:-$((4 << 30))}; else STORE_BYTES=${STORE_BYTES:-$((16 << 30))}; fi
S3_ACCESS_KEY=${S3_ACCESS_KEY:-ioe-test-access-key}
S3_SECRET_KEY=${S3_SECRET_KEY:-ioe-test-secret-key-0123456789abcdef}
S3_BUCKET=${S3_BUCKET:-ioe}
CONF="$CEPH_BASE/ceph.conf"

log() { printf '[%(%T)T] ceph-rgw: %s\n' -1 "$*" >&2; }

start_bg() { # name, command... : runs it detached in the foreground mode (-f), records its PID
  local name=$1
  shift
  setsid "$@" </dev/null >>"$CEPH_BASE/log/$name.stdout" 2>&1 &
  echo $! >"$CEPH_BASE/pids/$name.pid"
}

wait_for() { # daemon name (its process must stay alive), timeout seconds, command...
  local name=$1 t=$2
  shift 2
  local end=$((SECONDS + t)) pid
  pid=$(cat "$CEPH_BASE/pids/$name.pid")
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) exited during start-up"
      return 1
    fi
    if ((SECONDS >= end)); then
      log "timeout waiting for $name"
      return 1
    fi
    sleep 0.1
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

gateway_answers() { curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$1/"; }

port_of() { # gateway letter -> port
  case "$1" in
    a) echo "$RGW_PORT" ;;
    b) echo "$RGW_PORT_B" ;;
    c) echo "$RGW_PORT_C" ;;
    *)
      log "gateway must be a, b or c"
      exit 2
      ;;
  esac
}

on_fail() { # up failed: say why, stop whatever was started, keep $CEPH_BASE for inspection
  local rc=$?
  trap - ERR
  log "up failed (exit $rc); last log lines:"
  tail -n 5 "$CEPH_BASE"/log/*.log "$CEPH_BASE"/log/*.stdout >&2 2>/dev/null || true
  down
  exit "$rc"
}

install_pkgs() {
  local pkgs=(ceph-mon ceph-osd radosgw) sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing ${pkgs[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
}

have_ceph() { command -v radosgw >/dev/null && command -v ceph-osd >/dev/null && command -v ceph-mon >/dev/null; }

start_gateway() { # letter
  local gw=$1 port
  port=$(port_of "$gw")
  if port_in_use "$port"; then
    log "port $port on 127.0.0.1 is already in use"
    return 1
  fi
  start_bg "rgw.$gw" radosgw -c "$CONF" -n "client.rgw.$gw" -f
  wait_for "rgw.$gw" 120 gateway_answers "$port"
}

create_bucket() { # with curl's SigV4 (curl 7.75 or later); RGW wants the body's SHA-256 (empty)
  local code
  code=$(curl -s -o "$CEPH_BASE/log/bucket.out" -w '%{http_code}' --max-time 10 -X PUT \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "http://127.0.0.1:$RGW_PORT/$S3_BUCKET")
  [ "$code" = 200 ] || { log "creating bucket $S3_BUCKET: HTTP $code"; return 1; }
}

write_env() {
  cat >"$CEPH_BASE/s3.env" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
IOE_S3_ENDPOINTS=http://127.0.0.1:$RGW_PORT,http://127.0.0.1:$RGW_PORT_B
IOE_S3_SPARE_ENDPOINT=http://127.0.0.1:$RGW_PORT_C
IOE_S3_BUCKET=$S3_BUCKET
CEPH_BASE=$CEPH_BASE
EOF
}

up() {
  have_ceph || install_pkgs
  have_ceph || { log "ceph-mon, ceph-osd and radosgw are not installed and could not be"; exit 1; }
  if ls "$CEPH_BASE"/pids/*.pid >/dev/null 2>&1; then
    log "$CEPH_BASE has pidfiles; run '$0 down' first"
    exit 1
  fi
  case "$OSD_STORE" in memstore | bluestore) ;; *)
    log "OSD_STORE must be memstore or bluestore"
    exit 2
    ;;
  esac
  local port
  for port in "$RGW_PORT" "$RGW_PORT_B" "$MON_PORT"; do
    if port_in_use "$port"; then
      log "port $port on 127.0.0.1 is already in use"
      exit 1
    fi
  done
  command -v curl >/dev/null || { log "curl is needed (scripts/install-test-tools.sh installs it)"; exit 1; }
  trap on_fail ERR
  rm -rf "$CEPH_BASE"
  mkdir -p "$CEPH_BASE"/{mon,osd0,rgw.a,rgw.b,rgw.c,log,run,pids}
  local fsid osd_uuid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)

  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
public_network = 127.0.0.0/8
ms_bind_msgr1 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
# with auth 'none' there is no session key, so the daemons' default 'secure' mon mode fails (-13)
ms_mon_client_mode = crc
run_dir = $CEPH_BASE/run
mon_cluster_log_file = default=$CEPH_BASE/log/cluster.\$channel.log cluster=$CEPH_BASE/log/cluster.log
admin_socket = $CEPH_BASE/run/\$name.asok
log_file = $CEPH_BASE/log/\$name.log
log_to_stderr = false
err_to_stderr = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000

[mon]
mon_data = $CEPH_BASE/mon
mon_initial_members = a
# commit cluster-map changes (pool creation etc.) quickly; the default batches them for 1 s
paxos_propose_interval = 0.05
paxos_min_wait = 0.01

[osd]
osd_data = $CEPH_BASE/osd0
osd_objectstore = $OSD_STORE
memstore_device_bytes = $STORE_BYTES
bluestore_block_path = $CEPH_BASE/osd0/block.file
bluestore_block_size = $STORE_BYTES
bluestore_block_create = true
bluestore_fsck_on_mkfs = false
bluestore_cache_autotune = false
bluestore_cache_size = 268435456
osd_memory_target = 1073741824

[client.rgw]
rgw_dns_name = localhost
rgw_thread_pool_size = 64
# free deleted data (old tails) after 30 s instead of 2 h, so test data does not pile up
rgw_gc_obj_min_wait = 30
rgw_gc_processor_period = 30

[client.rgw.a]
rgw_data = $CEPH_BASE/rgw.a
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1

[client.rgw.b]
rgw_data = $CEPH_BASE/rgw.b
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT_B tcp_nodelay=1

[client.rgw.c]
rgw_data = $CEPH_BASE/rgw.c
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT_C tcp_nodelay=1
EOF
  export CEPH_CONF="$CONF"

  log "mon: mkfs + start"
  monmaptool --create --addv a "[v2:127.0.0.1:$MON_PORT]" --fsid "$fsid" "$CEPH_BASE/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$CEPH_BASE/monmap"
  start_bg mon.a ceph-mon -c "$CONF" -i a -f
  wait_for mon.a 60 ceph -c "$CONF" --connect-timeout 5 mon stat

  log "osd.0 ($OSD_STORE): create + mkfs + start"
  ceph -c "$CONF" osd new "$osd_uuid" >/dev/null # allocates id 0
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$CEPH_BASE/log/osd.0.mkfs" 2>&1
  start_bg osd.0 ceph-osd -c "$CONF" -i 0 -f
  wait_for osd.0 60 bash -c "ceph -c '$CONF' osd stat -f json | grep -q '\"num_up_osds\":1'"

  log "pools: created in one CLI session (RGW would otherwise create them one by one)"
  local p cmds=""
  for p in .rgw.root default.rgw.log default.rgw.control default.rgw.meta \
    default.rgw.buckets.index default.rgw.buckets.non-ec default.rgw.buckets.data; do
    cmds+="osd pool create $p 8 8"$'\n'"osd pool application enable $p rgw"$'\n'
  done
  printf '%s' "$cmds" | ceph -c "$CONF" >/dev/null 2>&1

  log "radosgw a (port $RGW_PORT), then b (port $RGW_PORT_B)"
  start_gateway a
  start_gateway b

  log "S3 user and bucket $S3_BUCKET"
  radosgw-admin -c "$CONF" -n client.rgw.a user create --uid=ioe-test --display-name="IOE tests" \
    --access-key="$S3_ACCESS_KEY" --secret="$S3_SECRET_KEY" >/dev/null
  create_bucket
  trap - ERR
  write_env
  log "ready (settings also in $CEPH_BASE/s3.env)"
  cat "$CEPH_BASE/s3.env"
}

stop_pids() { # SIGTERM the daemons named, wait up to 15 s, then SIGKILL what is left
  local name f pid pids=()
  for name in "$@"; do
    f="$CEPH_BASE/pids/$name.pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    rm -f "$f"
    # Only a daemon of this cluster (its command line names this ceph.conf): a PID left by a
    # run long gone may belong to something else by now.
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-c $CONF"; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  ((${#pids[@]})) || return 0
  local alive
  for _ in $(seq 1 150); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid still alive, SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  return 0
}

down() { # gateways first (they need the OSD to shut down cleanly), the OSD waits for the mon
  stop_pids rgw.a rgw.b rgw.c
  stop_pids osd.0
  stop_pids mon.a
  log "stopped"
}

status() { gateway_answers "$RGW_PORT" && gateway_answers "$RGW_PORT_B"; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  stop-gw)
    port_of "${2:-}" >/dev/null
    stop_pids "rgw.$2"
    ;;
  start-gw)
    port_of "${2:-}" >/dev/null
    [ -f "$CONF" ] || { log "no cluster under $CEPH_BASE"; exit 1; }
    [ ! -f "$CEPH_BASE/pids/rgw.$2.pid" ] || { log "gateway $2 is running"; exit 1; }
    start_gateway "$2"
    ;;
  status) status ;;
  *)
    echo "usage: $0 up|down|status|stop-gw a|b|c|start-gw a|b|c" >&2
    exit 2
    ;;
esac
