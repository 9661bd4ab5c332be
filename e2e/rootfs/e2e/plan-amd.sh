# AMD (SVM) plan: patched module with NPT, then the stock module.
# The Python + cffi smoke test runs here even when the harness is present.
PYSMOKE=always
echo "E2E-CPU $(cpu_flags)"
run_case amd-npt1-patched patched amd "npt=1" kvm_tests patched
run_case amd-npt1-stock stock amd "npt=1" kvm_tests stock
