# Shell helpers for the e2e plans (sourced by /init).
MODDIR=/e2e/modules

cpu_flags() { grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'vmx|svm|ept|npt|vpid' | tr '\n' ',' ; }

# load_kvm SET VENDOR PARAM...   SET = stock|patched, VENDOR = intel|amd
load_kvm() {
	set_=$1 vendor=$2; shift 2
	d=$MODDIR/$set_
	if [ ! -f $d/kvm.ko ]; then
		echo "E2E-SKIP set=$set_ reason=no-modules"
		return 1
	fi
	insmod $d/irqbypass.ko || return 1
	[ $vendor = amd ] && [ -f $d/ccp.ko ] && { insmod $d/ccp.ko || return 1; }
	insmod $d/kvm.ko || return 1
	insmod $d/kvm-$vendor.ko "$@" || return 1
	if [ $vendor = intel ]; then
		p=/sys/module/kvm_intel/parameters
		echo "E2E-MODULES set=$set_ vendor=$vendor ept=$(cat $p/ept) unrestricted_guest=$(cat $p/unrestricted_guest) vpid=$(cat $p/vpid)"
	else
		p=/sys/module/kvm_amd/parameters
		echo "E2E-MODULES set=$set_ vendor=$vendor npt=$(cat $p/npt) nrips=$(cat $p/nrips)"
	fi
	[ -c /dev/kvm ] || { echo "E2E-ERROR /dev/kvm missing"; return 1; }
}

unload_kvm() {
	rmmod kvm_intel 2>/dev/null; rmmod kvm_amd 2>/dev/null
	rmmod kvm 2>/dev/null; rmmod ccp 2>/dev/null; rmmod irqbypass 2>/dev/null
	true
}

# case NAME SET VENDOR "PARAMS" CMD...: one test case in its own module load
run_case() {
	name=$1 set_=$2 vendor=$3 params=$4; shift 4
	echo "E2E-CASE-BEGIN name=$name set=$set_ vendor=$vendor params=$params uptime=$(cut -d' ' -f1 /proc/uptime)"
	if load_kvm $set_ $vendor $params; then
		"$@"
		echo "E2E-CASE-END name=$name rc=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
	else
		echo "E2E-CASE-END name=$name rc=skip uptime=$(cut -d' ' -f1 /proc/uptime)"
	fi
	unload_kvm
}
