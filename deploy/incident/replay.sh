#!/usr/bin/env bash
# The incident, replayed end to end with the real `batchlock` binary, a real rake project
# (deploy/incident/Rakefile) and the DynamoDB test server:
#
#   (a) the 08:00 run of missing_images_check hangs; a manual run at 23:32 is skipped, and its
#       log names the holder (host, pid, job);
#   (b) the hung run is killed at its timeout (SIGTERM is ignored, SIGKILL after the grace) and
#       recorded as `timeout` in the history;
#   (c) the next scheduled run starts normally, with a higher fencing token;
#   (d) the three jobs, with different keys, run at the same time without blocking each other;
#   (e) the runbook: `batchlock stop` ends a hung run, `status`, `history`, `release --force`;
#   (f) bad input: unknown job, missing timeout where one is required, invalid table name,
#       broken config file, each with its documented exit code.
#
# Times of day are narrative: the jobs' timeouts are seconds (deploy/incident/batchlock.toml).
#
#   BATCHLOCK_TEST_DYNAMODB_ENDPOINT   the test server (`. scripts/moto.sh start` sets it)
#   BATCHLOCK_BIN                      the binary (default: target/debug/batchlock)
#
# Installs Debian's ruby and rake if `rake` is missing (needs root and apt-get). Creates its own
# table with `batchlock init`. Exits 0 when every check passed, 1 at the first failure (with
# the logs of the runs), 2 when something it needs is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${BATCHLOCK_BIN:-$root/target/debug/batchlock}"
endpoint="${BATCHLOCK_TEST_DYNAMODB_ENDPOINT:-}"

say() { printf '%s\n' "$*" >&2; }
missing() {
    say "replay.sh: $*"
    exit 2
}

# --- what the replay needs ------------------------------------------------------------------

[ -x "$bin" ] || missing "no batchlock binary at $bin: build it with \`cargo build -p batchlock-cli\` or set BATCHLOCK_BIN"
[ -n "$endpoint" ] || missing "BATCHLOCK_TEST_DYNAMODB_ENDPOINT is unset: start the test server with \`. scripts/moto.sh start\` (scripts/test.sh does this)"
command -v python3 >/dev/null || missing "python3 is needed to read batchlock's JSON output"
if ! command -v rake >/dev/null || ! command -v ruby >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "replay.sh: installing Debian's ruby and rake (first run only)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ruby rake; } >&2 \
            || missing "apt-get could not install ruby and rake"
    else
        missing "ruby and rake are needed: apt-get install ruby rake"
    fi
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/batchlock-incident.XXXXXX")"
background=()
cleanup() {
    local pid
    for pid in "${background[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Only what the test server needs: never a developer's real credentials or profile.
export AWS_ENDPOINT_URL="$endpoint" AWS_REGION=ap-northeast-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_DYNAMODB AWS_DEFAULT_REGION
unset ECS_CONTAINER_METADATA_URI_V4 BATCHLOCK_STORE BATCHLOCK_LEASE BATCHLOCK_TIMEOUT
unset BATCHLOCK_KILL_GRACE BATCHLOCK_CLOCK_SKEW BATCHLOCK_LOG_FORMAT BATCHLOCK_LOG
unset INCIDENT_HANG INCIDENT_WORK_SECONDS
export XDG_STATE_HOME="$tmp/state"
export BATCH_LOCK_TABLE="incident-$$-$(date +%s%N)"
export BATCHLOCK_CONFIG="$here/batchlock.toml"
# rake finds the Rakefile in the working directory.
cd "$here"

# --- checks -----------------------------------------------------------------------------------

checks=0
fail() {
    say ""
    say "FAIL: $*"
    local f
    for f in "$tmp"/*.out "$tmp"/*.err; do
        [ -s "$f" ] || continue
        say "---- ${f##*/}"
        tail -n 20 "$f" >&2
    done
    exit 1
}
pass() {
    checks=$((checks + 1))
    say "  ok  $*"
}
step() { say "" && say "== $*"; }

