# Intel (VT-x) with ept=0: shadow paging, so the trap must not depend on EPT
# (harness and selftest). Without EPT there is no unrestricted guest: KVM runs real mode
# in vm86 and delivers its exceptions by emulation, so the real-mode probes run here too
# (all of them would outlast the Bochs machine's timeout; the other modes run under EPT).
PROBES="probe_real probe_real_softint probe_real_timer"
# A run takes a few seconds here; KVM hangs on icebp in vm86 (the check is skipped then).
PROBE_TIMEOUT=30
FEP=kvm.force_emulation_prefix=1
echo "E2E-CPU $(cpu_flags)"
run_case intel-ept0-patched patched intel "ept=0 $FEP" kvm_tests patched
