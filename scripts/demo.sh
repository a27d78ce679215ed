#!/usr/bin/env bash
# make demo: a throwaway cluster, the embedded broker and the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

scripts/deps.sh
make -s all tools
install_extension
run_unprivileged /tmp/adstream-demo scripts/demo-run.sh
