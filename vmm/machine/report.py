"""Readable reports of exits that stop a guest: the reason decoded, registers, bytes at RIP."""
import kvm_abi as abi

from ..errors import VmmError
from ..kvm import exits
from ..x86 import paging
from ..x86.mode import linear_rip
from ..x86.registers import GPRS, SEGMENT_REGISTERS, SYSTEM_SEGMENTS

# Intel SDM vol. 3, appendix C: VMX basic exit reasons.
VMX_EXIT_REASONS = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL",
    4: "SIPI_SIGNAL", 5: "IO_SMI", 6: "OTHER_SMI", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW",
    9: "TASK_SWITCH", 10: "CPUID", 11: "GETSEC", 12: "HLT", 13: "INVD", 14: "INVLPG",
    15: "RDPMC", 16: "RDTSC", 17: "RSM", 18: "VMCALL", 19: "VMCLEAR", 20: "VMLAUNCH",
    21: "VMPTRLD", 22: "VMPTRST", 23: "VMREAD", 24: "VMRESUME", 25: "VMWRITE", 26: "VMXOFF",
    27: "VMXON", 28: "CR_ACCESS", 29: "DR_ACCESS", 30: "IO_INSTRUCTION", 31: "MSR_READ",
    32: "MSR_WRITE", 33: "INVALID_GUEST_STATE", 34: "MSR_LOAD_FAIL", 36: "MWAIT_INSTRUCTION",
    37: "MONITOR_TRAP_FLAG", 39: "MONITOR_INSTRUCTION", 40: "PAUSE_INSTRUCTION",
    41: "MCE_DURING_VMENTRY", 43: "TPR_BELOW_THRESHOLD", 44: "APIC_ACCESS", 45: "EOI_INDUCED",
    46: "GDTR_IDTR", 47: "LDTR_TR", 48: "EPT_VIOLATION", 49: "EPT_MISCONFIG", 50: "INVEPT",
    51: "RDTSCP", 52: "PREEMPTION_TIMER", 53: "INVVPID", 54: "WBINVD", 55: "XSETBV",
    56: "APIC_WRITE", 57: "RDRAND", 58: "INVPCID", 59: "VMFUNC", 60: "ENCLS", 61: "RDSEED",
    62: "PML_FULL", 63: "XSAVES", 64: "XRSTORS", 65: "PCONFIG", 66: "SPP_EVENT", 67: "UMWAIT",
    68: "TPAUSE", 69: "LOADIWKEY", 70: "ENCLV", 72: "ENQCMD_PASID_FAIL",
    73: "ENQCMDS_PASID_FAIL", 74: "BUS_LOCK", 75: "NOTIFY", 76: "SEAMCALL", 77: "TDCALL",
}
VMX_ENTRY_FAILURE = 1 << 31

# AMD APM vol. 2, appendix C: SVM intercept exit codes.
SVM_EXIT_CODES = {
    **{0x000 + n: f"READ_CR{n}" for n in range(16)},
    **{0x010 + n: f"WRITE_CR{n}" for n in range(16)},
    **{0x020 + n: f"READ_DR{n}" for n in range(16)},
    **{0x030 + n: f"WRITE_DR{n}" for n in range(16)},
    **{0x040 + n: f"EXCP{n}" for n in range(32)},
    0x060: "INTR", 0x061: "NMI", 0x062: "SMI", 0x063: "INIT", 0x064: "VINTR",
    0x065: "CR0_SEL_WRITE", 0x066: "IDTR_READ", 0x067: "GDTR_READ", 0x068: "LDTR_READ",
    0x069: "TR_READ", 0x06A: "IDTR_WRITE", 0x06B: "GDTR_WRITE", 0x06C: "LDTR_WRITE",
    0x06D: "TR_WRITE", 0x06E: "RDTSC", 0x06F: "RDPMC", 0x070: "PUSHF", 0x071: "POPF",
    0x072: "CPUID", 0x073: "RSM", 0x074: "IRET", 0x075: "SWINT", 0x076: "INVD", 0x077: "PAUSE",
    0x078: "HLT", 0x079: "INVLPG", 0x07A: "INVLPGA", 0x07B: "IOIO", 0x07C: "MSR",
    0x07D: "TASK_SWITCH", 0x07E: "FERR_FREEZE", 0x07F: "SHUTDOWN", 0x080: "VMRUN",
    0x081: "VMMCALL", 0x082: "VMLOAD", 0x083: "VMSAVE", 0x084: "STGI", 0x085: "CLGI",
    0x086: "SKINIT", 0x087: "RDTSCP", 0x088: "ICEBP", 0x089: "WBINVD", 0x08A: "MONITOR",
    0x08B: "MWAIT", 0x08C: "MWAIT_CONDITIONAL", 0x08D: "XSETBV", 0x08E: "RDPRU",
    0x08F: "EFER_WRITE_TRAP",
    **{0x090 + n: f"CR{n}_WRITE_TRAP" for n in range(16)},
    0x0A0: "INVLPGB", 0x0A1: "INVLPGB_ILLEGAL", 0x0A2: "INVPCID", 0x0A3: "MCOMMIT",
    0x0A4: "TLBSYNC", 0x400: "NPF", 0x401: "AVIC_INCOMPLETE_IPI",
    0x402: "AVIC_UNACCELERATED_ACCESS", 0x403: "VMGEXIT", 0xFFFFFFFFFFFFFFFF: "INVALID",
}

