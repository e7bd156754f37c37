#!/usr/bin/env bash
# Installs everything privlink needs to build, test and run its demo on Debian 12.
# Idempotent: packages already present are not reinstalled, apt lists are refreshed at
# most once a day.
#   scripts/install-deps.sh [--peers]
# --peers: also what `scripts/bench.sh --peers` runs beside privlinkd (Open vSwitch with
# DPDK); only the benchmark needs it, so `make deps` / `make test` do not install it. The
# package's own service is not what the benchmark uses: it runs a private instance.
set -euo pipefail
PEERS=0
for a in "$@"; do
  case "$a" in
    --peers) PEERS=1 ;;
    *) echo "install-deps: unknown argument $a (--peers)" >&2; exit 2 ;;
  esac
done

PACKAGES=(
  # DPDK 22.11 runtime, headers, testpmd
  dpdk dpdk-dev libdpdk-dev
  # bindgen and the C shim
  libclang-dev clang pkg-config build-essential
  # demo and end-to-end tests: namespaces, real clients and servers, raw frames
  iproute2 iputils-ping python3 curl procps kmod util-linux
  # net_pcap virtual devices and capture files
  libpcap-dev
  # [cluster]: the fleet's configuration store (tests start their own on loopback)
  etcd-server etcd-client
  # make install's unit: the tests check it with systemd-analyze verify
  systemd
)
if [ "$PEERS" = 1 ]; then
  # ovs-vswitchd-dpdk (an alternative of ovs-vswitchd), ovsdb-server and the ovs-* tools,
  # built against the same DPDK 22.11
  PACKAGES+=(openvswitch-switch-dpdk)
fi

need=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    need+=("$p")
  fi
done

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages (${need[*]}); run as root or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  stamp=/var/lib/apt/periodic/privlink-update-stamp
  if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
    apt-get update -qq
    mkdir -p "$(dirname "$stamp")" && touch "$stamp"
  fi
  echo "install-deps: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
pkg-config --exists libdpdk || { echo "install-deps: libdpdk not visible to pkg-config" >&2; exit 1; }
echo "install-deps: DPDK $(pkg-config --modversion libdpdk), $(cargo --version)"
