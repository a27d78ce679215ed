# Shared by test.sh and demo.sh: PostgreSQL refuses to run as root, so when we
# are root the work is done by an unprivileged user in a copy of the tree it
# can read and write.
ADSTREAM_USER=${ADSTREAM_USER:-adstream}

# run_unprivileged DIR CMD...: copy the tree to DIR (owned by the user) and run CMD there.
run_unprivileged() {
  local dir=$1; shift
  if [ "$(id -u)" -ne 0 ]; then
    "$@"
    return
  fi
  id -u "$ADSTREAM_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$ADSTREAM_USER"
  rm -rf "$dir"
  mkdir -p "$dir"
  tar --exclude=./.git --exclude=./tmp_check --exclude=./demo_data -cf - . | tar -xf - -C "$dir"
  chown -R "$ADSTREAM_USER": "$dir"
  (cd "$dir" && runuser -u "$ADSTREAM_USER" -- env CI="${CI:-}" PATH="$PATH" \
    ADSTREAM_SOAK_DISK="${ADSTREAM_SOAK_DISK:-}" SOAK_SECONDS="${SOAK_SECONDS:-}" SOAK_SEED="${SOAK_SEED:-}" \
    SOAK_RATE="${SOAK_RATE:-}" SOAK_FAULT_GAP="${SOAK_FAULT_GAP:-}" SOAK_ACTION_GAP="${SOAK_ACTION_GAP:-}" "$@")
}

install_extension() {
  if [ "$(id -u)" -ne 0 ]; then sudo make install >/dev/null; else make install >/dev/null; fi
}

# prepare_soak_disk: the soak's disk_full fault needs a small filesystem of
# its own for the database's tablespace.  Mounting needs root (and, in a
# container, CAP_SYS_ADMIN); when it is not possible the soak runs without
# that fault and says why.  Sets ADSTREAM_SOAK_DISK on success.
SOAK_DISK_DIR=${SOAK_DISK_DIR:-/tmp/adstream-soak-disk}
SOAK_DISK_SIZE=${SOAK_DISK_SIZE:-512m}
prepare_soak_disk() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "soak: not root, cannot mount a small filesystem; the disk_full fault is disabled" >&2
    return 0
  fi
  id -u "$ADSTREAM_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$ADSTREAM_USER"
  mkdir -p "$SOAK_DISK_DIR"
  if ! mountpoint -q "$SOAK_DISK_DIR"; then
    if ! mount -t tmpfs -o "size=$SOAK_DISK_SIZE,mode=0700" tmpfs "$SOAK_DISK_DIR" 2>/tmp/adstream-soak-mount.err; then
      echo "soak: cannot mount a tmpfs at $SOAK_DISK_DIR ($(cat /tmp/adstream-soak-mount.err)); the disk_full fault is disabled" >&2
      return 0
    fi
  fi
  chown "$ADSTREAM_USER": "$SOAK_DISK_DIR"
  chmod 0700 "$SOAK_DISK_DIR"
  export ADSTREAM_SOAK_DISK=$SOAK_DISK_DIR
}
