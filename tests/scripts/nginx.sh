# shellcheck shell=bash disable=SC2034 # NGINX_* are for the sourcing script
# SPDX-License-Identifier: MIT
# Sourced by the scripts that need a real HTTP server: an nginx of their own on 127.0.0.1, with a
# private configuration in a directory they name, on a free port, and ended when they are done.
#   nginx_start DIR   serve DIR/www (made if missing) on a free port; sets NGINX_PORT, NGINX_PID
#                     and NGINX_URL (http://127.0.0.1:PORT); DIR/www/slow/ is sent at
#                     NGINX_SLOW_RATE (default 32k: nginx sends a second's worth at once) per connection. Returns 1, with nginx's
#                     error log on stderr, when it cannot be started.
#   nginx_stop        end it (SIGKILL: also a stopped one) and wait for it; safe to call twice.
# Its lifetime is bounded as well (NGINX_MAX_SECONDS, default 900): a script killed with SIGKILL
# does not leave it behind for long.

NGINX_PID='' NGINX_PORT='' NGINX_URL='' nginx_wrapper=''

nginx_start() {
	local dir=$1 port
	mkdir -p "$dir/www/slow" "$dir/tmp"
	dir=$(cd "$dir" && pwd) # nginx takes the paths of its configuration as they are
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp; uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  keepalive_requests 1000000; keepalive_timeout 60s;
  sendfile on; tcp_nopush on;
  types { } default_type application/octet-stream;
  server {
    listen 127.0.0.1:$port;
    root $dir/www;
    location /slow/ { limit_rate ${NGINX_SLOW_RATE:-32k}; }
  }
}
CONF
		rm -f "$dir/nginx.pid"
		: >"$dir/error.log"
		timeout -s KILL "${NGINX_MAX_SECONDS:-900}" \
			nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" </dev/null >/dev/null 2>&1 &
		nginx_wrapper=$!
		while kill -0 "$nginx_wrapper" 2>/dev/null; do
			if [[ -s $dir/nginx.pid ]] && (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
				NGINX_PID=$(cat "$dir/nginx.pid") NGINX_PORT=$port
				NGINX_URL=http://127.0.0.1:$port
				return 0
			fi
			sleep 0.05
		done
		wait "$nginx_wrapper" 2>/dev/null || true
		nginx_wrapper=
		grep -q "Address already in use" "$dir/error.log" || break # another port may do
	done
	echo "nginx did not start; its error log:" >&2
	cat "$dir/error.log" >&2
	return 1
}

nginx_stop() {
	if [[ -n $NGINX_PID ]]; then
		kill -KILL "$NGINX_PID" 2>/dev/null || true # timeout(1) reaps it and exits
	elif [[ -n $nginx_wrapper ]]; then
		kill -KILL "$nginx_wrapper" 2>/dev/null || true
	fi
	if [[ -n $nginx_wrapper ]]; then
		wait "$nginx_wrapper" 2>/dev/null || true
	fi
	NGINX_PID='' NGINX_PORT='' NGINX_URL='' nginx_wrapper=''
}