# bl NAME ARGS...: runs batchlock with ARGS, stdout/stderr to $tmp/NAME.out/.err, exit in $code.
bl() {
    local name="$1"
    shift
    code=0
    "$bin" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || code=$?
}
# bl_bg NAME ARGS...: the same in the background; its pid in $pid.
bl_bg() {
    local name="$1"
    shift
    "$bin" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    background+=("$pid")
}
expect_code() { # NAME WANT WHAT
    [ "$code" = "$2" ] || fail "$3: \`$1\` exited $code, expected $2"
    pass "$3 (exit $2)"
}
contains() { # FILE TEXT WHAT
    grep -qF -- "$2" "$tmp/$1" || fail "$3: $1 does not contain \`$2\`"
    pass "$3"
}
lacks() { # FILE TEXT WHAT
    if grep -qF -- "$2" "$tmp/$1"; then fail "$3: $1 contains \`$2\`"; fi
    pass "$3"
}
# json NAME EXPR: evaluates the Python expression EXPR with `d` = the JSON in $tmp/NAME.out.
json() {
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
        "$tmp/$1.out" "$2" || fail "cannot evaluate $2 on $1.out"
}
expect_json() { # NAME EXPR WANT WHAT
    local got
    got="$(json "$1" "$2")"
    [ "$got" = "$3" ] || fail "$4: $2 is \`$got\`, expected \`$3\` (in $1.out)"
    pass "$4"
}
# wait_for NAME TEXT SECONDS: until $tmp/NAME.out contains TEXT.
wait_for() {
    local deadline=$((SECONDS + $3))
    until grep -qF -- "$2" "$tmp/$1.out" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$1 did not print \`$2\` within $3 s"
        sleep 0.1
    done
}
# finish PID: waits for a background run, its exit in $code.
finish() {
    code=0
    wait "$1" || code=$?
}
now_ms() { date +%s%3N; }
field() { # NAME KEY: the value of KEY=... on the task's `started` line
    sed -n "s/.*: started .*\b$2=\([^ ]*\).*/\1/p" "$tmp/$1.out" | head -n 1
}

step "setup: the lock table, as \`batchlock init\` creates it (Terraform does the same in AWS)"
bl init init
expect_code init 0 "batchlock init creates $BATCH_LOCK_TABLE"
bl doctor doctor
expect_code doctor 0 "batchlock doctor finds the table healthy"

step "(a) 08:00: missing_images_check hangs; the manual run at 23:32 is skipped"
started_0800="$(now_ms)"
INCIDENT_HANG=1 bl_bg run-0800 run missing_images_check
hung="$pid"
wait_for run-0800 "missing_images:check_articles: started" 20
hung_task="$(field run-0800 pid)"
hung_token="$(field run-0800 token)"
# The manual run comes first, right after the task started: its 12 s timeout is running.
bl run-2332 run missing_images_check
expect_code run-2332 0 "the 23:32 manual run is skipped, not failed"
lacks run-2332.out "started" "the 23:32 run did not start rake"
contains run-2332.err "lock \`missing_images_check\` is held by" "the skip is logged"
contains run-2332.err "pid $hung " "the log names the holder's pid ($hung)"
contains run-2332.err "job=missing_images_check" "the log names the holder's job"
contains run-2332.err "token $hung_token" "the log names the holder's token"
kill -0 "$hung_task" 2>/dev/null || fail "the hung task $hung_task should still be running"
pass "the hung task is untouched by the skipped run"

bl status-held status missing_images_check --json
expect_json status-held 'd[0]["state"]' held "status shows missing_images_check held"
expect_json status-held 'd[0]["holder"]["pid"]' "$hung" "status names the 08:00 supervisor's pid as holder"
expect_json status-held 'd[0]["holder"]["details"]["job"]' missing_images_check "status names the job"
expect_json status-held 'd[0]["token"]' "$hung_token" "status shows the token the task received"

contains run-0800.out "key=missing_images_check" "the 08:00 task runs under the key missing_images_check"

bl run-2332-fail run missing_images_check --on-conflict fail
expect_code run-2332-fail 75 "with --on-conflict fail the same run exits 75"

step "(b) the hung run is killed at its timeout (12 s) and recorded as such"
finish "$hung"
elapsed=$(($(now_ms) - started_0800))
expect_code run-0800 124 "the 08:00 run ends with the timeout's exit code"
[ "$elapsed" -ge 12000 ] && [ "$elapsed" -lt 20000 ] \
    || fail "the hung run ended after ${elapsed} ms, expected its 12 s timeout + 1 s grace"
pass "the hung run ended after ${elapsed} ms (timeout 12 s, kill grace 1 s)"
contains run-0800.out "SIGTERM received, still stuck" "rake got SIGTERM first"
lacks run-0800.out "finished" "the hung task never finished on its own"
if kill -0 "$hung_task" 2>/dev/null; then fail "the hung task $hung_task survived its run"; fi
pass "the hung task (pid $hung_task) is gone: SIGKILL after the grace"

bl history-b history missing_images_check --json
expect_json history-b 'd[0]["outcome"]' timeout "history: the 08:00 run is recorded as timeout"
expect_json history-b 'd[0]["holder"]["pid"]' "$hung" "history: by the 08:00 supervisor"
expect_json history-b 'd[0]["token"]' "$hung_token" "history: with its token"
expect_json history-b '"maximum runtime of 12s" in d[0]["message"]' True "history: the message names the timeout"
expect_json history-b '[r["outcome"] for r in d[1:3]]' "['skipped', 'skipped']" "history: both manual runs are recorded as skipped"
expect_json history-b "all('pid $hung ' in r['message'] for r in d[1:3])" True "history: the skips name the holder"
bl status-free status missing_images_check --json
expect_json status-free 'd[0]["state"]' free "the lock is free again"

step "(c) the next scheduled run starts normally"
INCIDENT_WORK_SECONDS=0.5 bl run-next run missing_images_check
expect_code run-next 0 "the next run succeeds"
contains run-next.out "missing_images:check_articles: started" "it started rake"
contains run-next.out "missing_images:check_articles: finished" "rake finished"
next_token="$(field run-next token)"
[ "$next_token" -gt "$hung_token" ] || fail "fencing token $next_token is not above the hung run's $hung_token"
pass "its fencing token $next_token is above the hung run's $hung_token"
bl history-c history missing_images_check --json --limit 1
expect_json history-c 'd[0]["outcome"]' ok "history: the next run is recorded as ok"

step "(d) the three jobs, with different keys, run at the same time"
pids=()
for job in missing_images_check xml_articles sitemap_refresh; do
    INCIDENT_WORK_SECONDS=3 bl_bg "together-$job" run "$job"
    pids+=("$pid")
done
i=0
for job in missing_images_check xml_articles sitemap_refresh; do
    finish "${pids[$i]}"
    i=$((i + 1))
    expect_code "together-$job" 0 "$job succeeds"
    contains "together-$job.out" "finished" "$job ran to the end"
    lacks "together-$job.err" "is held by" "$job was not blocked"
done
latest_start=0
earliest_end=99999999999999
for job in missing_images_check xml_articles sitemap_refresh; do
    s="$(sed -n 's/.*: started .*at_ms=\([0-9]*\).*/\1/p' "$tmp/together-$job.out")"
    e="$(sed -n 's/.*: finished .*at_ms=\([0-9]*\).*/\1/p' "$tmp/together-$job.out")"
    [ -n "$s" ] && [ -n "$e" ] || fail "$job printed no start or end time"
    [ "$s" -gt "$latest_start" ] && latest_start="$s"
    [ "$e" -lt "$earliest_end" ] && earliest_end="$e"
done
[ "$latest_start" -lt "$earliest_end" ] \
    || fail "the jobs did not overlap: the last started at $latest_start, the first ended at $earliest_end"
pass "all three were running at once (last start $latest_start < first end $earliest_end)"
bl history-d history --json --limit 3
expect_json history-d 'sorted(r["key"] for r in d)' "['missing_images_check', 'sitemap_refresh', 'xml_articles']" "history: one run per key"
expect_json history-d 'sorted(set(r["outcome"] for r in d))' "['ok']" "history: all ok"

step "(e) the runbook: stop a hung run, read status and history, force-release"
INCIDENT_HANG=1 bl_bg hung-xml run xml_articles
hung_xml="$pid"
wait_for hung-xml "xml:articles: started" 20
bl stop stop xml_articles
expect_code stop 0 "batchlock stop xml_articles asks the holder to stop"
contains stop.out "pid $hung_xml" "stop names the holder"
finish "$hung_xml"
expect_code hung-xml 122 "the stopped run exits 122"
contains hung-xml.out "SIGTERM received, still stuck" "rake got SIGTERM, then SIGKILL"
bl history-e history xml_articles --json --limit 1
expect_json history-e 'd[0]["outcome"]' stopped "history: recorded as stopped"
bl stop-again stop xml_articles
expect_code stop-again 1 "stop on a free key says so"
contains stop-again.out "is not held" "and explains"
bl history-all history
expect_code history-all 0 "batchlock history lists every key's runs"
contains history-all.out "timeout" "the table shows the timed-out run"
bl status-all status
expect_code status-all 0 "batchlock status lists every key"
contains status-all.out "sitemap_refresh" "including sitemap_refresh"
bl release-noforce release xml_articles
expect_code release-noforce 64 "release without --force is refused"
bl release release xml_articles --force
expect_code release 0 "release --force on a free key is harmless"
contains release.out "lock was not held" "and says nothing was held"

step "(f) bad input: clear errors, documented exit codes"
bl unknown-job run no_such_job
expect_code unknown-job 64 "a job missing from the config is a usage error"
contains unknown-job.err "job \`no_such_job\` is not defined" "the error names the job"
contains unknown-job.err "missing_images_check, sitemap_refresh, xml_articles" "and lists the defined jobs"

printf 'require_timeout = true\n\n[jobs.sitemap_refresh]\ncommand = ["rake", "sitemap:refresh"]\n' \
    >"$tmp/no-timeout.toml"
BATCHLOCK_CONFIG="$tmp/no-timeout.toml" bl no-timeout run sitemap_refresh
expect_code no-timeout 64 "a job without timeout under require_timeout = true is refused"
contains no-timeout.err "has no maximum runtime" "the error says what is missing"
lacks no-timeout.out "started" "and nothing ran"
: >"$tmp/empty.toml"
BATCHLOCK_CONFIG="$tmp/empty.toml" bl no-timeout-flag run --key adhoc --require-timeout -- rake sitemap:refresh
expect_code no-timeout-flag 64 "--require-timeout without --timeout is refused"
lacks no-timeout-flag.out "started" "and nothing ran"

BATCH_LOCK_TABLE="w-rails/batch locks" bl bad-table run missing_images_check
expect_code bad-table 64 "an invalid table name is a usage error"
contains bad-table.err "DynamoDB table name \`w-rails/batch locks\` is invalid" "the error names the table"
lacks bad-table.out "started" "and nothing ran"

printf '[jobs.sitemap_refresh]\ncommand = ["rake", "sitemap:refresh"]\ntimeout = 5\n' >"$tmp/broken.toml"
BATCHLOCK_CONFIG="$tmp/broken.toml" bl broken-config run sitemap_refresh
expect_code broken-config 78 "an invalid config file is a configuration error"
contains broken-config.err "line 3" "the error names the line"

say ""
say "incident replay: $checks checks passed"
