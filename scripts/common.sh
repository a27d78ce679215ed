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
  (cd "$dir" && runuser -u "$ADSTREAM_USER" -- env CI="${CI:-}" PATH="$PATH" "$@")
}

install_extension() {
  if [ "$(id -u)" -ne 0 ]; then sudo make install >/dev/null; else make install >/dev/null; fi
}
