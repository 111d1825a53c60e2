#!/usr/bin/env bash
# Build the Linux kernel's own ublk reference server, kublk
# (tools/testing/selftests/ublk/ in Debian 13's linux-source-7.3), so the
# benchmark can run it as a peer of ubloop.
#
#   bench/build-kublk.sh OUT_DIR        -> OUT_DIR/kublk
#
# Environment:
#   KUBLK_SRC=DIR   an already-extracted linux-source-7.3 tree (needs at least
#                   tools/testing/selftests/ublk/, include/uapi/linux/ and
#                   scripts/headers_install.sh + scripts/unifdef.c); skips the
#                   167 MB download. Missing pieces make the script fall back to
#                   the download.
#   KUBLK_LIBURING=system|trixie   force the liburing choice (default: try the
#                   system's first, fall back to trixie's).
#
# Runs as root on Debian 12 with the packages of .ci/run (gcc, make,
# liburing-dev 2.3, ...). Nothing is installed system-wide: Debian 13 packages
# are fetched with a private apt configuration (this machine's own mirrors,
# trixie suites), the same way ../shared/vm/build-kernel.sh fetches the 7.3
# kernel source, and unpacked with dpkg-deb -x into OUT_DIR.
#
# How kublk is built (what the selftest Makefile does, minus kbuild):
#   * 7.3's uapi headers that kublk needs and Debian 12's linux-libc-dev (6.1)
#     lacks or has too old (linux/{ublk_cmd,io_uring,fs,blkdev}.h,
#     linux/io_uring/*.h) are run through the kernel's own
#     scripts/headers_install.sh into OUT_DIR/include, first on the include path;
#     every other header comes from the system.
#   * -D_GNU_SOURCE, as tools/testing/selftests/lib.mk adds.
#   * liburing: the system's 2.3 compiles but lacks io_uring_setup_buf_ring /
#     io_uring_free_buf_ring (2.4+), so normally trixie's liburing-dev (2.9) is
#     unpacked into OUT_DIR/prefix and its liburing.a is linked statically: the
#     binary then needs only libc and runs unchanged in the test VM's guest.
set -euo pipefail
shopt -s inherit_errexit

out="$(realpath -m "${1:?usage: build-kublk.sh OUT_DIR}")"
ver=7.3
mkdir -p "$out"
work="$out/work"                 # scratch space, removed on exit
rm -rf "$work"; mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
log() { echo "build-kublk: $*" >&2; }

# --- private apt configuration (as build-kernel.sh): this machine's mirrors,
# Debian 13 suites, state and cache under $work/apt. Set up lazily, once.
apt_ready=
A=()
private_apt() {
  [[ -n $apt_ready ]] && return 0
  local apt="$work/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  # (either file may be absent: a missing one must not fail the pipeline)
  { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } \
    | sed -n 's/^URIs: *//p; s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' | sort -u > "$apt/uris"
  while read -r uri; do
    case "$uri" in
      *security*) echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie-security main" ;;
      *) echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main"
         echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie-backports main" ;;
    esac
  done < "$apt/uris" > "$apt/sources.list"
  A=(-o Dir::Etc::sourcelist="$apt/sources.list" -o Dir::Etc::sourceparts=- \
     -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache")
  log "apt-get update (private trixie configuration)"
  apt-get "${A[@]}" update -qq
  apt_ready=1
}
# Download one package's .deb into $work/debs; sets $deb to its path.
fetch_deb() {
  private_apt
  mkdir -p "$work/debs"
  # (apt warns that it downloads unsandboxed as root: harmless, silenced)
  (cd "$work/debs" && apt-get "${A[@]}" download "$1" 2>/dev/null >&2)
  deb="$(ls "$work/debs/$1"_*.deb | head -n1)"
  log "fetched $(basename "$deb")"
}

# --- (a) the kernel source: KUBLK_SRC, or linux-source-7.3 from trixie-backports.
# Only the few paths needed are taken out of the 1.5 GB tarball.
need=(tools/testing/selftests/ublk include/uapi/linux scripts/headers_install.sh scripts/unifdef.c)
check=(tools/testing/selftests/ublk/kublk.c include/uapi/linux/io_uring.h include/uapi/linux/fs.h
       include/uapi/linux/blkdev.h include/uapi/linux/ublk_cmd.h "${need[@]:2}")
src="${KUBLK_SRC:-}"
if [[ -n $src ]]; then
  for p in "${check[@]}"; do
    [[ -e $src/$p ]] || { log "KUBLK_SRC=$src lacks $p; downloading instead"; src=; break; }
  done
