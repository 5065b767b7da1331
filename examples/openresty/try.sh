#!/bin/sh
# make openresty-example: renders examples/openresty/nginx.conf on a free loopback port, pointed at
# the simulator over HTTPS (started with sim/seed-demo.json unless one runs already), and starts
# it. Prints the URL and how to stop it. Environment: KOOPHONE_EXAMPLE_PORT (default: a free
# port), KOOPHONE_EXAMPLE_DIR (default .tmp/openresty-example), KOOPHONE_TOKEN (default: the
# demo tenant's token), KOOPHONE_SIM_* ports as for sim/simctl.
set -e
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
sim/simctl status >/dev/null 2>&1 || sim/simctl start --seed sim/seed-demo.json >/dev/null
eval "$(sim/simctl env)"
PORT=${KOOPHONE_EXAMPLE_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DIR=${KOOPHONE_EXAMPLE_DIR:-$ROOT/.tmp/openresty-example}
mkdir -p "$DIR/tmp"
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"
sed -e "s|@PREFIX@|$DIR|g" -e "s|@PORT@|$PORT|g" -e "s|@USER@|$USER_LINE|g" \
    -e "s|@LUA_PATH@|$ROOT/lua/?.lua;$ROOT/examples/openresty/?.lua|g" \
    -e "s|@LUA_CPATH@|$ROOT/build/luajit/?.so|g" examples/openresty/nginx.conf >"$DIR/nginx.conf"
TOKEN=${KOOPHONE_TOKEN:-$(sed -n 's/.*"token": "\([^"]*\)".*/\1/p' sim/seed-demo.json | head -n 1)}
: >"$DIR/error.log"
KOOPHONE_TOKEN=$TOKEN KOOPHONE_ENDPOINT=$KOOPHONE_SIM_HTTPS_URL KOOPHONE_CAFILE=$KOOPHONE_SIM_CA \
  /usr/sbin/nginx -p "$DIR/" -c "$DIR/nginx.conf" -e "$DIR/error.log"
cat <<END
example running: http://127.0.0.1:$PORT/admin/unassign (logs: $DIR/error.log)
  curl -s http://127.0.0.1:$PORT/admin/unassign -d '{"pairs":[{"user_id":"u-1001","instance_id":"demo0001"}]}'
stop it: kill -QUIT \$(cat $DIR/nginx.pid)   (the simulator: sim/simctl stop)
END
