#!/bin/sh
# mkkmod.sh CACHE OUT
# Builds OUT/root: Debian's kmod (depmod, modprobe, modinfo as on a Debian
# host) and the shared libraries it needs, for the initramfs, where
# patches/install.sh runs with them.  Packages are downloaded into CACHE/debs.
set -eu
cache=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
PKGS="kmod libkmod2 liblzma5 libssl3 libzstd1"
rm -rf "$out"
mkdir -p "$out/pkgs" "$out/root/usr/bin" "$out/root/sbin" "$out/root/lib/x86_64-linux-gnu"
for p in $PKGS; do
	sh "$here/fetch-deb.sh" "$cache" "$p" "$out/pkg-$p"
	cp -a "$out/pkg-$p/." "$out/pkgs/"
	rm -rf "$out/pkg-$p"
done
cp "$out/pkgs/bin/kmod" "$out/root/usr/bin/kmod"
for t in depmod modprobe modinfo; do
	ln -s /usr/bin/kmod "$out/root/sbin/$t"
done
# The libraries kmod needs that are not in the image already (libc is).
lib() {
	objdump -p "$1" | awk '$1 == "NEEDED" { print $2 }'
}
todo=$out/root/usr/bin/kmod
while [ -n "$todo" ]; do
	next=""
	for f in $todo; do
		for l in $(lib "$f"); do
			case $l in libc.so.* | ld-linux*) continue ;; esac
			[ -e "$out/root/lib/x86_64-linux-gnu/$l" ] && continue
			src=$(ls "$out/pkgs"/lib/x86_64-linux-gnu/"$l" "$out/pkgs"/usr/lib/x86_64-linux-gnu/"$l" 2>/dev/null | head -n1)
			[ -n "$src" ] || { echo "mkkmod: $l (for $f) not found" >&2; exit 1; }
			cp -L "$src" "$out/root/lib/x86_64-linux-gnu/$l"
			next="$next $out/root/lib/x86_64-linux-gnu/$l"
		done
	done
	todo=$next
done
rm -rf "$out/pkgs"
echo "mkkmod: kmod $(du -sh "$out/root" | cut -f1)"