INTERNAL_SUBERRORS = {
    abi.KVM_INTERNAL_ERROR_EMULATION: "EMULATION (KVM could not emulate the instruction)",
    abi.KVM_INTERNAL_ERROR_SIMUL_EX: "SIMUL_EX (exception while delivering an exception)",
    abi.KVM_INTERNAL_ERROR_DELIVERY_EV: "DELIVERY_EV (exit while delivering an event)",
    abi.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "UNEXPECTED_EXIT_REASON (KVM got a hardware exit it did not expect)",
}

SYSTEM_EVENTS = {
    abi.KVM_SYSTEM_EVENT_SHUTDOWN: "SHUTDOWN", abi.KVM_SYSTEM_EVENT_RESET: "RESET",
    abi.KVM_SYSTEM_EVENT_CRASH: "CRASH", abi.KVM_SYSTEM_EVENT_WAKEUP: "WAKEUP",
    abi.KVM_SYSTEM_EVENT_SUSPEND: "SUSPEND", abi.KVM_SYSTEM_EVENT_SEV_TERM: "SEV_TERM",
}

BYTES_AT_RIP = 16


def vmx_exit_name(reason):
    basic = reason & 0xFFFF
    name = VMX_EXIT_REASONS.get(basic, f"unknown basic reason {basic}")
    return f"{name}, VM-entry failure" if reason & VMX_ENTRY_FAILURE else name


def describe(exit):
    """One line naming the exit and its decoded reason."""
    if isinstance(exit, exits.InternalError):
        name = INTERNAL_SUBERRORS.get(exit.suberror, f"suberror {exit.suberror}")
        words = " ".join(f"{word:#x}" for word in exit.data)
        return f"INTERNAL_ERROR: {name}; data: [{words}]"
    if isinstance(exit, exits.Unknown):
        code = exit.hardware_exit_reason
        svm = SVM_EXIT_CODES.get(code, "not an SVM exit code")
        return (f"UNKNOWN: hardware_exit_reason {code:#x} "
                f"(VMX: {vmx_exit_name(code)}; SVM: {svm})")
    if isinstance(exit, exits.FailEntry):
        code = exit.hardware_entry_failure_reason
        text = (f"FAIL_ENTRY: hardware_entry_failure_reason {code:#x} "
                f"(VMX: {vmx_exit_name(code)}) on host CPU {exit.cpu}")
        if code == VMX_ENTRY_FAILURE | 33:
            text += ("; hint: invalid guest state: check segment registers against CR0.PE, "
                     "CR0/CR4/EFER consistency (paging needs PE and PAE for long mode) and the TR/LDTR")
        return text
    if isinstance(exit, exits.Shutdown):
        return "SHUTDOWN: the guest triple-faulted (or hit another shutdown condition)"
    if isinstance(exit, exits.SystemEvent):
        return f"SYSTEM_EVENT: {SYSTEM_EVENTS.get(exit.type, f'type {exit.type}')}"
    if isinstance(exit, exits.Malformed):
        return f"{exit.name}: malformed exit: {exit.why}"
    if isinstance(exit, exits.Unsupported):
        return f"{exit.name}: exit reason {exit.reason} is not handled by this VMM"
    return f"{exit.name}: not handled here ({exit!r})"


def _segment_line(name, seg):
    return (f"{name:<4} sel={seg.selector:#06x} base={seg.base:#018x} limit={seg.limit:#010x} "
            f"type={seg.type:#x} p={seg.present} dpl={seg.dpl} db={seg.db} s={seg.s} l={seg.l} g={seg.g}")


def bytes_at_rip(memory, regs, sregs, count=BYTES_AT_RIP):
    """Up to `count` bytes at RIP (not past its page), or None when RIP does not translate
    into RAM."""
    physical = paging.translate(memory, sregs, linear_rip(regs.rip, sregs))
    if physical is None:
        return None
    length = min(count, paging.PAGE_SIZE - (physical & ~paging.PAGE_MASK))
    if not memory.contains(physical, length):
        return None
    return memory.read(physical, length)


def state_report(vcpu, memory):
    """General, segment and control registers, and the bytes at RIP."""
    regs = vcpu.get_regs()
    sregs = vcpu.get_sregs()
    lines = []
    for row in range(0, len(GPRS), 4):
        lines.append("  ".join(f"{name.upper():>3}={getattr(regs, name):016x}" for name in GPRS[row:row + 4]))
    lines.append(f"RIP={regs.rip:016x}  RFLAGS={regs.rflags:016x}")
    for name in SEGMENT_REGISTERS + SYSTEM_SEGMENTS:
        lines.append(_segment_line(name.upper(), getattr(sregs, name)))
    lines.append(f"GDT base={sregs.gdt.base:#x} limit={sregs.gdt.limit:#x}  "
                 f"IDT base={sregs.idt.base:#x} limit={sregs.idt.limit:#x}")
    lines.append(f"CR0={sregs.cr0:#x} CR2={sregs.cr2:#x} CR3={sregs.cr3:#x} CR4={sregs.cr4:#x} "
                 f"CR8={sregs.cr8:#x} EFER={sregs.efer:#x}")
    code = bytes_at_rip(memory, regs, sregs)
    where = f"bytes at RIP (linear {linear_rip(regs.rip, sregs):#x})"
    lines.append(f"{where}: not in guest RAM" if code is None else f"{where}: {code.hex(' ')}")
    return "\n".join(lines)


def exit_report(exit, vcpu, memory):
    """The full report for an exit that stopped the guest."""
    header = f"vCPU {vcpu.id}: {describe(exit)}"
    try:
        return header + "\n" + state_report(vcpu, memory)
    except VmmError as error:
        return f"{header}\n(registers unavailable: {error})"
