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
	t=""
	for m in irqbypass ccp kvm kvm-$vendor; do
		[ $m = ccp ] && { [ $vendor = amd ] && [ -f $d/ccp.ko ] || continue; }
		a=$(cut -d' ' -f1 /proc/uptime)
		if [ $m = kvm-$vendor ]; then insmod $d/$m.ko "$@"; else insmod $d/$m.ko; fi || {
			echo "E2E-ERROR insmod $m failed"; return 1; }
		t="$t $m=$(awk -v a=$a '{printf "%.2f", $1 - a}' /proc/uptime)"
	done
	echo "E2E-INSMOD set=$set_$t"
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

# Tests run inside a case, $1 = patched|stock: the C program; the Python +
# cffi smoke test (once per boot, and only when the harness is absent or the
# plan sets PYSMOKE=always: the harness run proves Python + cffi as well);
# the harness (`vmm doctor`, `vmm run --watch`) when it is in the image.
kvm_tests() {
	r=0
	/e2e/kvmtest smoke || r=1
	/e2e/kvmtest trap $1 || r=1
	/e2e/kvmtest steps
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
	# stepping they probe is the same with either backend; the host runs them with stock).
	if [ "$1" = patched ] && [ -x /usr/bin/python3 ] && [ -f /e2e/probes.py ] && [ -d /opt/v2e/vmm ]; then
		a=$(cut -d' ' -f1 /proc/uptime)
		python3 /e2e/probes.py --backend patched --timeout 300 || r=1
		echo "E2E-TIME probes=$(awk -v a=$a '{printf "%.2f", $1 - a}' /proc/uptime)"
	fi
	return $r
}
