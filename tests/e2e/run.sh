#!/usr/bin/env bash
# End-to-end test of wadispatch against a real, separate Kafka-compatible broker
# (tansu, sqlite storage) and the WhatsApp sandbox: one campaign of 9,985 staged
# contacts, a broker restart and a daemon SIGKILL mid-campaign, then invariants
# read from the sandbox and from `wadispatch report`. See tests/e2e/README.md.
#
# Usage: bash tests/e2e/run.sh            (from anywhere; CI runs it after a release build)
# Env:   WADISPATCH_BIN   binary to test (default target/release/wadispatch)
#        E2E_TIMEOUT      seconds allowed for the campaign to finish (default 300)
#        E2E_KEEP=1       keep the temporary directory (logs, store, broker db)
#        E2E_BROKER_SIGNAL  signal that stops the broker for its restart (default KILL)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"

BIN=${WADISPATCH_BIN:-$ROOT/target/release/wadispatch}
TIMEOUT=${E2E_TIMEOUT:-300}
# How the broker is stopped for its restart. KILL by default: with TERM, tansu
# 0.6.0 keeps answering for seconds after closing its storage and the restarted
# broker then panics on the daemon's idempotent producers (see README.md).
BROKER_SIGNAL=${E2E_BROKER_SIGNAL:-KILL}
CAMPAIGN=bday-2026-11
STAGED_EXPECTED=9985  # config/examples/README.md: staged unique contacts of the promo
ELIGIBLE=9970         # 9,985 staged - 5 invalid_phone - 10 missing_variable:coupon
MAX_IN_FLIGHT=16      # dispatch.max_in_flight_per_sender in the config below
SENDERS=2             # senders of config/examples/promo.json
# At most this many contacts can be claimed (request possibly written) when the
# daemon is killed: the campaign dispatcher holds max_in_flight_per_sender x
# (senders of the spec) permits, and a claim is taken only under a permit. Those become `unknown`
# on restart and are never resent; a status webhook may still settle them.
UNKNOWN_BOUND=$((MAX_IN_FLIGHT * SENDERS))

