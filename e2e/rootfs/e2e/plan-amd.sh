# AMD (SVM) plan: the patched module with NPT (harness and selftest), with
# tdp_mmu=0 and with shadow paging (npt=0, module-level tests and selftest),
# the stock module as negative control, then install.sh on a host-like module
# tree.  The Python + cffi smoke test runs here even when the harness is present.
PYSMOKE=always
FEP=kvm.force_emulation_prefix=1
echo "E2E-CPU $(cpu_flags)"
run_case amd-npt1-patched patched amd "npt=1 $FEP" kvm_tests patched
run_case amd-npt1-tdp_mmu0-patched patched amd "npt=1 kvm.tdp_mmu=0 $FEP" module_tests patched
run_case amd-npt0-patched patched amd "npt=0 $FEP" module_tests patched
run_case amd-npt1-stock stock amd "npt=1" kvm_tests stock
install_case amd-install amd
