# Intel (VT-x) with ept=0: shadow paging, so the trap must not depend on EPT.
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept0-patched patched intel "ept=0" kvm_tests patched
