#!/usr/bin/env bash
# Builds the kernel the e2e tests boot in QEMU (Linux 6.1 with ublk built in) from
# Debian's linux-source-6.1 package, and writes OUT_DIR/bzImage. Needs root for
# apt-get; takes ~20-40 min on 2 cores.
#
#   scripts/build-test-kernel.sh OUT_DIR
#
# Config: ../shared/vm/kernel.config beside the project when it exists (the exact
# config of the shared test kernel), otherwise x86_64 defconfig plus the fragment
# test/vm/ublk-test.config. Then run the tests with
#   UBLK_VM_KERNEL=OUT_DIR/bzImage npm test
# (OUT_DIR=../shared/vm needs no variable). The VM runner is ../shared/vm/run-in-vm
# or $UBLK_VM_RUNNER; it needs qemu-system-x86 and busybox-static.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "$1")"
fragment="$project/test/vm/ublk-test.config"
shared_config="$project/../shared/vm/kernel.config"

if [[ $EUID -ne 0 ]]; then
  echo "$0: run as root (it installs build packages with apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils kmod dwarves >/dev/null

work="$(mktemp -d /tmp/ubloop-kernel.XXXXXX)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"   # apt-get download drops privileges to _apt and must reach it
cd "$work"
# apt-get download works without a deb-src line; the package carries the source tarball.
apt-get download linux-source-6.1
dpkg-deb -x linux-source-6.1_*.deb pkg
tarball="$(ls pkg/usr/src/linux-source-6.1*.tar.xz | head -n1)"
tar xf "$tarball"
cd linux-source-6.1*/

if [[ -r "$shared_config" ]]; then
  echo "config: $shared_config"
  cp "$shared_config" .config
  make -s olddefconfig
else
  echo "config: x86_64 defconfig + $fragment"
  make -s x86_64_defconfig
  scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null
  make -s olddefconfig
fi

missing=0
for opt in BLK_DEV_UBLK IO_URING BLK_DEV_LOOP CUSE NET_9P_VIRTIO 9P_FS OVERLAY_FS EXT4_FS XFS_FS DEVTMPFS VIRTIO_BLK; do
  if ! grep -qx "CONFIG_$opt=y" .config; then
    echo "$0: CONFIG_$opt is not built in after configuration" >&2
    missing=1
  fi
done
[[ $missing -eq 0 ]] || exit 1

make -s -j"$(nproc)" bzImage
mkdir -p "$out"
cp arch/x86/boot/bzImage "$out/bzImage"
cp .config "$out/bzImage.config"
echo "built $out/bzImage ($(make -s kernelrelease))"
