# Intel (VT-x) with ept=0: shadow paging, so the trap must not depend on EPT
# (harness and selftest), and the probe suite: real mode takes another path without EPT,
# there is no unrestricted guest, so KVM runs it in vm86 and delivers its exceptions by
# emulation.
PROBES=yes
# A run takes seconds here; KVM hangs on icebp in vm86 (the check is skipped then).
PROBE_TIMEOUT=60
FEP=kvm.force_emulation_prefix=1
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept0-patched patched intel "ept=0 $FEP" kvm_tests patched
