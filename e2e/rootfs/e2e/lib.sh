# Shell helpers for the e2e plans (sourced by /init).
MODDIR=/e2e/modules

cpu_flags() { grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'vmx|svm|ept|npt|vpid' | tr '\n' ',' ; }

# The parameters the modules run with, one E2E-MODULES line.
report_modules() {
	k=/sys/module/kvm/parameters
	kp="tdp_mmu=$(cat $k/tdp_mmu) force_emulation_prefix=$(cat $k/force_emulation_prefix)"
	if [ $2 = intel ]; then
		p=/sys/module/kvm_intel/parameters
		echo "E2E-MODULES set=$1 vendor=$2 ept=$(cat $p/ept) unrestricted_guest=$(cat $p/unrestricted_guest) vpid=$(cat $p/vpid) $kp"
	else
		p=/sys/module/kvm_amd/parameters
		echo "E2E-MODULES set=$1 vendor=$2 npt=$(cat $p/npt) nrips=$(cat $p/nrips) $kp"
	fi
}

# load_kvm SET VENDOR PARAM...   SET = stock|patched, VENDOR = intel|amd;
# a PARAM kvm.NAME=VALUE goes to kvm.ko, the others to kvm-VENDOR.ko
load_kvm() {
	set_=$1 vendor=$2; shift 2
	d=$MODDIR/$set_
	if [ ! -f $d/kvm.ko ]; then
		echo "E2E-SKIP set=$set_ reason=no-modules"
		return 1
	fi
	kvm_params="" vendor_params=""
	for a in "$@"; do
		case $a in kvm.*) kvm_params="$kvm_params ${a#kvm.}" ;; *) vendor_params="$vendor_params $a" ;; esac
	done
	t=""
	for m in irqbypass ccp kvm kvm-$vendor; do
		[ $m = ccp ] && { [ $vendor = amd ] && [ -f $d/ccp.ko ] || continue; }
		a=$(cut -d' ' -f1 /proc/uptime)
		case $m in
		kvm) insmod $d/$m.ko $kvm_params ;;
		kvm-$vendor) insmod $d/$m.ko $vendor_params ;;
		*) insmod $d/$m.ko ;;
		esac || { echo "E2E-ERROR insmod $m failed"; return 1; }
		t="$t $m=$(awk -v a=$a '{printf "%.2f", $1 - a}' /proc/uptime)"
	done
	echo "E2E-INSMOD set=$set_$t"
	report_modules $set_ $vendor
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
	echo "E2E-CASE-BEGIN name=$name set=$set_ vendor=$vendor params=$(echo $params | tr " " ,) tests=$1 uptime=$(cut -d' ' -f1 /proc/uptime)"
	if load_kvm $set_ $vendor $params; then
		"$@"
		echo "E2E-CASE-END name=$name rc=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
	else
		echo "E2E-CASE-END name=$name rc=skip uptime=$(cut -d' ' -f1 /proc/uptime)"
	fi
	unload_kvm
}

# The series' KVM selftest (patches/, exec_trap_test.c), every output line as
# E2E-SELFTEST-OUT as it comes; the host parses its TAP lines.  2 MiB hugetlb
# pages for its huge page cases are reserved on first use.
SELFTEST_TIMEOUT=240
selftest() {
	[ -x /e2e/exec_trap_test ] || { echo "E2E-ERROR no exec_trap_test in the image"; return 1; }
	[ -e /tmp/hugepages.done ] || { echo 8 > /proc/sys/vm/nr_hugepages; touch /tmp/hugepages.done; }
	a=$(cut -d' ' -f1 /proc/uptime)
	{ timeout $SELFTEST_TIMEOUT /e2e/exec_trap_test 2>&1; echo $? > /tmp/selftest.rc; } |
		sed 's/^/E2E-SELFTEST-OUT /'
	st=$(cat /tmp/selftest.rc)
	echo "E2E-SELFTEST rc=$st hugepages=$(cat /proc/sys/vm/nr_hugepages) time=$(awk -v a=$a '{printf "%.2f", $1 - a}' /proc/uptime)"
	return $st
}

# Module-level tests only, for the patched cases without the harness: the C
# program and the selftest.
module_tests() {
	r=0
	/e2e/kvmtest smoke || r=1
	/e2e/kvmtest trap $1 || r=1
	[ $1 = stock ] || selftest || r=1
	return $r
}

