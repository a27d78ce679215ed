#!/usr/bin/env bash
# layercheck: the files of src/ form layers, never a circle.
#
# A file depends on another when it includes the other's header
# (include/NAME.h belongs to src/NAME.c) or calls or reads a symbol the
# other's object defines.  Prints the dependency list and fails, naming the
# files, if any circle exists.  Run after the objects are built (make).
set -euo pipefail
cd "$(dirname "$0")/.."

edges=$(mktemp)
trap 'rm -f "$edges"' EXIT

declare -A defined_in
for o in src/*.o; do
  f=$(basename "$o" .o)
  while read -r sym; do defined_in[$sym]=$f; done < <(nm --defined-only -g "$o" | awk '{print $3}')
done

for c in src/*.c; do
  f=$(basename "$c" .c)
  # includes of our own headers
  for h in $(sed -n 's/^#include "\([a-z_]*\)\.h"/\1/p' "$c" "include/$f.h" 2>/dev/null | sort -u); do
    if [ "$h" != "$f" ] && [ -f "src/$h.c" ]; then echo "$f $h"; fi
  done
  # symbols used from other objects
  for sym in $(nm --undefined-only "src/$f.o" | awk '{print $2}'); do
    d=${defined_in[$sym]:-}
    if [ -n "$d" ] && [ "$d" != "$f" ]; then echo "$f $d"; fi
  done
done | sort -u > "$edges"

# Headers that are only headers (event_time.h) carry no code and no edges.
if ! tsort "$edges" > /dev/null 2> "$edges.err"; then
  echo "layercheck: src/ has a dependency circle:" >&2
  cat "$edges.err" >&2
  rm -f "$edges.err"
  exit 1
fi
rm -f "$edges.err"
echo "layercheck: $(wc -l < "$edges") dependencies among $(ls src/*.c | wc -l) files, no circle"
if [ -n "${LAYERS_VERBOSE:-}" ]; then
  awk '{deps[$1] = deps[$1] " " $2} END {for (f in deps) print f ":" deps[f]}' "$edges" | sort
fi
