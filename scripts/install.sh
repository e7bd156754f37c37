#!/usr/bin/env bash
# Installs privlink (`make install`): privlinkd and privlinkctl into PREFIX/bin, the README
# into PREFIX/share/doc/privlink, /etc/privlink/privlink.toml from the embedded default
# (never over an existing file), and privlinkd.service into /etc/systemd/system (then
# `systemctl daemon-reload` when systemd runs and DESTDIR is empty). Nothing is started:
# `systemctl enable --now privlinkd` does that.
#
#   scripts/install.sh [--prefix /usr/local] [--sysconfdir /etc] [--destdir DIR]
#                      [--bin-dir target/release]
set -euo pipefail
cd "$(dirname "$0")/.." || exit 2
PREFIX=/usr/local
ETC=/etc
DESTDIR=""
BIN=target/release
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift ;;
    --sysconfdir) ETC=$2; shift ;;
    --destdir) DESTDIR=$2; shift ;;
    --bin-dir) BIN=$2; shift ;;
    *) echo "install: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
for b in privlinkd privlinkctl; do
  [ -x "$BIN/$b" ] || { echo "install: $BIN/$b is missing: build first (make build)" >&2; exit 1; }
done
install -d "$DESTDIR$PREFIX/bin" "$DESTDIR$PREFIX/share/doc/privlink" "$DESTDIR$ETC/privlink" \
  "$DESTDIR$ETC/systemd/system"
install -m 0755 "$BIN/privlinkd" "$BIN/privlinkctl" "$DESTDIR$PREFIX/bin/"
install -m 0644 README.md "$DESTDIR$PREFIX/share/doc/privlink/README.md"
conf="$DESTDIR$ETC/privlink/privlink.toml"
if [ -e "$conf" ]; then
  echo "install: $conf exists, kept as it is"
else
  tmp=$(mktemp "$conf.XXXXXX")
  "$BIN/privlinkd" --print-default >"$tmp"
  chmod 0640 "$tmp"
  mv "$tmp" "$conf"
  echo "install: $conf written from the embedded default"
fi
sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@SYSCONFDIR@|$ETC|g" scripts/systemd/privlinkd.service \
  >"$DESTDIR$ETC/systemd/system/privlinkd.service"
chmod 0644 "$DESTDIR$ETC/systemd/system/privlinkd.service"
echo "install: $DESTDIR$ETC/systemd/system/privlinkd.service"
if [ -z "$DESTDIR" ] && [ "$ETC" = /etc ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
