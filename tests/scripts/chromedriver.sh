#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the console's browser tests.
#
#   tests/scripts/chromedriver.sh start [PORT]   # prints the WebDriver URL on stdout
#   tests/scripts/chromedriver.sh stop [PORT]
#
# Installs the packages `chromium`, `chromium-driver` and a Chinese font
# (`fonts-wqy-microhei`, for readable screenshots) with apt-get if they are not found.
# chromedriver listens on 127.0.0.1 only, in a process group of its own (stop ends it and
# the browsers it started); its pid and log live in $SAFEGRID_CHROMEDRIVER_DIR (default
# /tmp/safegrid-ci-chromedriver-PORT, so runs on other ports are left alone).
set -euo pipefail

mode=${1:-start}
port=${2:-9515}
dir=${SAFEGRID_CHROMEDRIVER_DIR:-/tmp/safegrid-ci-chromedriver-$port}
log() { echo "chromedriver.sh: $*" >&2; }

case "$mode" in
  start)
    if ! command -v chromedriver >/dev/null 2>&1 || [[ ! -x /usr/bin/chromium ]] \
      || [[ ! -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]]; then
      log "installing chromium, chromium-driver and fonts-wqy-microhei with apt-get"
      export DEBIAN_FRONTEND=noninteractive
      sudo_cmd=""
      if [[ $(id -u) -ne 0 ]]; then sudo_cmd="sudo"; fi
      $sudo_cmd apt-get install -y -q chromium chromium-driver fonts-wqy-microhei >&2 \
        || { $sudo_cmd apt-get update -q >&2 && $sudo_cmd apt-get install -y -q chromium chromium-driver fonts-wqy-microhei >&2; }
    fi
    mkdir -p "$dir"
    setsid chromedriver --port="$port" --allowed-ips=127.0.0.1 >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 100); do
      if curl -fsS "http://127.0.0.1:$port/status" >/dev/null 2>&1; then
        echo "http://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.1
    done
    log "chromedriver did not start; its log:"
    cat "$dir/log" >&2 || true
    exit 1
    ;;
  stop)
    if [[ -f "$dir/pid" ]]; then
      # The whole group: chromedriver and the browsers a failed test did not quit.
      kill -- -"$(cat "$dir/pid")" 2>/dev/null || kill "$(cat "$dir/pid")" 2>/dev/null || true
      rm -f "$dir/pid"
    fi
    ;;
  *)
    log "usage: $0 start [PORT] | stop [PORT]"
    exit 2
    ;;
esac
