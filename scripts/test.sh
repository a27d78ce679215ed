#!/usr/bin/env bash
# make test: everything CI runs, from a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

scripts/deps.sh
make -s
install_extension
prepare_soak_disk
run_unprivileged /tmp/adstream-test make -s test-run
