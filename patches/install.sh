#!/bin/sh
# Put the patched KVM modules in place for the running kernel, or take them
# away again, on a Debian host (kmod's depmod and modprobe; also runs under
# busybox sh).
#
# usage: install.sh install DIR    DIR holds kvm.ko, kvm-intel.ko, kvm-amd.ko
#                                  and KERNELRELEASE (make -C patches modules)
#        install.sh uninstall
#
# The modules go to /lib/modules/$(uname -r)/updates/v2e-exec-trap/, which
# depmod ranks above the kernel's own (its default "search updates built-in"),
# so that modprobe loads them; uninstall removes that directory, and the
# stock modules are the ones modprobe finds again.  If kvm is loaded, kvm and
# kvm_intel / kvm_amd are reloaded with their current parameters; while a VM
# (any open /dev/kvm) holds them, nothing is changed.
#
# Every failure is one line "install.sh: ..." on stderr and a non-zero exit
# status: 1 refused or failed (nothing changed, or the stock modules back),
# 2 usage.
set -u

KREL=$(uname -r)
DEST=/lib/modules/$KREL/updates/v2e-exec-trap
MODULES="kvm kvm-intel kvm-amd"
TMP=${TMPDIR:-/tmp}/v2e-install.$$

# kmod's tools by path: a shell with built-in applets (busybox) would
# otherwise run its own depmod, which does not rank updates/ first.
tool() {
	for d in /usr/sbin /sbin /usr/bin /bin; do
		[ -x "$d/$1" ] && { echo "$d/$1"; return; }
	done
	echo "$1"
}
DEPMOD=$(tool depmod)
MODPROBE=$(tool modprobe)
MODINFO=$(tool modinfo)

die() {
	echo "install.sh: $*" >&2
	rm -rf "$TMP"
	exit 1
}

usage() {
	echo "install.sh: usage: install.sh install DIR | install.sh uninstall" >&2
	exit 2
}

# kvm_intel or kvm_amd, from the CPU's flags.
vendor_module() {
	if grep -qw vmx /proc/cpuinfo; then
		echo kvm_intel
	elif grep -qw svm /proc/cpuinfo; then
		echo kvm_amd
	else
		die "this CPU has neither VT-x (vmx) nor SVM: no KVM module to load"
	fi
}

loaded() {
	[ -d "/sys/module/$1" ]
}

# Processes that have /dev/kvm or a KVM VM or vCPU open, as "PID (COMMAND)".
kvm_users() {
	for fd in /proc/[0-9]*/fd/*; do
		case $(readlink "$fd" 2>/dev/null) in
		/dev/kvm | anon_inode:kvm-vm | anon_inode:kvm-vcpu*)
			pid=${fd#/proc/}
			pid=${pid%%/*}
			echo "$pid ($(cat "/proc/$pid/comm" 2>/dev/null))"
			;;
		esac
	done | sort -u | tr '\n' ' '
}

# Refuse to touch the modules while they are in use.
check_idle() {
	vendor=$1
	if loaded "$vendor" && [ "$(cat "/sys/module/$vendor/refcnt")" != 0 ]; then
		users=$(kvm_users)
		die "/dev/kvm is in use${users:+ by }${users% }: stop the VMs first"
	fi
	if loaded kvm; then
		for holder in /sys/module/kvm/holders/*; do
			[ -e "$holder" ] || continue
			name=${holder##*/}
			[ "$name" = "$vendor" ] ||
				die "module $name uses kvm: unload it first (modprobe -r $name)"
		done
	fi
}

# Save the parameters of MODULE: the read-only ones as NAME=VALUE arguments
# for loading it again ($TMP/MODULE.args), the writable ones to write back
# ($TMP/MODULE.rw, "NAME VALUE" lines).
save_params() {
	: >"$TMP/$1.args"
	: >"$TMP/$1.rw"
	for p in /sys/module/"$1"/parameters/*; do
		[ -r "$p" ] || continue
		value=$(cat "$p" 2>/dev/null) || continue
		name=${p##*/}
		mode=$(stat -c %a "$p")
		case $mode in
		*[2367]??)
			printf '%s %s\n' "$name" "$value" >>"$TMP/$1.rw"
			;;
		*)
			case $value in
			"" | *[[:space:]]*)
				echo "install.sh: $1: not keeping parameter $name='$value'" >&2
				;;
			*)
				printf '%s=%s\n' "$name" "$value" >>"$TMP/$1.args"
				;;
			esac
			;;
		esac
	done
}

# Write back the writable parameters that differ after loading MODULE.
restore_params() {
	while read -r name value; do
		p=/sys/module/$1/parameters/$name
		[ -e "$p" ] || continue
		[ "$(cat "$p" 2>/dev/null)" = "$value" ] && continue
		printf '%s' "$value" >"$p" 2>/dev/null ||
			echo "install.sh: $1: could not set $name back to '$value'" >&2
	done <"$TMP/$1.rw"
}

