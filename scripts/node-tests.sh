#!/usr/bin/env bash
# Node's own tests (test/common, test/fixtures and the test/parallel cases the conformance
# runner uses: test-net-*, test-http-*, test-https-*, test-tls-*, test-cluster-*,
# test-child-process-fork-net*), taken from Debian's
# `nodejs` source package of a release that ships Node 20 (trixie: 20.19.x), the way the
# project gets them: `apt-get source --download-only nodejs`, through a private apt
# configuration (its own sources, lists and cache under the cache directory; the system's
# sources and lists are not touched), then only those paths are extracted from the upstream
# ("orig") tarball. Debian's patches (debian.tar.xz) are not applied: the tests are
# upstream's.
#
# Prints the tree's path (a Node source tree layout: <tree>/test/common/index.js) on stdout;
# progress goes to stderr. The tree is cached: a later run prints it at once, without the
# network. --refresh fetches again (e.g. after a Debian update).
#
#   scripts/node-tests.sh [--refresh]
#
# Environment:
#   SOFTRDMA_NODE_TESTS_CACHE   cache directory (default /var/cache/softrdma/node-tests when
#                               writable, else ${XDG_CACHE_HOME:-~/.cache}/softrdma/node-tests)
#   SOFTRDMA_NODE_TESTS_SUITE   Debian suite (default trixie)
#   SOFTRDMA_NODE_TESTS_MIRROR  archive (default http://deb.debian.org/debian)
#   SOFTRDMA_NODE_TESTS_TRUSTED=1  accept an unsigned archive (only for a local stand-in)
# Exit status: 0 with the path printed, 3 when the tests cannot be had (no apt-get, no
# network, no such package); nothing half-done is left in the cache then.
set -euo pipefail

refresh=0
case "${1:-}" in
  --refresh) refresh=1 ;;
  '') ;;
  *) echo "usage: $0 [--refresh]" >&2; exit 2 ;;
esac

suite="${SOFTRDMA_NODE_TESTS_SUITE:-trixie}"
mirror="${SOFTRDMA_NODE_TESTS_MIRROR:-http://deb.debian.org/debian}"
if [ -n "${SOFTRDMA_NODE_TESTS_CACHE:-}" ]; then
  cache="$SOFTRDMA_NODE_TESTS_CACHE"
elif mkdir -p /var/cache/softrdma 2>/dev/null && [ -w /var/cache/softrdma ]; then
  cache=/var/cache/softrdma/node-tests
else
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/softrdma/node-tests"
fi
tree="$cache/$suite"
stamp="$tree/.softrdma-source"

if [ "$refresh" = 0 ] && [ -f "$stamp" ] && [ -f "$tree/test/common/index.js" ]; then
  echo "node tests: cached, $(cat "$stamp")" >&2
  echo "$tree"
  exit 0
fi

fail() { echo "node tests: cannot fetch Node's tests: $*" >&2; rm -rf "$work"; exit 3; }
command -v apt-get >/dev/null 2>&1 || { echo "node tests: cannot fetch Node's tests: no apt-get" >&2; exit 3; }
for tool in tar xz sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "node tests: cannot fetch Node's tests: no $tool" >&2; exit 3; }
done

mkdir -p "$cache"
work="$(mktemp -d "$cache/.fetch.XXXXXX")"
start=$SECONDS
mkdir -p "$work/sources.list.d" "$work/lists/partial" "$work/cache/archives/partial" "$work/dl" "$work/tree"
trusted=""
[ "${SOFTRDMA_NODE_TESTS_TRUSTED:-0}" = 1 ] && trusted="Trusted: yes"
cat > "$work/sources.list.d/node-tests.sources" <<EOF
Types: deb-src
URIs: $mirror
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
$trusted
EOF
apt=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/sources.list.d"
     -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
     -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$work/sources.list.d"
     -o "APT::Sandbox::User=root" -o "Acquire::Languages=none" -o "Debug::NoLocking=1")

echo "node tests: apt-get update ($suite deb-src from $mirror, private lists)" >&2
apt-get "${apt[@]}" update -q >"$work/update.log" 2>&1 || fail "apt-get update: $(tail -3 "$work/update.log" | tr '\n' ' ')"
version="$(apt-cache "${apt[@]}" showsrc nodejs 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)"
[ -n "$version" ] || fail "no nodejs source package in $suite"
upstream="${version%-*}"        # 20.19.2+dfsg-1+deb13u3 -> 20.19.2+dfsg
upstream="${upstream#*:}"
orig="nodejs_${upstream}.orig.tar.xz"
# The orig tarball's checksum from the index (showsrc prints every version's paragraph).
want="$(apt-cache "${apt[@]}" showsrc nodejs 2>/dev/null | awk -v v="$version" -v f="$orig" '
  /^Version: / {ver = $2} /^Checksums-Sha256:/ {on = 1; next} /^[^ ]/ {on = 0}
  on && ver == v && $3 == f {print $1; exit}')"
[ -n "$want" ] || fail "nodejs $version lists no $orig"

echo "node tests: apt-get source --download-only nodejs=$version" >&2
# apt-get also fetches the .dsc and Debian's patch tarball; only the upstream tarball is
# needed, so a mirror that lacks the others (it happens with partial mirrors) is no failure.
(cd "$work/dl" && apt-get "${apt[@]}" source --download-only -q "nodejs=$version") >"$work/source.log" 2>&1 \
  || echo "node tests: apt-get source: $(grep -E '^(E|W):' "$work/source.log" | head -3 | tr '\n' ' ')(continuing with the upstream tarball)" >&2
[ -f "$work/dl/$orig" ] || fail "apt-get source did not fetch $orig: $(grep -E '^E:' "$work/source.log" | head -3 | tr '\n' ' ')"
got="$(sha256sum "$work/dl/$orig" | cut -d' ' -f1)"
[ "$got" = "$want" ] || fail "$orig: sha256 $got, the archive's index says $want"

echo "node tests: extracting test/common, test/fixtures, test/parallel/test-{net,http,https,tls,cluster}-*, test-child-process-fork-net* from $orig" >&2
tar -xJf "$work/dl/$orig" -C "$work/tree" --strip-components=1 --wildcards --no-same-owner \
  '*/test/common/*' '*/test/fixtures/*' \
  '*/test/parallel/test-net-*' '*/test/parallel/test-http-*' '*/test/parallel/test-https-*' '*/test/parallel/test-tls-*' \
  '*/test/parallel/test-cluster-*' '*/test/parallel/test-child-process-fork-net*' \
  2>"$work/tar.log" || true   # the tarball's checksum is verified: tar fails only on a pattern that matched nothing
[ -f "$work/tree/test/common/index.js" ] || fail "$orig has no test/common/index.js: $(tr '\n' ' ' < "$work/tar.log")"
grep -E 'Not found in archive' "$work/tar.log" | sed 's/^/node tests: (not in this release) /' >&2 || true
echo "nodejs $version ($suite), $orig sha256 $got, fetched $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$work/tree/.softrdma-source"

rm -rf "$tree"
mv "$work/tree" "$tree"
rm -rf "$work"
echo "node tests: $(find "$tree/test/parallel" -name 'test-*' | wc -l) cases of nodejs $version in $tree ($((SECONDS - start)) s)" >&2
echo "$tree"
