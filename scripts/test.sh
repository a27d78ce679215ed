#!/usr/bin/env bash
# make test: everything CI runs, from a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

scripts/deps.sh
make -s
install_extension
prepare_soak_disk
status=0
run_unprivileged /tmp/adstream-test make -s test-run || status=$?
if [ "$status" -ne 0 ]; then
  # CI shows only the end of the output: repeat there why each TAP file failed
  # (its log ends with the failed assertion or the message it died with).
  for log in /tmp/adstream-test/tmp_check/log/regress_log_* tmp_check/log/regress_log_*; do
    [ -f "$log" ] || continue
    grep -qE 'not ok [0-9]|# Looks like you|Bail out| at test/(t|perl)/[^ ]+ line [0-9]+' "$log" || continue
    echo "==== last lines of $log"
    tail -n 25 "$log"
  done
  [ -f /tmp/adstream-test/regression.diffs ] && head -n 60 /tmp/adstream-test/regression.diffs
  exit "$status"
fi