# Load kvm and VENDOR with the saved parameters.  The read-only ones that come
# up different are given on a second load, only those: giving every one would
# also set "unsafe" parameters (kvm_amd's force_avic), which taints the kernel,
# and derived ones that the module computes itself.
load() {
	"$MODPROBE" kvm && "$MODPROBE" "$1" || return 1
	differ=no
	for m in kvm "$1"; do
		: >"$TMP/$m.load"
		while IFS='=' read -r name value; do
			[ "$(cat "/sys/module/$m/parameters/$name" 2>/dev/null)" = "$value" ] &&
				continue
			echo "$name=$value" >>"$TMP/$m.load"
			differ=yes
		done <"$TMP/$m.args"
	done
	if [ $differ = yes ]; then
		# shellcheck disable=SC2046 # one argument per parameter
		"$MODPROBE" -r "$1" kvm &&
			"$MODPROBE" kvm $(cat "$TMP/kvm.load") &&
			"$MODPROBE" "$1" $(cat "$TMP/$1.load") || return 1
	fi
	restore_params kvm && restore_params "$1"
}

# True if modprobe resolves kvm and VENDOR to the patched files (WANT=patched)
# or to others (WANT=stock), and both are loaded.
modules_are() {
	for m in kvm "$1"; do
		loaded "$m" || return 1
		case $("$MODINFO" -n "$m" 2>/dev/null) in
		"$DEST"/*) [ "$2" = patched ] || return 1 ;;
		*) [ "$2" = stock ] || return 1 ;;
		esac
	done
}

# Stop the modules if they run, remembering their parameters (nothing has
# changed if this fails).
stop_kvm() {
	vendor=$1
	check_idle "$vendor"
	was_loaded=no
	if loaded kvm || loaded "$vendor"; then
		was_loaded=yes
		save_params kvm
		save_params "$vendor"
		"$MODPROBE" -r "$vendor" kvm || die "could not unload $vendor and kvm"
	fi
}

# Copy the modules from DIR to $DEST (replacing it as a whole) and depmod.
put_modules() {
	rm -rf "$DEST.new" && mkdir -p "$DEST.new" || return 1
	for m in $MODULES; do
		cp "$1/$m.ko" "$DEST.new/" || return 1
	done
	rm -rf "$DEST" && mv "$DEST.new" "$DEST" && "$DEPMOD" -a "$KREL"
}

install_modules() {
	dir=$1
	[ -f "$dir/KERNELRELEASE" ] ||
		die "$dir has no KERNELRELEASE: build it with make -C patches modules"
	built=$(cat "$dir/KERNELRELEASE")
	[ "$built" = "$KREL" ] ||
		die "the modules in $dir are for kernel $built, this one is $KREL"
	for m in $MODULES; do
		[ -f "$dir/$m.ko" ] || die "$dir/$m.ko is missing"
	done
	vendor=$(vendor_module) || exit 1
	stop_kvm "$vendor"
	if ! put_modules "$dir"; then
		rm -rf "$DEST.new" "$DEST"
		"$DEPMOD" -a "$KREL"
		[ $was_loaded = no ] || load "$vendor"
		die "could not install the modules in $DEST"
	fi
	if [ $was_loaded = yes ] && ! { load "$vendor" && modules_are "$vendor" patched; }; then
		# Leave the host with working stock modules.
		"$MODPROBE" -r "$vendor" kvm 2>/dev/null
		rm -rf "$DEST"
		"$DEPMOD" -a "$KREL"
		load "$vendor" ||
			die "neither the patched nor the stock modules load (see dmesg)"
		die "loading the patched modules failed (see dmesg); the stock modules are back"
	fi
	what="loaded on the next modprobe"
	[ $was_loaded = no ] || what="kvm and $vendor reloaded with their parameters"
	echo "install.sh: patched KVM modules for $KREL installed in $DEST; $what"
}

uninstall_modules() {
	[ -d "$DEST" ] || die "no patched KVM modules installed for $KREL ($DEST)"
	vendor=$(vendor_module) || exit 1
	stop_kvm "$vendor"
	rm -rf "$DEST" && "$DEPMOD" -a "$KREL" || die "could not remove $DEST"
	if [ $was_loaded = yes ] && ! { load "$vendor" && modules_are "$vendor" stock; }; then
		die "the stock modules did not load again (see dmesg)"
	fi
	what="the stock modules load on the next modprobe"
	[ $was_loaded = no ] || what="kvm and $vendor reloaded (stock) with their parameters"
	echo "install.sh: patched KVM modules for $KREL removed; $what"
}

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$TMP" || die "cannot create $TMP"
case "${1:-}" in
install)
	[ $# = 2 ] || usage
	install_modules "$2"
	;;
uninstall)
	[ $# = 1 ] || usage
	uninstall_modules
	;;
*)
	usage
	;;
esac
rm -rf "$TMP"
