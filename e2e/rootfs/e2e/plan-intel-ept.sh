# Intel (VT-x) with EPT: the patched module (harness and selftest), with
# tdp_mmu=0 (module-level tests and selftest), the stock module as negative
# control, then install.sh on a host-like module tree.
# (plan-intel-shadow.sh runs in a second Bochs in parallel.)
# The probe suite runs in the patched case (rootfs/e2e/lib.sh).
PROBES=yes
FEP=kvm.force_emulation_prefix=1
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept1-patched patched intel "ept=1 $FEP" kvm_tests patched
run_case intel-ept1-tdp_mmu0-patched patched intel "ept=1 kvm.tdp_mmu=0 $FEP" module_tests patched
run_case intel-ept1-stock stock intel "ept=1" kvm_tests stock
install_case intel-install intel
