#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine, only what is
# missing. Idempotent; needs root (apt-get) when something is missing.
set -euo pipefail

# command -> Debian package that provides it
declare -A need=(
  [qemu-system-x86_64]=qemu-system-x86   # boots the test guests (TCG)
  [busybox]=busybox-static               # the guests' userland (static, copied into the initramfs)
  [dpdk-testpmd]=dpdk-dev                # net_virtio_user: an independent vhost-user frontend; net_vhost: speed reference
  [qemu-aarch64-static]=qemu-user-static # runs the arm64 unit tests
  [lz4]=lz4                              # unpacks the cloud kernel's vmlinux
  [xz]=xz-utils
  [cpio]=cpio
  [readelf]=binutils
  [ip]=iproute2
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# dpdk-testpmd also needs the virtio and vhost PMDs, which are separate packages.
for lib in librte-net-vhost23 librte-net-virtio23 librte-mempool-ring23; do
  dpkg -s "$lib" >/dev/null 2>&1 || missing+=("$lib")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to install ${missing[*]} (run: sudo $0)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
go mod download
echo "deps: ok" >&2
