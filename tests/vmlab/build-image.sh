#!/usr/bin/env bash
# Builds the VM lab's node image from Debian packages only: the kernel of `linux-image-amd64`
# (downloaded with `apt-get download` and unpacked with `dpkg-deb -x`, never installed on the
# host), and an initramfs with busybox-static, drbd-utils (drbdadm driving the in-tree DRBD
# 8.4 through drbdadm-84), util-linux's wdctl, the kernel modules the lab needs (with their
# dependencies from `modprobe --show-depends`, indexed by `depmod -b`), the real
# `witness-agent` binary and every shared library `ldd` names, tests/vmlab/init, and the
# datastore of the Dqlite scenario: `dqlite-demo` of Debian's go-dqlite with libdqlite0,
# libraft2 and the libraries they need (downloaded and unpacked like the kernel).
#
# Usage: build-image.sh CACHE_DIR AGENT_BIN
# Prints two lines: the kernel path and the initramfs path. The initramfs is cached in
# CACHE_DIR under a hash of its inputs (this script, init, the agent binary, the kernel and
# package versions), so a rerun with the same inputs takes no time. Per-node files
# (configuration, certificates) are appended by the test as a second cpio archive.
set -euo pipefail
cache=${1:?usage: build-image.sh CACHE_DIR AGENT_BIN}
agent=${2:?usage: build-image.sh CACHE_DIR AGENT_BIN}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

for tool in apt-cache apt-get dpkg-deb depmod modprobe cpio busybox drbdadm wdctl ldd gzip strip; do
    command -v "$tool" >/dev/null || {
        echo "build-image.sh: $tool not found: install qemu-system-x86 busybox-static cpio kmod drbd-utils (see .ci/run)" >&2
        exit 2
    }
done

# The kernel package `linux-image-amd64` resolves to (e.g. linux-image-6.1.0-57-amd64).
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "build-image.sh: apt-cache cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 2; }
kdir="$cache/$kpkg"
if [ ! -f "$kdir/.unpacked" ]; then
    rm -rf "$kdir" && mkdir -p "$kdir/deb"
    (cd "$kdir/deb" && apt-get download -q "$kpkg" >/dev/null 2>&1)
    dpkg-deb -x "$kdir"/deb/*.deb "$kdir/root"
    rm -rf "$kdir/deb"
    touch "$kdir/.unpacked"
fi
kver=$(ls "$kdir/root/lib/modules")
vmlinuz="$kdir/root/boot/vmlinuz-$kver"

# Dqlite: go-dqlite's dqlite-demo and the libraries it links (libuv1, liblz4-1 and
# libsqlite3-0 too, so the host needs none of them installed).
dqpkgs="go-dqlite libdqlite0 libraft2 libuv1 liblz4-1 libsqlite3-0"
dqversions=$(apt-cache show --no-all-versions $dqpkgs 2>/dev/null | awk '/^(Package|Version):/ {printf "%s ", $2}')
dqdir="$cache/dqlite-$(echo "$dqversions" | sha256sum | cut -c1-12)"
if [ ! -f "$dqdir/.unpacked" ]; then
    rm -rf "$dqdir" && mkdir -p "$dqdir/deb"
    (cd "$dqdir/deb" && apt-get download -q $dqpkgs >/dev/null 2>&1) || {
        echo "build-image.sh: apt-get download $dqpkgs failed (run apt-get update)" >&2
        exit 2
    }
    for d in "$dqdir"/deb/*.deb; do dpkg-deb -x "$d" "$dqdir/root"; done
    rm -rf "$dqdir/deb"
    touch "$dqdir/.unpacked"
fi
dqlib="$dqdir/root/usr/lib/x86_64-linux-gnu"

versions=$(dpkg-query -W -f '${Package}=${Version}\n' busybox-static drbd-utils util-linux libc6)
key=$( { cat "$0" "$here/init" "$here/writer" "$here/check" "$here/dqlite"; sha256sum "$agent"; echo "$kpkg $versions $dqversions"; } | sha256sum | cut -c1-16)
out="$cache/initrd-$key.cpio.gz"
if [ ! -f "$out" ]; then
    stage=$(mktemp -d "$cache/stage.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    cd "$stage"
    mkdir -p usr/bin usr/sbin usr/lib usr/lib64 etc proc sys dev run tmp var/lib/drbd var/lock root
    ln -s usr/bin bin; ln -s usr/sbin sbin; ln -s usr/lib lib; ln -s usr/lib64 lib64
    ln -s /run var/run
    cp "$(command -v busybox)" usr/bin/busybox
    for applet in $(busybox --list); do
        [ -e "usr/bin/$applet" ] || ln -s busybox "usr/bin/$applet"
    done
    # Binaries and their libraries, at their Debian paths (/lib is usr/lib here as on the host).
    copy_bin() {
        install -D -m 0755 "$1" ".$2"
        ldd "$1" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
            case $lib in "$dqdir"/*) continue ;; esac # copied below, at the Debian path
            [ -f "$lib" ] && cp -L --parents "$lib" .
        done
    }
    copy_bin "$agent" /usr/bin/witness-agent
    # Debug builds carry ~200 MB of debug info: the guest only needs the code.
    strip --strip-debug usr/bin/witness-agent
    copy_bin "$(command -v wdctl)" /usr/bin/wdctl
    for f in /usr/sbin/drbdadm /usr/sbin/drbdsetup /usr/sbin/drbdmeta /usr/lib/drbd/drbdadm-84 /usr/lib/drbd/drbdsetup-84; do
        copy_bin "$f" "$f"
    done
    LD_LIBRARY_PATH="$dqlib" copy_bin "$dqdir/root/usr/bin/dqlite-demo" /usr/bin/dqlite-demo
    mkdir -p usr/lib/x86_64-linux-gnu
    cp -a "$dqlib"/*.so.* usr/lib/x86_64-linux-gnu/
    # Modules: the lab's drivers and what they depend on.
    depmod -b "$kdir/root" "$kver"
    for m in virtio_pci virtio_net virtio_blk i6300esb drbd ext4; do
        modprobe -d "$kdir/root" -S "$kver" --show-depends "$m" | awk '/^insmod/ {print $2}'
    done | sort -u | while read -r ko; do
        rel=${ko#"$kdir/root/"}
        install -D -m 0644 "$ko" "./$rel"
    done
    cp "$kdir/root/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "lib/modules/$kver/"
    depmod -b . "$kver"
    install -m 0755 "$here/init" init
    install -m 0755 "$here/writer" usr/bin/vmlab-writer
    install -m 0755 "$here/check" usr/bin/vmlab-check
    install -m 0755 "$here/dqlite" usr/bin/vmlab-dqlite
    find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > "$out.tmp"
    mv "$out.tmp" "$out"
fi
echo "$vmlinuz"
echo "$out"
