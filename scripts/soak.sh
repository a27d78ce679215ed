#!/usr/bin/env bash
# make soak: the long randomized fault-injection soak (test/t/170_soak.pl).
#   make soak SOAK_SECONDS=1800 SOAK_SEED=12345 [SOAK_RATE=... SOAK_FAULT_GAP=... SOAK_ACTION_GAP=...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

export SOAK_SECONDS=${SOAK_SECONDS:-1800}
scripts/deps.sh
make -s
install_extension
prepare_soak_disk
run_unprivileged /tmp/adstream-soak make -s tapcheck PROVE_TESTS=test/t/170_soak.pl
