"""The CPUID the VMM gives each vCPU: what KVM supports, with the vCPU's own APIC id and the
VM's CPU count filled in, the hypervisor bit set when KVM offers its paravirtual leaves
(0x40000000: "KVMKVMKVM", 0x40000001: kvmclock and the other features; kernels look at those
leaves only when the bit says they run under a hypervisor), or optionally without any sign
of a hypervisor."""

CPUID_HYPERVISOR = 1 << 31            # leaf 1 ECX: running under a hypervisor
HYPERVISOR_LEAVES = range(0x40000000, 0x40000100)
HYPERVISOR_LEAF = HYPERVISOR_LEAVES.start   # KVM's signature
_AMD_VENDORS = (b"AuthenticAMD", b"HygonGenuine")


def vendor(supported):
    """'amd' or 'intel': whose instruction set the vCPUs decode (CPUID leaf 0; vendors other
    than AMD and Hygon decode as Intel does)."""
    for entry in supported:
        if entry["function"] == 0:
            name = b"".join(entry[register].to_bytes(4, "little") for register in ("ebx", "edx", "ecx"))
            return "amd" if name in _AMD_VENDORS else "intel"
    return "intel"


def cpuid_for_vcpu(supported, vcpu_id, vcpu_count, hide_hypervisor=False):
    """KVM's supported CPUID with this vCPU's APIC id and the VM's logical CPU count filled in;
    hide_hypervisor clears the hypervisor bit and drops the hypervisor leaves (KVM's
    signature, kvmclock)."""
    entries = []
    paravirtual = any(entry["function"] == HYPERVISOR_LEAF for entry in supported)
    for entry in supported:
        entry = dict(entry)
        if hide_hypervisor and entry["function"] in HYPERVISOR_LEAVES:
            continue
        if entry["function"] == 1:
            entry["ebx"] = (entry["ebx"] & 0x0000FFFF) | (vcpu_count & 0xFF) << 16 | (vcpu_id & 0xFF) << 24
            if vcpu_count > 1:
                entry["edx"] |= 1 << 28   # HTT: the count in EBX[23:16] is valid
            if hide_hypervisor:
                entry["ecx"] &= ~CPUID_HYPERVISOR
            elif paravirtual:
                entry["ecx"] |= CPUID_HYPERVISOR
        elif entry["function"] in (0xB, 0x1F):
            entry["edx"] = vcpu_id
        entries.append(entry)
    return entries
