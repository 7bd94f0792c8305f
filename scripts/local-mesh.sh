#!/usr/bin/env bash
# Starts N servent nodes on loopback sharing the given directories, joins them in a
# mesh, runs one search through the first node, and stops them all.
#
#   scripts/local-mesh.sh N DIR [DIR...]
#
# Directories are dealt to the nodes in turn (node i shares DIR[i mod count]).
# SEARCH="words" chooses the search (default: the first word of the first shared
# file's name); SERVENT=path/to/servent chooses the binary (default: build it).
set -euo pipefail

if [ $# -lt 2 ] || ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
  echo "usage: $0 N DIR [DIR...]" >&2
  exit 2
fi
n=$1; shift
dirs=("$@")
for d in "${dirs[@]}"; do
  [ -d "$d" ] || { echo "$0: not a directory: $d" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${SERVENT:-}" ]; then
  (cd "$here" && cargo build --release --quiet)
  SERVENT=$here/target/release/servent
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/servent-mesh.XXXXXX")
pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT

addrs=()
for ((i = 0; i < n; i++)); do
  peers=()
  # Every fifth node is an ultrapeer, chained to the one before it; the others
  # start in the default `auto` mode and join their group's ultrapeer (and the
  # first) as leaves.
  if ((i % 5 == 0)); then
    role=(--mode ultrapeer)
    if ((i > 0)); then peers+=(--peer "${addrs[$((i - 5))]}"); fi
  else
    role=()
    peers+=(--peer "${addrs[$((i - i % 5))]}")
    if ((i >= 5)); then peers+=(--peer "${addrs[0]}"); fi
  fi
  dir=${dirs[$((i % ${#dirs[@]}))]}
  # --config /dev/null: the mesh is made of these flags only, not the user's
  # config file (a [run] json = true or firewalled = true would break it).
  "$SERVENT" --config /dev/null -q run --listen 127.0.0.1:0 --share "$dir" --data-dir "$work/node$i" \
    "${role[@]}" "${peers[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
  pids+=($!)
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$work/node$i.out")
    [ -n "$addr" ] && break
    sleep 0.05
  done
  [ -n "$addr" ] || { echo "$0: node $i did not start:" >&2; cat "$work/node$i.err" >&2; exit 1; }
  addrs+=("$addr")
  echo "node $i: $addr sharing $dir"
done

words=${SEARCH:-}
if [ -z "$words" ]; then
  first=$(find "${dirs[0]}" -type f ! -name '.*' | head -n 1)
  words=$(basename "${first:-file}" | tr -c '[:alnum:]\n' ' ' | awk '{print $1}')
fi
sleep 1
echo "searching for: $words"
"$SERVENT" search --peer "${addrs[0]}" --timeout 3 "$words"
