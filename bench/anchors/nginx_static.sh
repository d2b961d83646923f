#!/bin/bash
# nginx serving the directory $ROOT on 127.0.0.1:$PORT: the static-files anchor of
# `deno task bench:static` (bench/http.ts --scenario static). One process (no master, one
# worker), epoll, sendfile and tcp_nopush on, open-file cache, no access log; errors go to
# stderr. Its config, pid file and temp paths live in a new directory under $TMPDIR (or
# /tmp), which the bench points at its log directory.
#   PORT=8080 ROOT=./public bash bench/anchors/nginx_static.sh   (apt-get install nginx-core)
# Unlike ../shared/bench/anchors/nginx_static.sh, unknown types are application/octet-stream,
# as in reactor serve --root, so both servers send the same Content-Type.
set -eu
: "${PORT:?PORT must be set}" "${ROOT:?ROOT must be set}"
[[ -d $ROOT ]] || { echo "nginx_static.sh: ROOT=$ROOT is not a directory" >&2; exit 2; }
# NGINX_BIN: nginx's path when it is not on PATH (not NGINX: nginx reads that as inherited sockets).
nginx=${NGINX_BIN:-nginx}
command -v "$nginx" >/dev/null || { echo "nginx_static.sh: nginx is missing (apt-get install nginx-core)" >&2; exit 2; }
root=$(cd "$ROOT" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/nginx-static-XXXXXX")
mime=/etc/nginx/mime.types
types="include $mime;"
[[ -r $mime ]] || types=""
cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log stderr warn;
pid $dir/nginx.pid;
events { worker_connections 20000; use epoll; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  default_type application/octet-stream;
  $types
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  server {
    listen 127.0.0.1:${PORT} reuseport backlog=4096;
    root ${root}; sendfile on; tcp_nopush on; open_file_cache max=10000 inactive=60s; etag on;
  }
}
CONF
# -e: nginx opens its compiled-in error log before it reads error_log from the config.
exec "$nginx" -e stderr -c "$dir/nginx.conf" -p "$dir"
