#!/bin/sh
# fetch-deb.sh CACHE PKG[=VERSION] DEST
# Downloads a Debian package into CACHE/debs (once; later runs reuse it) and
# extracts it into DEST with dpkg-deb -x. Nothing is installed on the host.
set -eu
cache=$1 spec=$2 dest=$3
pkg=${spec%%=*}
mkdir -p "$cache/debs"
if [ "$pkg" != "$spec" ]; then
	ver=${spec#*=}
	pat="${pkg}_$(echo "$ver" | sed 's/:/%3a/')_*.deb"
else
	pat="${pkg}_*.deb"
fi
deb=$(ls "$cache"/debs/$pat 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$deb" ]; then
	echo "fetch-deb: apt-get download $spec" >&2
	(cd "$cache/debs" && { apt-get download -q "$spec" 2>/dev/null ||
		{ apt-get update -qq && apt-get download -q "$spec"; }; }) >&2
	deb=$(ls "$cache"/debs/$pat | sort -V | tail -n1)
fi
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
dpkg-deb -x "$deb" "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
basename "$deb" > "$dest.deb"