# Tests run inside a case, $1 = patched|stock: the C program; the Python +
# cffi smoke test (once per boot, and only when the harness is absent or the
# plan sets PYSMOKE=always: the harness run proves Python + cffi as well);
# the harness (`vmm doctor`, `vmm run --watch`) when it is in the image.
kvm_tests() {
	r=0
	/e2e/kvmtest smoke || r=1
	/e2e/kvmtest trap $1 || r=1
	/e2e/kvmtest steps
	[ $1 = stock ] || selftest || r=1
	if [ -x /usr/bin/python3 ] && [ -f /e2e/kvm_smoke.py ] && [ ! -e /tmp/py-smoke.done ] &&
	   { [ "${PYSMOKE:-}" = always ] || [ ! -d /opt/v2e/vmm ]; }; then
		a=$(cut -d' ' -f1 /proc/uptime)
		python3 /e2e/kvm_smoke.py $1 || r=1
		echo "E2E-TIME py-smoke=$(awk -v a=$a '{printf "%.2f", $1 - a}' /proc/uptime)"
		touch /tmp/py-smoke.done
	fi
	if [ -x /usr/bin/python3 ] && [ -d /opt/v2e/vmm ]; then
		a=$(cut -d' ' -f1 /proc/uptime)
		python3 /e2e/vmmcheck.py $1 || r=1
		echo "E2E-TIME vmm=$(awk -v a=$a '{printf "%.2f", $1 - a}' /proc/uptime)"
	fi
	# The anti-analysis probes, unwatched against watched, with the patched module (the
	# stepping they probe is the same with either backend; the host runs them with stock),
	# in the machines whose plan sets PROBES: yes for all of them (some 40 runs: about 115 s
	# under Bochs with EPT), or the probe images to run; PROBE_TIMEOUT bounds each run.
	if [ "$1" = patched ] && [ -x /usr/bin/python3 ] && [ -f /e2e/probes.py ] && [ -d /opt/v2e/vmm ]; then
		if [ -n "${PROBES:-}" ]; then
			a=$(cut -d' ' -f1 /proc/uptime)
			images=$PROBES
			[ "$images" = yes ] && images=
			python3 /e2e/probes.py --backend patched --timeout "${PROBE_TIMEOUT:-300}" $images || r=1
			echo "E2E-TIME probes=$(awk -v a=$a '{printf "%.2f", $1 - a}' /proc/uptime)"
		else
			echo "E2E-PROBES planned=no"
		fi
	fi
	return $r
}

# Put the stock modules where a Debian host has them (/lib/modules/RELEASE/
# kernel/...), for modprobe and patches/install.sh.
stock_module_tree() {
	m=/lib/modules/$(uname -r)
	[ -d $m/kernel ] && return 0
	mkdir -p $m/kernel/arch/x86/kvm $m/kernel/virt/lib $m/kernel/drivers/crypto/ccp
	cp $MODDIR/stock/kvm.ko $MODDIR/stock/kvm-intel.ko $MODDIR/stock/kvm-amd.ko $m/kernel/arch/x86/kvm/
	cp $MODDIR/stock/irqbypass.ko $m/kernel/virt/lib/
	cp $MODDIR/stock/ccp.ko $m/kernel/drivers/crypto/ccp/
	: > $m/modules.order; : > $m/modules.builtin; : > $m/modules.builtin.modinfo
	/sbin/depmod -a
}

# install_case NAME VENDOR: patches/install.sh on a host-like module tree,
# with stock kvm and kvm-VENDOR loaded by modprobe with a read-only parameter
# (tdp_mmu=0) and a writable one changed at run time (halt_poll_ns), which
# install and uninstall must keep; `vmm doctor` after each step
# (rootfs/e2e/installcheck.py).
install_case() {
	name=$1 vendor=$2
	echo "E2E-CASE-BEGIN name=$name set=install vendor=$vendor params=kvm.tdp_mmu=0 uptime=$(cut -d' ' -f1 /proc/uptime)"
	if [ ! -f $MODDIR/patched/KERNELRELEASE ]; then
		echo "E2E-SKIP set=install reason=no-modules"
		echo "E2E-CASE-END name=$name rc=skip uptime=$(cut -d' ' -f1 /proc/uptime)"
		return
	fi
	stock_module_tree
	rc=0
	if /sbin/modprobe kvm tdp_mmu=0 && /sbin/modprobe kvm_$vendor; then
		echo 123456 > /sys/module/kvm/parameters/halt_poll_ns
		report_modules stock $vendor
		python3 /e2e/installcheck.py $vendor $MODDIR/patched || rc=1
	else
		echo "E2E-ERROR modprobe of the stock modules failed"
		rc=1
	fi
	echo "E2E-CASE-END name=$name rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
	/sbin/modprobe -r kvm_$vendor kvm 2>/dev/null
	unload_kvm
}
