# Intel (VT-x), one boot: the cases of plan-intel-ept.sh and
# plan-intel-shadow.sh.
FEP=kvm.force_emulation_prefix=1
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept1-patched patched intel "ept=1 $FEP" kvm_tests patched
run_case intel-ept1-tdp_mmu0-patched patched intel "ept=1 kvm.tdp_mmu=0 $FEP" module_tests patched
run_case intel-ept0-patched patched intel "ept=0 $FEP" kvm_tests patched
run_case intel-ept1-stock stock intel "ept=1" kvm_tests stock
install_case intel-install intel
