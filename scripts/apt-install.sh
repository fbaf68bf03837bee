#!/usr/bin/env bash
# apt-install.sh PKG...: install Debian packages when running as root with apt-get (again
# after `apt-get update` when the package lists are stale). Exits 1, installing nothing,
# when it cannot: the caller says what the missing package costs and how to install it.
set -euo pipefail
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || exit 1
export DEBIAN_FRONTEND=noninteractive  # no prompt (tzdata) in an image build
echo "setup: installing $* (Debian)"
apt-get install -y -q "$@" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
