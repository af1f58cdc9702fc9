# Sourced by the load scripts.
#
# `collect_ids TOKEN PORT RESIDENTS FILE` writes to FILE the unified ids of up to 2,000 of the
# demo street's gongan residents, spread over its RESIDENTS, read through the broker on PORT
# (some generated records are deliberately bad: their 404s are skipped).
collect_ids() {
  local token=$1 port=$2 residents=$3 file=$4 n step source id
  n=$(( residents < 2000 ? residents : 2000 ))
  step=$(( residents / n ))
  : >"$file"
  for i in $(seq 1 "$step" "$residents" | head -n "$n"); do
    printf -v source "GA-%08d" "$i"
    id=$(curl -ks -H "Authorization: Bearer $token" -H "X-Purpose: routine_visit" \
      "https://127.0.0.1:$port/v1/residents/by-source/gongan/$source" \
      | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
    if [ -n "$id" ]; then echo "$id" >>"$file"; fi
  done
}

# `start_nginx WORK CERT KEY PORT PROFILE_JSON` serves
# PROFILE_JSON as a static file on 127.0.0.1:PORT over TLS 1.3 with 2 workers (the machine's
# cores), no access log, keep-alive without limit — the ceiling the lookup is compared with.
# Writes WORK/nginx.conf and WORK/nginx.pid; the caller kills it on exit.
start_nginx() {
  local work=$1 cert=$2 key=$3 port=$4 profile=$5
  mkdir -p "$work/www"
  cp "$profile" "$work/www/profile.json"
  cat >"$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    ssl_protocols TLSv1.3;
    root $work/www;
    default_type application/json;
    location / { rewrite ^ /profile.json break; }
  }
}
CONF
  nginx -c "$work/nginx.conf" -p "$work" -g "user $(id -un);" 2>&1 >&2
  sleep 0.5
}
