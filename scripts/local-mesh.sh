#!/usr/bin/env bash
# Starts a `servent webcache` and N servent nodes on loopback sharing the given
# directories; the nodes find each other through the cache (no --peer), the way a
# fresh node finds the network through a public cache. Runs one search through the
# first node, and stops them all.
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

# Waits for a line "listening on ADDR" in $1 and prints ADDR.
listening() {
  local addr=
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$1")
    [ -n "$addr" ] && break
    sleep 0.05
  done
  echo "$addr"
}

# The hosts the cache lists (gtk-gnutella's /list4 form), one per line.
listed() {
  local body
  exec 3<>"/dev/tcp/${cache%:*}/${cache##*:}" || return 0
  printf 'GET /list4 HTTP/1.0\r\nHost: %s\r\n\r\n' "$cache" >&3
  body=$(cat <&3)
  exec 3<&-
  printf '%s\n' "$body" | tr -d '\r' | grep -E '^[0-9.]+:[0-9]+$' || true
}

# --config /dev/null: the mesh is made of these flags only, not the user's config
# file (a [run] json = true or firewalled = true would break it).
"$SERVENT" --config /dev/null -q webcache --listen 127.0.0.1:0 >"$work/webcache.out" 2>"$work/webcache.err" &
pids+=($!)
cache=$(listening "$work/webcache.out")
[ -n "$cache" ] || { echo "$0: the webcache did not start:" >&2; cat "$work/webcache.err" >&2; exit 1; }
echo "webcache: http://$cache/"

addrs=()
for ((i = 0; i < n; i++)); do
  # Every fifth node is an ultrapeer: it lists itself in the cache. The others
  # start in the default `auto` mode and join ultrapeers the cache names.
  if ((i % 5 == 0)); then role=(--mode ultrapeer); else role=(); fi
  dir=${dirs[$((i % ${#dirs[@]}))]}
  "$SERVENT" --config /dev/null -q run --listen 127.0.0.1:0 --share "$dir" --data-dir "$work/node$i" \
    --webcache "http://$cache/" "${role[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
  pids+=($!)
  addr=$(listening "$work/node$i.out")
  [ -n "$addr" ] || { echo "$0: node $i did not start:" >&2; cat "$work/node$i.err" >&2; exit 1; }
  addrs+=("$addr")
  echo "node $i: $addr sharing $dir"
  if ((i == 0)); then
    # The others can join once the first ultrapeer is listed.
    for _ in $(seq 100); do
      listed | grep -qx "$addr" && break
      sleep 0.05
    done
    listed | grep -qx "$addr" || { echo "$0: node 0 is not listed in the webcache" >&2; exit 1; }
  fi
done

words=${SEARCH:-}
if [ -z "$words" ]; then
  first=$(find "${dirs[0]}" -type f ! -name '.*' | head -n 1)
  words=$(basename "${first:-file}" | tr -c '[:alnum:]\n' ' ' | awk '{print $1}')
fi
# Every ultrapeer listed (at most 10 s), then a second for the leaves to join them.
for _ in $(seq 100); do
  [ "$(listed | wc -l)" -ge $(((n + 4) / 5)) ] && break
  sleep 0.1
done
sleep 1
echo "searching for: $words"
"$SERVENT" search --peer "${addrs[0]}" --timeout 3 "$words"
