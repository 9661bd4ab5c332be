# Intel (VT-x) with ept=0: shadow paging, so the trap must not depend on EPT
# (harness and selftest).
FEP=kvm.force_emulation_prefix=1
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept0-patched patched intel "ept=0 $FEP" kvm_tests patched
