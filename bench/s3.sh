# The object store a benchmark runs against, sourced by bench/storage.sh and
# bench/relays.sh after bench_setup: STORE=moto (the default: moto's S3
# server from PyPI, one Python process) or STORE=garage (a real distributed
# store: three Garage nodes on loopback, replication 3; `garage` from
# `tests/peers.sh --garage`, i.e. `cargo install garage`).
# start_store sets S3_ENDPOINT, S3_REGION and S3_KEYS (a 0600 credentials
# file); make_bucket NAME creates a bucket; storage_toml NAME prints the
# relay.toml [storage] table for it.

STORE=${STORE:-moto}
STORE_PIDS=()

start_store() {
  case "$STORE" in
    moto) start_moto ;;
    garage) start_garage ;;
    *) echo "STORE must be moto or garage, not $STORE" >&2; return 1 ;;
  esac
}

stop_store() {
  for pid in "${STORE_PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
}

start_moto() {
  python3 -c 'import moto.server' 2>/dev/null || python3 -m pip install --quiet 'moto[server]'
  local port; port=$(free_port)
  python3 -c "from moto.server import main; main(['-H', '127.0.0.1', '-p', '$port'])" 2>"$WORK/moto.log" &
  STORE_PIDS+=($!)
  S3_ENDPOINT="http://127.0.0.1:$port"; S3_REGION=us-east-1
  for _ in $(seq 1 100); do curl -s "$S3_ENDPOINT/" >/dev/null && break; sleep 0.1; done
  printf 'access-key-id = "bench"\nsecret-access-key = "bench"\n' >"$WORK/s3.keys"
  chmod 600 "$WORK/s3.keys"; S3_KEYS="$WORK/s3.keys"
}

# garage NODE ARGS...: the garage CLI against node NODE (1-3).
garage_at() { local n=$1; shift; garage -c "$WORK/garage-$n/garage.toml" "$@"; }

start_garage() {
  command -v garage >/dev/null || { echo "garage is missing: run tests/peers.sh --garage" >&2; return 1; }
  local secret; secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local n rpc s3 admin
  for n in 1 2 3; do
    rpc=$(free_port); s3=$(free_port); admin=$(free_port)
    mkdir -p "$WORK/garage-$n/meta" "$WORK/garage-$n/data"
    cat >"$WORK/garage-$n/garage.toml" <<TOML
metadata_dir = "$WORK/garage-$n/meta"
data_dir = "$WORK/garage-$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
    garage -c "$WORK/garage-$n/garage.toml" server 2>"$WORK/garage-$n.log" &
    STORE_PIDS+=($!)
    [ "$n" = 1 ] && S3_ENDPOINT="http://127.0.0.1:$s3"
  done
  for n in 1 2 3; do
    for _ in $(seq 1 100); do garage_at "$n" status >/dev/null 2>&1 && break; sleep 0.2; done
  done
  local ids=() id
  for n in 1 2 3; do ids+=("$(garage_at "$n" node id -q 2>/dev/null)"); done
  garage_at 1 node connect "${ids[1]}" >/dev/null
  garage_at 1 node connect "${ids[2]}" >/dev/null
  for id in "${ids[@]}"; do
    garage_at 1 layout assign -z dc1 -c 10G "${id%@*}" >/dev/null
  done
  garage_at 1 layout apply --version 1 >/dev/null
  S3_REGION=garage
  local key; key=$(garage_at 1 key create ferry-bench)
  local id_line secret_line
  id_line=$(grep -o 'GK[0-9a-f]*' <<<"$key" | head -1)
  secret_line=$(grep -i 'secret' <<<"$key" | grep -o '[0-9a-f]\{64\}' | head -1)
  printf 'access-key-id = "%s"\nsecret-access-key = "%s"\n' "$id_line" "$secret_line" >"$WORK/s3.keys"
  chmod 600 "$WORK/s3.keys"; S3_KEYS="$WORK/s3.keys"
}

make_bucket() {
  case "$STORE" in
    moto) curl -sf -X PUT "$S3_ENDPOINT/$1" >/dev/null ;;
    garage)
      garage_at 1 bucket create "$1" >/dev/null
      garage_at 1 bucket allow --read --write --owner "$1" --key ferry-bench >/dev/null ;;
  esac
}

storage_toml() {
  cat <<TOML

[storage]
kind = "s3"
endpoint = "$S3_ENDPOINT"
bucket = "$1"
region = "$S3_REGION"
credentials-file = "$S3_KEYS"
TOML
}
