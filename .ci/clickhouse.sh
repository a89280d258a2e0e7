#!/usr/bin/env bash
# Makes sure a ClickHouse server answers on 127.0.0.1:8123 (HTTP) and :9000 (native) for the tests:
# installs Debian's clickhouse-server when missing and starts it with its data in a temporary directory.
# Prints nothing when one already answers. Usage: .ci/clickhouse.sh [DATA_DIR]
set -euo pipefail
if curl -fsS --max-time 2 http://127.0.0.1:8123/ping >/dev/null 2>&1; then
  exit 0
fi
if ! command -v clickhouse-server >/dev/null 2>&1; then
  echo "installing clickhouse-server (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq clickhouse-server >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq clickhouse-server >/dev/null; }
fi
dir=${1:-$(mktemp -d /tmp/tunescout-clickhouse.XXXXXX)}
mkdir -p "$dir/data" "$dir/log"
cp /etc/clickhouse-server/config.xml /etc/clickhouse-server/users.xml "$dir/"
# data and logs under $dir, loopback only (IPv4; the image may have no IPv6)
sed -i -e "s|/var/lib/clickhouse/|$dir/data/|g" -e "s|/var/log/clickhouse-server/|$dir/log/|g" \
    -e "s|<listen_host>::1</listen_host>||" "$dir/config.xml"
nohup clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
for _ in $(seq 1 60); do
  curl -fsS --max-time 2 http://127.0.0.1:8123/ping >/dev/null 2>&1 && { echo "clickhouse-server started, data in $dir" >&2; exit 0; }
  sleep 0.5
done
echo "clickhouse-server did not start; see $dir/log" >&2
exit 1
