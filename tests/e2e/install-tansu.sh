#!/usr/bin/env bash
# Installs tansu (the Kafka-compatible broker of the end-to-end test, with
# sqlite storage) with cargo when it is not on PATH. Used by tests/e2e/run.sh
# and by .ci/run, which starts it in the background while the tests run.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
if command -v tansu >/dev/null; then
  exit 0
fi
started=$(date +%s)
nice -n 19 cargo install tansu --locked --features dynostore,libsql
echo "tansu installed in $(( $(date +%s) - started )) s"
