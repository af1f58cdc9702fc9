#!/usr/bin/env bash
# Builds SafeGrid the way an air-gapped site does: every crate vendored (`cargo vendor`) into a
# temporary directory, cargo pointed at it by source replacement, then a build with an empty
# CARGO_HOME and --offline --locked, so any crate fetched from elsewhere fails the build.
# Prints how long vendoring and the build took. Costs a full build (.ci/run runs it).
#   bash scripts/ci-offline-build.sh [cargo build arguments]   # default: --workspace
# SAFEGRID_KEEP_VENDOR=DIR keeps the vendored sources and config there (what a site copies in:
# DIR/vendor and DIR/config.toml -> .cargo/config.toml; see deploy/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--workspace)

start=$(date +%s)
echo "== cargo vendor --locked into $work/vendor"
cargo vendor --locked --versioned-dirs "$work/vendor" > "$work/config.toml"
# The replacement cargo vendor printed must be the only source: no git or other registries.
grep -q '^\[source.vendored-sources\]' "$work/config.toml"
vendored=$(date +%s)
echo "vendored $(find "$work/vendor" -mindepth 1 -maxdepth 1 -type d | wc -l) crates in $((vendored - start)) s"

echo "== cargo build --offline --locked ${args[*]} (empty CARGO_HOME: nothing cached, nothing fetched)"
mkdir -p "$work/cargo-home"
cp "$work/config.toml" "$work/cargo-home/config.toml"
CARGO_HOME="$work/cargo-home" CARGO_NET_OFFLINE=true \
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$work/target}" \
  cargo build --offline --locked "${args[@]}"
built=$(date +%s)
echo "offline build passed: vendor $((vendored - start)) s, build $((built - vendored)) s"

if [ -n "${SAFEGRID_KEEP_VENDOR:-}" ]; then
  mkdir -p "$SAFEGRID_KEEP_VENDOR"
  cp -r "$work/vendor" "$SAFEGRID_KEEP_VENDOR/"
  sed "s#$work/vendor#vendor#" "$work/config.toml" > "$SAFEGRID_KEEP_VENDOR/config.toml"
  echo "kept: $SAFEGRID_KEEP_VENDOR/vendor and $SAFEGRID_KEEP_VENDOR/config.toml"
fi
