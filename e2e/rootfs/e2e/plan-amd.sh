# AMD (SVM) plan: patched module with NPT, then the stock module.
echo "E2E-CPU $(cpu_flags)"
run_case amd-npt1-patched patched amd "npt=1" sh -c '/e2e/kvmtest smoke && /e2e/kvmtest trap patched'
run_case amd-npt1-stock stock amd "npt=1" sh -c '/e2e/kvmtest smoke && /e2e/kvmtest trap stock'