log() { printf '\n== e2e: %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }

PASSED=0
FAILED=0
check() { # check NAME CONDITION-EXIT-STATUS DETAIL
  local name=$1 ok=$2 detail=${3:-}
  if [ "$ok" = 0 ]; then
    PASSED=$((PASSED + 1)); printf 'PASS %s %s\n' "$name" "$detail"
  else
    FAILED=$((FAILED + 1)); printf 'FAIL %s %s\n' "$name" "$detail"
  fi
}
summary_and_exit() {
  printf '\ne2e: %d passed, %d failed\n' "$PASSED" "$FAILED"
  if [ "$FAILED" = 0 ]; then exit 0; else exit 1; fi
}
abort() { # a step the rest depends on failed: count it and stop
  check "$1" 1 "${2:-}"
  show_logs
  summary_and_exit
}

# ---------------------------------------------------------------- tools
if ! command -v tansu >/dev/null; then
  log "installing tansu with cargo (sqlite storage); this takes several minutes, once per machine"
  bash "$ROOT/tests/e2e/install-tansu.sh"
fi
# Kafka client for the test itself (publishing the spec, reading the DLQ):
# Debian's kafka-python, run by the system interpreter. kcat is not usable:
# Debian's librdkafka 2.0.2 cannot parse tansu's ApiVersions answer.
PY=/usr/bin/python3
if ! "$PY" -c 'import kafka' 2>/dev/null; then
  log "installing python3-kafka (kafka-python) from Debian"
  apt-get update -qq && apt-get install -y -qq python3-kafka >/dev/null
fi
KT() { timeout 60 "$PY" "$ROOT/tests/e2e/kafka_tool.py" "$@"; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
if [ ! -x "$BIN" ]; then
  log "building wadispatch (release)"
  nice cargo build --release --locked
fi
note "$("$BIN" --version), $(tansu --version 2>&1 | head -1), kafka-python $("$PY" -c 'import kafka; print(kafka.__version__)')"

# ---------------------------------------------------------------- scratch space
TMP=$(mktemp -d /tmp/wadispatch-e2e.XXXXXX)
PIDS_TANSU="" PID_SANDBOX="" PID_DAEMON=""
stop_pid() { # stop_pid PID [SIGNAL]: signal it, wait up to 15 s, then SIGKILL
  local pid=$1 sig=${2:-TERM}
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -s "$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
show_logs() {
  for f in "$TMP"/*.log; do
    [ -f "$f" ] || continue
    printf '\n--- last lines of %s\n' "$(basename "$f")"
    tail -n 25 "$f" | cut -c1-400
  done
}
cleanup() {
  local rc=$?
  set +e
  stop_pid "$PID_DAEMON" KILL
  stop_pid "$PID_SANDBOX"
  stop_pid "$PIDS_TANSU"
  if [ "${E2E_KEEP:-}" = 1 ]; then
    echo "e2e: kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r KPORT SPORT WPORT < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')
BROKER=127.0.0.1:$KPORT
note "temp dir $TMP; broker $BROKER, sandbox 127.0.0.1:$SPORT, webhook 127.0.0.1:$WPORT"

wait_port() { # wait_port PORT SECONDS PID: until PORT accepts connections; fails early if PID exits
  local deadline=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# ---------------------------------------------------------------- broker
# tansu 0.6 reads sqlite://PATH as relative to its working directory (an
# absolute path loses its leading /), so it runs in $TMP with a relative path.
start_tansu() {
  (cd "$TMP" && exec tansu broker \
    --listener-url "tcp://$BROKER" \
    --advertised-listener-url "tcp://$BROKER" \
    --storage-engine "sqlite://tansu.db" \
    >>"$TMP/tansu.log" 2>&1) &
  PIDS_TANSU=$!
  wait_port "$KPORT" 60 "$PIDS_TANSU" || abort "broker-started" "(tansu did not listen on $BROKER within 60 s)"
}
log "starting tansu on $BROKER (sqlite $TMP/tansu.db)"
start_tansu
create_topic() { # create_topic NAME PARTITIONS [CONFIG...]
  local name=$1 parts=$2; shift 2
  local args=()
  for c in "$@"; do args+=(--config "$c"); done
  timeout 30 tansu topic create "$name" --broker "tcp://$BROKER" --partitions "$parts" "${args[@]}" \
    >>"$TMP/topics.log" 2>&1 || abort "topic-created" "($name, see topics.log)"
}
create_topic wa.campaigns 1 cleanup.policy=compact
create_topic wa.audience 4
create_topic wa.audience.dlq 1
create_topic wa.events 1
create_topic wa.suppressions 1 cleanup.policy=compact
create_topic wa.conversions 2
note "topics: wa.campaigns(1, compact) wa.audience(4) wa.audience.dlq(1) wa.events(1) wa.suppressions(1, compact) wa.conversions(2)"

# ---------------------------------------------------------------- sandbox
# The default failure rules without suffix 49 (131049 defers 24 h), so every
# contact can reach a final state during the test.
cat >"$TMP/sandbox.toml" <<EOF
[[failure_rules]]
suffix = "13"
code = 131026
[[failure_rules]]
suffix = "50"
code = 131050
[[failure_rules]]
suffix = "72"
code = 130472
EOF
log "starting the sandbox on 127.0.0.1:$SPORT"
"$BIN" sandbox --config "$TMP/sandbox.toml" --listen "127.0.0.1:$SPORT" \
  --webhook-url "http://127.0.0.1:$WPORT/webhook" --app-secret e2e-secret \
  --per-number-mps 200 >>"$TMP/sandbox.log" 2>&1 &
PID_SANDBOX=$!
wait_port "$SPORT" 30 "$PID_SANDBOX" || abort "sandbox-started" "(see sandbox.log)"

# stats: prints "accepted rejected duplicate_recipients recipients"
stats() {
  curl -fsS --max-time 5 "http://127.0.0.1:$SPORT/sandbox/stats" | "$PY" -c '
import json, sys
s = json.load(sys.stdin)
print(s["accepted"], sum(s.get("rejected_by_code", {}).values()), s["duplicate_recipients"], s["recipients"])'
}

# ---------------------------------------------------------------- daemon config
CFG=$TMP/wadispatch.toml
cat >"$CFG" <<EOF
[kafka]
brokers = "$BROKER"
group_id = "wadispatch-e2e"
shutdown_timeout_secs = 10

[kafka.client]
"session.timeout.ms" = "10000"

[store.embedded]
data_dir = "$TMP/data"

[whatsapp]
api_base_url = "http://127.0.0.1:$SPORT"

[http]
listen = "127.0.0.1:$WPORT"

[admin]
listen = "127.0.0.1:0"

[dispatch]
max_in_flight_per_sender = $MAX_IN_FLIGHT

[senders."106540352242922"]
per_second = 100.0

[senders."106540352242923"]
per_second = 100.0

[campaigns."$CAMPAIGN"]
per_second = 150.0
EOF
export WADISPATCH_WHATSAPP_TOKEN=e2e-token WADISPATCH_APP_SECRET=e2e-secret
export WADISPATCH_INSTANCE_ID=e2e   # stable claim owner across the daemon restart
unset WADISPATCH_KAFKA_BROKERS WADISPATCH_CONFIG RUST_LOG
if "$BIN" validate "$CFG" >"$TMP/validate.out" 2>&1; then
  check "config-valid" 0
else
  cat "$TMP/validate.out"; abort "config-valid"
fi

# ---------------------------------------------------------------- campaign spec
log "publishing $CAMPAIGN (config/examples/promo.json without quiet hours) to wa.campaigns"
SPEC=$("$PY" -c '
import json, sys
s = json.load(open(sys.argv[1]))
s.get("schedule", {}).pop("quiet_hours", None)
print(json.dumps(s, separators=(",", ":"), ensure_ascii=False))' config/examples/promo.json)
if printf '%s' "$SPEC" | KT produce "$BROKER" wa.campaigns "$CAMPAIGN" >>"$TMP/kafka-tool.log" 2>&1; then
  note "$(tail -1 "$TMP/kafka-tool.log")"
else
  abort "spec-published" "(see kafka-tool.log)"
fi

# ---------------------------------------------------------------- daemon + audience
start_daemon() {
  "$BIN" run --config "$CFG" >>"$TMP/daemon.log" 2>&1 &
  PID_DAEMON=$!
  wait_port "$WPORT" 60 "$PID_DAEMON" || abort "daemon-started" "(webhook port $WPORT not listening within 60 s)"
}
log "starting wadispatch run"
start_daemon
log "importing config/examples/audience.csv for $CAMPAIGN"
if timeout 120 "$BIN" audience import --campaign "$CAMPAIGN" --config "$CFG" \
  config/examples/audience.csv >"$TMP/import.log" 2>&1; then
  check "audience-imported" 0 "($(grep -o 'produced [0-9]* records' "$TMP/import.log" | head -1))"
else
  cat "$TMP/import.log"; abort "audience-imported"
fi

# ---------------------------------------------------------------- campaign, with faults
log "waiting up to ${TIMEOUT} s for the campaign; broker restart at accepted > 2000, daemon SIGKILL at accepted > 5000"
start=$(date +%s)
broker_restarted=0 daemon_killed=0 daemon_died=0
broker_proof="(not restarted)" daemon_proof="(not killed)"
last_accepted=-1 stable_since=$start
while :; do
  now=$(date +%s)
  read -r accepted rejected dups recipients < <(stats || echo "-1 -1 -1 -1")
  printf '   t=%3ds accepted=%s rejected=%s recipients=%s duplicate_recipients=%s\n' \
    $((now - start)) "$accepted" "$rejected" "$recipients" "$dups"
  if ! kill -0 "$PID_DAEMON" 2>/dev/null; then
    wait "$PID_DAEMON" 2>/dev/null && rc=0 || rc=$?
    note "the daemon exited on its own (status $rc); see daemon.log"
    daemon_died=1
    break
  fi
  if [ "$broker_restarted" = 0 ] && [ "$accepted" -gt 2000 ]; then
    note "restarting the broker (SIG$BROKER_SIGNAL, then the same sqlite file and port)"
    old_broker=$PIDS_TANSU
    stop_pid "$PIDS_TANSU" "$BROKER_SIGNAL"
    gone=$(kill -0 "$old_broker" 2>/dev/null && echo 0 || echo 1)
    start_tansu
    # Restarted means: the old process is gone, a new one runs, mid-campaign.
    if [ "$gone" = 1 ] && [ "$PIDS_TANSU" != "$old_broker" ] && kill -0 "$PIDS_TANSU" 2>/dev/null &&
       [ "$accepted" -lt "$ELIGIBLE" ]; then
      broker_restarted=1
    fi
    broker_proof="(pid $old_broker gone: $gone, new pid $PIDS_TANSU, at accepted=$accepted of $ELIGIBLE)"
    note "broker back after $(( $(date +%s) - now )) s"
    # The spec published before the restart is still there: storage persisted.
    n=$(KT count "$BROKER" wa.campaigns 2>>"$TMP/kafka-tool.log" || echo "?")
    check "broker-persisted-across-restart" "$([ "$n" = 1 ] && echo 0 || echo 1)" "(wa.campaigns holds $n record(s) after the restart)"
  elif [ "$daemon_killed" = 0 ] && [ "$broker_restarted" = 1 ] && [ "$accepted" -gt 5000 ]; then
    note "killing the daemon with SIGKILL and starting it again once its group session expired"
    old_daemon=$PID_DAEMON
    kill -KILL "$old_daemon" 2>/dev/null || true
    wait "$old_daemon" 2>/dev/null && killed_rc=0 || killed_rc=$?
    # The killed member stays in the consumer group until its session times
    # out (session.timeout.ms, 10 s in this config). tansu 0.6.0 does not
    # always rebalance when such a member expires after a new one joined (the
    # newcomer then keeps an empty assignment), so the restart waits for the
    # expiry: the test is about wadispatch, not about that coordinator.
    sleep 15
    start_daemon
    # Killed means: it ended by SIGKILL (status 128 + 9), mid-campaign, and
    # another process took over.
    if [ "$killed_rc" = 137 ] && [ "$accepted" -lt "$ELIGIBLE" ] && [ "$PID_DAEMON" != "$old_daemon" ]; then
      daemon_killed=1
    fi
    daemon_proof="(pid $old_daemon ended with status $killed_rc at accepted=$accepted of $ELIGIBLE; new pid $PID_DAEMON)"
  fi
  if [ "$accepted" != "$last_accepted" ]; then
    last_accepted=$accepted stable_since=$now
  elif [ "$daemon_killed" = 1 ] && [ $((now - stable_since)) -ge 10 ] &&
       [ "$accepted" -ge $((ELIGIBLE - UNKNOWN_BOUND)) ]; then
    note "accepted stable for 10 s at $accepted"
    break
  fi
  # The restart waits for the killed member's session (10 s) to expire, so
  # a pause of about 15 s in the progress lines is expected.
  if [ $((now - stable_since)) -ge 120 ]; then
    note "no progress for 120 s: stalled"
    break
  fi
  if [ $((now - start)) -ge "$TIMEOUT" ]; then
    note "timed out after ${TIMEOUT} s"
    break
  fi
  sleep 1
done
check "broker-restarted-mid-campaign" $((1 - broker_restarted)) "$broker_proof"
check "daemon-killed-mid-campaign" $((1 - daemon_killed)) "$daemon_proof"
check "daemon-survived" "$daemon_died" "(the daemon must not exit by itself)"

# ---------------------------------------------------------------- invariants
read -r accepted rejected dups recipients < <(stats || echo "-1 -1 -1 -1")
check "no-duplicate-sends" "$([ "$dups" = 0 ] && echo 0 || echo 1)" \
  "(sandbox duplicate_recipients=$dups, accepted=$accepted, recipients=$recipients)"

log "stopping the daemon with SIGTERM (the embedded store is locked while it runs)"
if kill -0 "$PID_DAEMON" 2>/dev/null; then
  kill -TERM "$PID_DAEMON"
  deadline=$(( $(date +%s) + 30 ))
  while kill -0 "$PID_DAEMON" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
  if kill -0 "$PID_DAEMON" 2>/dev/null; then
    check "daemon-sigterm-exit" 1 "(still running 30 s after SIGTERM)"
    stop_pid "$PID_DAEMON" KILL
  else
    wait "$PID_DAEMON" && rc=0 || rc=$?
    check "daemon-sigterm-exit" "$rc" "(exit status $rc)"
  fi
else
  check "daemon-sigterm-exit" 1 "(the daemon was not running when SIGTERM was due)"
fi
PID_DAEMON=""

if ! "$BIN" report --help >/dev/null 2>&1; then
  abort "report-available" "($BIN has no 'report' subcommand)"
fi
if ! timeout 60 "$BIN" report --campaign "$CAMPAIGN" --summary --format json --config "$CFG" \
  >"$TMP/report.json" 2>"$TMP/report.log"; then
  cat "$TMP/report.log"; abort "report-ran"
fi
note "report: $(tr -d '\n' <"$TMP/report.json" | cut -c1-600)"
# One "NAME VALUE" per line from the report.
# The keys read are required: a report without them (empty, renamed) fails
# here instead of passing on defaults. A state absent from by_state has no
# contacts, so those counts default to 0.
if ! "$PY" - "$TMP/report.json" >"$TMP/report.vals" 2>"$TMP/report-parse.log" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if isinstance(r, list):  # a report of several campaigns: take ours
    r = next(c for c in r if c["campaign_id"] == "bday-2026-11")
s = r["by_state"]
ex = r["excluded_by_reason"]
openc = s.get("pending", 0) + s.get("claimed", 0) + s.get("deferred", 0)
print("staged", r["staged"])
print("open", openc)
print("unknown", s.get("unknown", 0))
print("excluded", sum(ex.values()))
print("invalid_phone", ex.get("invalid_phone", 0))
print("missing_coupon", ex.get("missing_variable:coupon", 0))
print("by_state", " ".join(f"{k}={v}" for k, v in sorted(s.items())))
EOF
then
  cat "$TMP/report-parse.log"; abort "report-parsed" "(the summary lacks a key the checks read; see report.json)"
fi
val() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$TMP/report.vals"; }
note "by_state: $(val by_state)"
staged=$(val staged) openc=$(val open) unknown=$(val unknown)
check "staged-count" "$([ "$staged" = "$STAGED_EXPECTED" ] && echo 0 || echo 1)" "(staged=$staged, expected $STAGED_EXPECTED)"
check "all-final" "$([ "$openc" = 0 ] && echo 0 || echo 1)" "(open=$openc: pending + claimed + deferred)"
check "unknown-bounded" "$([ "$unknown" -le "$UNKNOWN_BOUND" ] && echo 0 || echo 1)" \
  "(unknown=$unknown, bound $UNKNOWN_BOUND = max_in_flight_per_sender $MAX_IN_FLIGHT x $SENDERS)"
check "exclusions" "$([ "$(val invalid_phone)" = 5 ] && [ "$(val missing_coupon)" = 10 ] && echo 0 || echo 1)" \
  "(invalid_phone=$(val invalid_phone) of 5, missing_variable:coupon=$(val missing_coupon) of 10)"

# No eligible contact was lost: every one reached the sandbox, except unknown
# ones whose request never left before the SIGKILL.
check "every-eligible-sent" "$([ "$recipients" -le "$ELIGIBLE" ] && [ "$recipients" -ge $((ELIGIBLE - unknown)) ] && echo 0 || echo 1)" \
  "(sandbox recipients=$recipients, expected $((ELIGIBLE - unknown))..$ELIGIBLE)"

log "reading the dead-letter topic"
if n=$(KT count "$BROKER" wa.audience.dlq 2>>"$TMP/kafka-tool.log"); then
  check "dlq-empty" "$([ "$n" = 0 ] && echo 0 || echo 1)" "(wa.audience.dlq holds $n records)"
  [ "$n" = 0 ] || KT dump "$BROKER" wa.audience.dlq 10 2>&1 | sed 's/^/   /' || true
else
  check "dlq-empty" 1 "(could not read wa.audience.dlq; see kafka-tool.log)"
fi

[ "$FAILED" = 0 ] || show_logs
summary_and_exit
