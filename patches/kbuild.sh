#!/bin/bash
# Fetch Debian's kernel source and headers for one series, apply the patch
# series to a pristine tree, run checkpatch and build the KVM modules and the
# series' KVM selftest.
#
# usage: kbuild.sh SERIES ACTION
#   SERIES  6.12 | 6.1
#   ACTION  fetch | checkpatch | build | check | modules
#        kbuild.sh series-for RELEASE
#   prints the series whose modules are for kernel RELEASE (`uname -r`), or
#   fails with one line naming the supported kernels
#
# Everything large lives under $CACHE (default /var/cache/v2e-kernel), never
# in the repository.  Steps are stamped, so a second run with unchanged
# patches only re-runs checkpatch and compares stamps.
set -euo pipefail

ALL_SERIES="6.12 6.1"

# Debian's kernel for SERIES: sets SRC_PKG SRC_VER TARBALL KREL KCC.
series_vars() {
	case "$1" in
	6.12)
		SRC_PKG=linux-source-6.12
		SRC_VER=6.12.117-1~deb12u1
		TARBALL=linux-source-6.12.tar.xz
		KREL=6.12.117+deb12-amd64
		# CONFIG_CC_VERSION_TEXT of Debian's build
		KCC=${KCC:-x86_64-linux-gnu-gcc-12}
		;;
	6.1)
		SRC_PKG=linux-source-6.1
		SRC_VER=6.1.192-2
		TARBALL=linux-source-6.1.tar.xz
		KREL=6.1.0-56-amd64
		KCC=${KCC:-gcc-12}
		;;
	*)
		return 1
		;;
	esac
}

if [ "${1:-}" = series-for ]; then
	supported=""
	for s in $ALL_SERIES; do
		series_vars "$s"
		if [ "$KREL" = "${2:?release}" ]; then
			echo "$s"
			exit 0
		fi
		supported="$supported${supported:+, }$KREL ($s)"
	done
	echo "kbuild.sh: no patch series for kernel $2; supported kernels: $supported" >&2
	exit 1
fi

SERIES=${1:?series}
ACTION=${2:?action}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-/var/cache/v2e-kernel}
JOBS=${JOBS:-$(nproc)}

if ! series_vars "$SERIES"; then
	echo "kbuild.sh: unknown series '$SERIES' ($ALL_SERIES)" >&2
	exit 2
fi
HDR_PKG=linux-headers-$KREL
IMG_PKG=linux-image-$KREL-unsigned
# Debian builds both kernels with Debian's gcc 12, called by the name that
# CONFIG_CC_VERSION_TEXT in the headers' .config shows; modules must be built
# with the same compiler.

PATCHDIR=$HERE/linux-$SERIES
OUT=$HERE/out/linux-$SERIES
TOP=$CACHE/$SERIES
DEBS=$CACHE/debs
PRISTINE=$TOP/pristine
BUILD=$TOP/build
HDR=$TOP/headers/usr/src/$HDR_PKG

log() { printf '[%s %s] %s\n' "$SERIES" "$(date +%T)" "$*"; }

