# Intel (VT-x), one boot: the patched module with EPT and with shadow
# paging, then the stock module as negative control.
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept1-patched patched intel "ept=1" kvm_tests patched
run_case intel-ept0-patched patched intel "ept=0" kvm_tests patched
run_case intel-ept1-stock stock intel "ept=1" kvm_tests stock
