"""The CPUID the VMM gives each vCPU: what KVM supports, with the vCPU's own APIC id and the
VM's CPU count filled in, and the hypervisor bit set when KVM offers its paravirtual leaves
(0x40000000: "KVMKVMKVM", 0x40000001: kvmclock and the other features): kernels look at
those leaves only when the bit says they run under a hypervisor."""

HYPERVISOR_LEAF = 0x40000000
CPUID_1_ECX_HYPERVISOR = 1 << 31


def cpuid_for_vcpu(supported, vcpu_id, vcpu_count):
    """KVM's supported CPUID with this vCPU's APIC id and the VM's logical CPU count filled in."""
    entries = []
    paravirtual = any(entry["function"] == HYPERVISOR_LEAF for entry in supported)
    for entry in supported:
        entry = dict(entry)
        if entry["function"] == 1:
            entry["ebx"] = (entry["ebx"] & 0x0000FFFF) | (vcpu_count & 0xFF) << 16 | (vcpu_id & 0xFF) << 24
            if vcpu_count > 1:
                entry["edx"] |= 1 << 28   # HTT: the count in EBX[23:16] is valid
            if paravirtual:
                entry["ecx"] |= CPUID_1_ECX_HYPERVISOR
        elif entry["function"] in (0xB, 0x1F):
            entry["edx"] = vcpu_id
        entries.append(entry)
    return entries
