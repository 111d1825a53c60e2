#!/usr/bin/env bash
# Builds a kernel the e2e tests boot in QEMU, with ublk built in, from Debian's kernel
# source package, and writes it to OUT_DIR. Needs root for apt-get.
#
#   scripts/build-test-kernel.sh OUT_DIR [6.1|7.3]
#
#   6.1 (default): the floor. linux-source-6.1 from Debian 12 (bookworm), the system's
#       own apt sources. Writes OUT_DIR/bzImage; ~20-40 min on 2 cores.
#   7.3: the current kernel. linux-source-7.3 from Debian 13's trixie-backports, fetched
#       through a private apt configuration (the same mirrors as this machine's Debian
#       sources, trixie-backports instead of bookworm) in a temporary directory, so the
#       system's apt setup is left alone. Writes OUT_DIR/bzImage-7.3; ~45 min.
#
# Config: the exact config of the shared test kernel beside the project when it exists
# (../shared/vm/kernel.config for 6.1, ../shared/vm/kernel-7.3.config for 7.3), carried
# to the source with `make olddefconfig`; otherwise x86_64 defconfig plus the fragment
# test/vm/ublk-test.config. OUT_DIR/<image>.config gets the config used. `npm test` boots
# ../shared/vm/bzImage-7.3 and ../shared/vm/bzImage (OUT_DIR=../shared/vm needs no
# variable; pick one with --kernel 7.3|6.1), or any one bzImage with
#   UBLK_VM_KERNEL=OUT_DIR/bzImage npm test
# The VM runner is ../shared/vm/run-in-vm or $UBLK_VM_RUNNER; it needs qemu-system-x86
# and busybox-static.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR [6.1|7.3]" >&2; exit 2; }
[[ $# -eq 1 || $# -eq 2 ]] || usage
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "$1")"
ver="${2:-6.1}"
case "$ver" in
  6.1) image=bzImage;     shared_config="$project/../shared/vm/kernel.config" ;;
  7.3) image=bzImage-7.3; shared_config="$project/../shared/vm/kernel-7.3.config" ;;
  *) echo "$0: unknown kernel version '$ver' (6.1 or 7.3)" >&2; usage ;;
esac
fragment="$project/test/vm/ublk-test.config"

if [[ $EUID -ne 0 ]]; then
  echo "$0: run as root (it installs build packages with apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils kmod dwarves \
  debian-archive-keyring >/dev/null

work="$(mktemp -d /tmp/ubloop-kernel.XXXXXX)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"   # apt-get download drops privileges to _apt and must reach it
cd "$work"
# apt-get download works without a deb-src line; the package carries the source tarball.
if [[ $ver == 6.1 ]]; then
  apt-get download linux-source-6.1
else
  # A private apt: this machine's Debian mirrors (from one-line and deb822 sources; other
  # archives such as NodeSource, security mirrors and dated snapshots carry no
  # trixie-backports) plus deb.debian.org, suite trixie-backports, with its own lists
  # and cache under $work.
  mkdir -p apt/lists/partial apt/cache/archives/partial apt/sources.list.d apt/preferences.d
  chown -R _apt:root apt/lists apt/cache/archives 2>/dev/null || true
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | sed -n 's/^URIs:[[:space:]]*//p; s/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\)[[:space:]].*/\2/p' \
      | tr ' ' '\n' | grep -E '^(https?|file)://.*/debian/?$' | grep -v -e security -e snapshot.debian.org
    echo http://deb.debian.org/debian
  } | sed 's:/*$::' | sort -u > apt/uris || true
  while read -r uri; do
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie-backports main"
  done < apt/uris > apt/sources.list
  echo "apt (private): $(tr '\n' ' ' < apt/uris)trixie-backports"
  A=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts="$work/apt/sources.list.d"
     -o Dir::Etc::Preferences="$work/apt/preferences" -o Dir::Etc::PreferencesParts="$work/apt/preferences.d"
     -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache"
     -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="")
  # One unreachable mirror must not stop the others; the download below says if none had it.
  apt-get "${A[@]}" update -qq || echo "$0: some trixie-backports indexes failed to download; trying with the rest" >&2
  apt-get "${A[@]}" download "linux-source-$ver" \
    || { echo "$0: linux-source-$ver not found in trixie-backports ($(tr '\n' ' ' < apt/uris))" >&2; exit 1; }
fi
dpkg-deb -x linux-source-"$ver"_*.deb pkg
tarball="$(ls pkg/usr/src/linux-source-"$ver"*.tar.xz | head -n1)"
tar xf "$tarball"
cd linux-source-"$ver"*/

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
cp arch/x86/boot/bzImage "$out/$image"
cp .config "$out/$image.config"
echo "built $out/$image ($(make -s kernelrelease))"
