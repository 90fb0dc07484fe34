#!/usr/bin/env bash
# Checks systemd/wadispatch.service with systemd-analyze, without installing it:
#
#   1. `systemd-analyze verify` on a copy whose /usr/local/bin/wadispatch points at
#      a stand-in executable (verify fails on a missing binary, and CI has none
#      installed there). Any message at all counts as a failure: verify prints
#      warnings (unknown keys, bad values) without always failing.
#   2. `systemd-analyze security --offline=true`: prints the exposure table and
#      fails when the overall exposure is above WADISPATCH_EXPOSURE_MAX (on the
#      0-100 scale of --threshold; 15 means 1.5, the unit scores 1.1).
#
# Usage: systemd/verify.sh [unit-file]   (needs systemd 250 or newer; with CI set
# and apt-get available, installs Debian's systemd package when it is missing)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
unit="${1:-$here/wadispatch.service}"
name="$(basename "$unit")"
max_exposure="${WADISPATCH_EXPOSURE_MAX:-15}"
binary=/usr/local/bin/wadispatch

if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ -n "${CI:-}" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq systemd >/dev/null
  else
    echo "systemd-analyze not found: install systemd (apt-get install -y systemd)" >&2
    exit 2
  fi
fi
[ -f "$unit" ] || { echo "no such unit file: $unit" >&2; exit 2; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/wadispatch"
chmod 0755 "$tmp/bin/wadispatch"

# Same file name (verify derives the unit name from it), stand-in binary.
sed "s#$binary#$tmp/bin/wadispatch#g" "$unit" >"$tmp/$name"
grep -q "$tmp/bin/wadispatch" "$tmp/$name" || {
  echo "$unit does not run $binary: update this script" >&2
  exit 1
}
# Other absolute commands of the unit must exist on a real host; a minimal
# container may lack them (procps' /bin/kill), so stand in for those too.
for cmd in $(grep -E '^Exec[A-Za-z]*=' "$tmp/$name" | sed -E 's/^[^=]*=[-@:+!]*//; s/ .*//' | sort -u); do
  if [ "${cmd#/}" != "$cmd" ] && [ ! -x "$cmd" ]; then
    echo "note: $cmd is missing on this machine; checking with a stand-in" >&2
    sed -i "s#$cmd#$tmp/bin/wadispatch#g" "$tmp/$name"
  fi
done

echo "== systemd-analyze verify $name"
status=0
out="$(systemd-analyze verify --man=no "$tmp/$name" 2>&1)" || status=$?
if [ -n "$out" ]; then
  printf '%s\n' "$out" | sed -e "s#$tmp/$name#$unit#g" -e "s#$tmp/bin/wadispatch#$binary#g"
fi
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
  echo "verify: FAILED (exit status $status; every message above counts)" >&2
  exit 1
fi
echo "verify: ok"

echo "== systemd-analyze security --offline=true $name"
systemd-analyze security --offline=true --no-pager --threshold="$max_exposure" "$tmp/$name" || {
  echo "security: exposure above $max_exposure (of 100), or the analysis failed" >&2
  exit 1
}