fi
if [[ -z $src ]]; then
  fetch_deb "linux-source-$ver"
  srcdesc="linux-source-$ver $(dpkg-deb -f "$deb" Version) (trixie-backports)"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" "./usr/src/linux-source-$ver.tar.xz"
  rm -f "$deb"
  # xz-utils is only "standard" priority; without it, python3's lzma unpacks.
  if command -v xz >/dev/null; then unxz=(xz -dc); else
    unxz=(python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer, 1 << 20)')
  fi
  "${unxz[@]}" "$work/usr/src/linux-source-$ver.tar.xz" \
    | tar -x -C "$work" "${need[@]/#/linux-source-$ver/}"
  rm -f "$work/usr/src/linux-source-$ver.tar.xz"
  src="$work/linux-source-$ver"
fi
src="$(realpath "$src")"
srcdesc="${srcdesc:-$src (KUBLK_SRC)}"
log "kernel source: $srcdesc"

# --- 7.3 uapi headers, processed exactly as 'make headers_install' would.
inc="$out/include"
rm -rf "$inc"; mkdir -p "$inc/linux/io_uring" "$work/hdr/scripts"
gcc -O2 -o "$work/hdr/scripts/unifdef" "$src/scripts/unifdef.c"   # headers_install.sh runs ./scripts/unifdef
hdrs=(ublk_cmd.h io_uring.h fs.h blkdev.h)
for f in "$src"/include/uapi/linux/io_uring/*.h; do hdrs+=("io_uring/$(basename "$f")"); done
for h in "${hdrs[@]}"; do
  (cd "$work/hdr" && sh "$src/scripts/headers_install.sh" "$src/include/uapi/linux/$h" "$inc/linux/$h")
done
log "uapi headers from $ver: ${hdrs[*]} -> $inc/linux"

# --- (b)+(c) compile. kublk = every .c of the directory but the standalone
# metadata_size.c (as the selftest Makefile says).
kdir="$src/tools/testing/selftests/ublk"
srcs=()
for f in "$kdir"/*.c; do [[ $(basename "$f") == metadata_size.c ]] || srcs+=("$f"); done
cflags=(-O3 -Wall -D_GNU_SOURCE -I "$inc")
try_build() {  # try_build LABEL ARGS...: echo the command, run it, log to $work
  local label=$1; shift
  local cmd=(gcc "${cflags[@]}" "$@")
  log "[$label] ${cmd[*]}"
  if "${cmd[@]}" >"$work/$label.log" 2>&1; then
    cat "$work/$label.log" >&2; return 0
  fi
  log "[$label] failed:"; tail -n 15 "$work/$label.log" >&2; return 1
}

choice="${KUBLK_LIBURING:-auto}"
built=
if [[ $choice == auto || $choice == system ]]; then
  log "trying the system liburing ($(dpkg-query -W -f='${Version}' liburing-dev 2>/dev/null || echo '?'))"
  if try_build system -o "$out/kublk" "${srcs[@]}" -lpthread -lm -luring; then
    built="system liburing-dev $(dpkg-query -W -f='${Version}' liburing-dev 2>/dev/null), shared"
  fi
fi
if [[ -z $built && $choice != system ]]; then
  # trixie's liburing-dev ships liburing.a: link it statically, so the binary
  # needs no private .so (nor rpath) at run time.
  prefix="$out/prefix"
  rm -rf "$prefix"
  fetch_deb liburing-dev; ldeb="$deb"
  dpkg-deb -x "$ldeb" "$prefix"
  lver="$(dpkg-deb -f "$ldeb" Version)"
  liba="$(find "$prefix" -name liburing.a | head -n1)"
  [[ -n $liba ]] || { log "no liburing.a in $(basename "$ldeb")"; exit 1; }
  # -I order: 7.3 uapi first (its linux/io_uring.h wins over liburing's
  # bundled liburing/io_uring.h, same include guard), then liburing's headers.
  if try_build trixie -I "$prefix/usr/include" -o "$out/kublk" "${srcs[@]}" "$liba" -lpthread -lm; then
    built="trixie liburing-dev $lver, static ($liba)"
  fi
fi
[[ -n $built ]] || { log "could not build kublk"; exit 1; }

log "built $out/kublk from $srcdesc with $built"
"$out/kublk" --help 2>&1 | head -n 1 >&2 || true
echo "$out/kublk"
