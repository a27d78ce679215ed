#!/usr/bin/env bash
# Installs the Debian packages adstream needs to build, test and demo, if any
# are missing: with apt-get as root, through sudo otherwise.
set -euo pipefail

PACKAGES=(
  postgresql-15 postgresql-server-dev-15 libpq-dev
  librdkafka-dev pkg-config build-essential
  libavro-dev libcurl4-openssl-dev
  postgresql-15-cron postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl postgresql-15-partman
  libipc-run-perl libtest-simple-perl kcat
  clang libclang-rt-14-dev
  gnuplot-nox
  gdb                # test/t/166: blocks a worker in a call that does not watch for the postmaster
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "adstream: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