need_tools() {
	local missing=() t
	for t in "$KCC" flex bison bc perl git patch dpkg-deb xz objcopy python3 \
		pahole; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	[ -e /usr/include/libelf.h ] || missing+=(libelf-dev)
	[ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing build dependencies (${missing[*]})"
		apt-get update -qq || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			gcc-12 flex bison bc perl git patch xz-utils libelf-dev \
			libssl-dev dwarves binutils python3 >/dev/null
	fi
}

deb_file() { # package version
	local f
	f=$(ls "$DEBS/${1}_${2//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
	echo "$f"
}

fetch() {
	mkdir -p "$DEBS"
	local pkg ver
	for pkg in "$SRC_PKG=$SRC_VER" "$HDR_PKG=$SRC_VER" "$IMG_PKG=$SRC_VER"; do
		ver=${pkg#*=}
		if [ -z "$(deb_file "${pkg%%=*}" "$ver")" ]; then
			log "apt-get download $pkg"
			(cd "$DEBS" && { apt-get download -q "$pkg" 2>/dev/null ||
				{ apt-get update -qq && apt-get download -q "$pkg"; }; })
		fi
	done
	if [ ! -e "$TOP/pristine.stamp" ]; then
		log "extracting $SRC_PKG $SRC_VER"
		rm -rf "$PRISTINE" "$TOP/srcdeb"
		mkdir -p "$TOP/srcdeb"
		dpkg-deb -x "$(deb_file "$SRC_PKG" "$SRC_VER")" "$TOP/srcdeb"
		tar -C "$TOP" -xJf "$TOP/srcdeb/usr/src/$TARBALL"
		mv "$TOP/${TARBALL%.tar.xz}" "$PRISTINE"
		rm -rf "$TOP/srcdeb"
		chmod -R a-w "$PRISTINE"
		touch "$TOP/pristine.stamp"
	fi
	if [ ! -e "$TOP/headers.stamp" ]; then
		log "extracting $HDR_PKG"
		rm -rf "$TOP/headers"
		mkdir -p "$TOP/headers"
		dpkg-deb -x "$(deb_file "$HDR_PKG" "$SRC_VER")" "$TOP/headers"
		touch "$TOP/headers.stamp"
	fi
	if [ ! -e "$TOP/image.stamp" ]; then
		log "extracting Debian's kvm modules from $IMG_PKG"
		rm -rf "$TOP/image"
		mkdir -p "$TOP/image"
		dpkg-deb --fsys-tarfile "$(deb_file "$IMG_PKG" "$SRC_VER")" |
			tar -C "$TOP/image" -x --wildcards '*/arch/x86/kvm/*'
		touch "$TOP/image.stamp"
	fi
}

# vermagic and modversions CRCs against Debian's linux-image of the release,
# and a guard against shipping unpatched modules: kvm.ko must contain the
# series' code.
has_series_code() {
	local syms
	syms=$(nm "$1" 2>/dev/null) || return 1
	grep -q ' kvm_mmu_set_exec_trap$' <<<"$syms"
}

abi_check() {
	if ! has_series_code "$1"; then
		echo "$1 does not contain the exec-trap code (unpatched?)" >&2
		exit 1
	fi
	python3 "$HERE/modcheck.py" "$HDR/Module.symvers" \
		"$TOP/image/lib/modules/$KREL/kernel/arch/x86/kvm" "$@"
}

kmake() {
	# KERNELRELEASE makes UTS_RELEASE, hence vermagic, match the Debian
	# image; LOCALVERSION= keeps setlocalversion from appending '+'.
	make -C "$BUILD" -j"$JOBS" CC="$KCC" HOSTCC=gcc \
		LOCALVERSION= KERNELRELEASE="$KREL" "$@"
}

# Warnings as "file: message", without line/column numbers, so that the
# unpatched and the patched build can be compared although lines move.
warnings() {
	grep -E '(warning|error):' "$1" |
		sed -E 's/:[0-9]+:[0-9]+:/:/; s/:[0-9]+:/:/' | sort -u || true
}

prepare_build_tree() {
	if [ -e "$TOP/build.stamp" ]; then
		return
	fi
	log "creating build tree (copy of the pristine tree)"
	rm -rf "$BUILD" "$TOP/applied" "$TOP/built.hash"
	cp -a "$PRISTINE" "$BUILD"
	chmod -R u+w "$BUILD"
	cp "$HDR/.config" "$HDR/Module.symvers" "$BUILD/"
	log "olddefconfig + modules_prepare"
	kmake -s olddefconfig >"$TOP/prepare.log" 2>&1
	kmake -s modules_prepare >>"$TOP/prepare.log" 2>&1
	local rel
	rel=$(sed -n 's/.*UTS_RELEASE "\(.*\)"/\1/p' \
		"$BUILD/include/generated/utsrelease.h")
	if [ "$rel" != "$KREL" ]; then
		echo "UTS_RELEASE is '$rel', expected '$KREL'" >&2
		exit 1
	fi
	if ! cmp -s <(grep CONFIG_CC_VERSION_TEXT "$HDR/.config") \
		<(grep CONFIG_CC_VERSION_TEXT "$BUILD/.config"); then
		echo "compiler differs from Debian's:" \
			"$(grep CONFIG_CC_VERSION_TEXT "$HDR/.config" "$BUILD/.config")" >&2
		exit 1
	fi
	log "baseline: unpatched W=1 build of arch/x86/kvm"
	local t0=$SECONDS
	kmake W=1 M=arch/x86/kvm modules >"$TOP/baseline.log" 2>&1
	log "baseline build took $((SECONDS - t0)) s"
	warnings "$TOP/baseline.log" >"$TOP/baseline.warnings"
	touch "$TOP/build.stamp"
}

series_hash() {
	cat "$PATCHDIR"/*.patch | sha256sum | cut -d' ' -f1
}

# True if an F: pattern of MAINTAINERS names a directory that holds FILE.
covered_by_maintainers() {
	local dir=$1
	while dir=$(dirname "$dir") && [ "$dir" != . ]; do
		grep -qE "^F:[[:space:]]+$dir/\$" "$PRISTINE/MAINTAINERS" && return 0
	done
	return 1
}

# checkpatch --strict with zero errors, warnings and checks.  Its one remark
# that needs a human, "added file(s), does MAINTAINERS need updating?", is
# answered here: every added file must be covered by a MAINTAINERS entry.
checkpatch() {
	local h out f
	h=$(series_hash)
	if [ "$(cat "$TOP/checkpatch.ok" 2>/dev/null)" = "$h" ]; then
		log "checkpatch: unchanged series, passed before"
		return
	fi
	for f in $(cat "$PATCHDIR"/*.patch |
		awk '/^new file mode/ { new = 1; next } /^\+\+\+ b\// { if (new) print substr($2, 3); new = 0 }'); do
		if ! covered_by_maintainers "$f"; then
			echo "checkpatch: new file $f is not covered by MAINTAINERS" >&2
			exit 1
		fi
		log "checkpatch: new file $f is covered by MAINTAINERS"
	done
	out=$(cd "$PRISTINE" && perl scripts/checkpatch.pl --strict \
		--ignore FILE_PATH_CHANGES "$PATCHDIR"/*.patch 2>&1) || true
	grep -E '^(total:|ERROR|WARNING|CHECK)' <<<"$out" || true
	if [ "$(grep -c '^total: 0 errors, 0 warnings, 0 checks' <<<"$out")" -ne \
		"$(ls "$PATCHDIR"/*.patch | wc -l)" ]; then
		echo "checkpatch: errors, warnings or checks in the $SERIES series" >&2
		exit 1
	fi
	echo "$h" >"$TOP/checkpatch.ok"
}

# Files a set of patches touches (their paths after the patches).
touched_files() {
	cat "$@" | sed -n 's|^+++ b/||p' | sort -u
}

# Apply the series, patch by patch (later patches change lines earlier ones
# add), to DIR.
apply_patches() {
	local p
	for p in "$PATCHDIR"/*.patch; do
		if ! (cd "$1" && git apply "$p"); then
			echo "$(basename "$p") does not apply after the patches before it" >&2
			exit 1
		fi
	done
}

# Apply the series to the build tree.  It must first apply to the pristine
# sources: to a scratch copy of the files it touches.  In the build tree, files
# changed by a previously applied series are restored from the pristine tree
# first, so the series always applies to pristine sources.
apply_series() {
	local f scratch=$TOP/apply-check
	log "git apply, patch by patch, to the pristine sources"
	rm -rf "$scratch"
	mkdir -p "$scratch"
	for f in $(touched_files "$PATCHDIR"/*.patch); do
		if [ -e "$PRISTINE/$f" ]; then
			install -D -m 644 "$PRISTINE/$f" "$scratch/$f"
		fi
	done
	apply_patches "$scratch"
	rm -rf "$scratch"
	if [ -d "$TOP/applied" ]; then
		for f in $(touched_files "$TOP/applied"/*.patch); do
			if [ -e "$PRISTINE/$f" ]; then
				cp "$PRISTINE/$f" "$BUILD/$f"
				chmod u+w "$BUILD/$f"
			else
				rm -f "$BUILD/$f"
			fi
		done
		rm -rf "$TOP/applied"
	fi
	# Record the series before applying it: the files it touches are
	# restored next time even if it stops half way.
	mkdir -p "$TOP/applied"
	cp "$PATCHDIR"/*.patch "$TOP/applied/"
	log "git apply to the build tree"
	apply_patches "$BUILD"
}

# The series' selftest, against the patched uapi headers, statically linked so
# that it runs in a minimal initramfs, for the baseline x86-64 ISA (ARCH=x86_64
# keeps the selftests' -march=x86-64-v2 away: emulated CPUs may lack it).  It
# must compile without warnings.
SELFTEST=x86_64/exec_trap_test
selftest() {
	local out=$TOP/selftest
	log "selftest: make headers + $SELFTEST"
	kmake -s headers >"$TOP/selftest.log" 2>&1
	rm -rf "$out"
	if ! make -C "$BUILD/tools/testing/selftests/kvm" -j"$JOBS" ARCH=x86_64 \
		OUTPUT="$out" LDFLAGS="-static -pthread -no-pie" \
		"$out/$SELFTEST" >>"$TOP/selftest.log" 2>&1; then
		tail -n 40 "$TOP/selftest.log" >&2
		exit 1
	fi
	if grep -E "$SELFTEST\.c:[0-9]+:[0-9]+: (warning|error)" "$TOP/selftest.log"; then
		echo "compiler warnings in $SELFTEST.c (above)" >&2
		exit 1
	fi
}

build() {
	local h t0
	h=$(series_hash)
	prepare_build_tree
	if [ "$(cat "$TOP/built.hash" 2>/dev/null)" = "$h" ] &&
		has_series_code "$BUILD/arch/x86/kvm/kvm.ko" &&
		[ -x "$TOP/selftest/$SELFTEST" ]; then
		log "build: unchanged series, modules and selftest up to date"
		abi_check "$BUILD"/arch/x86/kvm/{kvm,kvm-intel,kvm-amd}.ko
		return
	fi
	rm -f "$TOP/built.hash"
	apply_series
	log "patched W=1 build of arch/x86/kvm"
	t0=$SECONDS
	if ! kmake W=1 M=arch/x86/kvm modules >"$TOP/patched.log" 2>&1; then
		tail -n 40 "$TOP/patched.log" >&2
		exit 1
	fi
	log "patched build took $((SECONDS - t0)) s"
	warnings "$TOP/patched.log" >"$TOP/patched.warnings"
	if comm -13 "$TOP/baseline.warnings" "$TOP/patched.warnings" |
		grep .; then
		echo "new compiler warnings in the $SERIES series (above)" >&2
		exit 1
	fi
	log "no new warnings ($(wc -l <"$TOP/baseline.warnings") before," \
		"$(wc -l <"$TOP/patched.warnings") after)"
	abi_check "$BUILD"/arch/x86/kvm/{kvm,kvm-intel,kvm-amd}.ko
	selftest
	echo "$h" >"$TOP/built.hash"
}

modules() {
	local m
	build
	rm -rf "$OUT"
	mkdir -p "$OUT"
	for m in kvm kvm-intel kvm-amd; do
		# Debian ships its modules without debug info, as
		# INSTALL_MOD_STRIP=1 does.
		strip --strip-debug -o "$OUT/$m.ko" "$BUILD/arch/x86/kvm/$m.ko"
	done
	abi_check "$OUT"/{kvm,kvm-intel,kvm-amd}.ko
	strip -o "$OUT/exec_trap_test" "$TOP/selftest/$SELFTEST"
	echo "$KREL" >"$OUT/KERNELRELEASE"
	log "modules and exec_trap_test for $KREL in ${OUT#"$HERE"/}"
}

# One run per series at a time: concurrent runs would share the build tree.
mkdir -p "$CACHE"
exec 9>"$CACHE/$SERIES.lock"
if ! flock -n 9; then
	log "waiting for another run on this series to finish"
	flock 9
fi

need_tools
case "$ACTION" in
fetch) fetch ;;
checkpatch) fetch; checkpatch ;;
build) fetch; build ;;
check) fetch; checkpatch; build ;;
modules) fetch; modules ;;
*) echo "unknown action $ACTION" >&2; exit 2 ;;
esac
