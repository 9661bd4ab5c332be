# Intel (VT-x) with EPT: the patched module, then the stock module as
# negative control. (plan-intel-shadow.sh runs in a second Bochs in parallel.)
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept1-patched patched intel "ept=1" kvm_tests patched
run_case intel-ept1-stock stock intel "ept=1" kvm_tests stock
