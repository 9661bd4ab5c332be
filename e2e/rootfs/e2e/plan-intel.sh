# Intel (VT-x) plan: patched module with EPT and with shadow paging, then the
# stock module as negative control.
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept1-patched patched intel "ept=1" sh -c '/e2e/kvmtest smoke && /e2e/kvmtest trap patched'
run_case intel-ept0-patched patched intel "ept=0" /e2e/kvmtest trap patched
run_case intel-ept1-stock stock intel "ept=1" sh -c '/e2e/kvmtest smoke && /e2e/kvmtest trap stock'
