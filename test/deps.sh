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
# QEMU 10.0 from bookworm-backports, unpacked beside the system's 7.2 (not
# installed: apt would replace 7.2, which the other QEMU tests use). The
# migration test (test/qemu/migrate_linux_test.go) runs on it: QEMU 7.2
# corrupts a guest migrated under vhost-user RX traffic, 10.0 does not.
qemu10=${ARCNET_CACHE:-/var/cache/vhost-arcnet}/qemu-10.0
if ! "$qemu10/usr/bin/qemu-system-x86_64" --version 2>/dev/null | grep -q 'version 10\.0'; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to fetch QEMU 10.0 into $qemu10 (run: sudo $0)" >&2
    exit 1
  fi
  if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/vhost-arcnet-backports.list
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  dl=$(mktemp -d)
  chmod 755 "$dl" # apt-get download runs as _apt
  (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root qemu-system-x86/bookworm-backports \
    qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports >/dev/null)
  rm -rf "$qemu10.new" && mkdir -p "$qemu10.new"
  for deb in "$dl"/*.deb; do dpkg -x "$deb" "$qemu10.new"; done
  rm -rf "$dl"
  # Every library it links must be on this system (bookworm's are new enough).
  if ldd "$qemu10.new/usr/bin/qemu-system-x86_64" | grep 'not found' >&2; then
    echo "deps: QEMU 10.0 needs libraries this system lacks (above)" >&2
    exit 1
  fi
  rm -rf "$qemu10" && mv "$qemu10.new" "$qemu10"
  echo "deps: $("$qemu10/usr/bin/qemu-system-x86_64" --version | head -n 1) in $qemu10" >&2
fi
go mod download
echo "deps: ok" >&2
