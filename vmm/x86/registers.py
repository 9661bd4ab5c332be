"""x86-64 registers: their names, the order KVM's register structures keep them in, and the
architectural bits of the control, flags and EFER registers the VMM uses."""

# struct kvm_regs holds these 18 u64 in this order; traces and reports use the same order.
GENERAL_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
GPRS = GENERAL_REGISTERS[:16]
RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP = range(8)
R11 = GENERAL_REGISTERS.index("r11")
RIP = GENERAL_REGISTERS.index("rip")
RFLAGS = GENERAL_REGISTERS.index("rflags")

# struct kvm_sregs: the segment registers, the system segments and descriptor tables, and the
# control registers, by the names KVM gives them.
SEGMENT_REGISTERS = ("cs", "ds", "es", "fs", "gs", "ss")
SYSTEM_SEGMENTS = ("tr", "ldt")
SEGMENT_FIELDS = ("selector", "base", "limit", "type", "present", "dpl", "db", "s", "l", "g")
DESCRIPTOR_TABLES = ("gdt", "idt")
CONTROL_REGISTERS = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")

CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_PG = 1 << 31

CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12

EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

RFLAGS_FIXED = 1 << 1   # reads as 1 on every CPU
RFLAGS_TF = 1 << 8
RFLAGS_RF = 1 << 16   # the instruction at RIP runs once without its instruction breakpoint
RFLAGS_VM = 1 << 17   # virtual-8086 mode

# DR6: B0-B3 (breakpoint conditions met) and BS (single step); DR7: L0/G0 .. L3/G3.
DR6_B0_B3 = 0xF
DR6_BS = 1 << 14
DR7_ENABLE = tuple(3 << (2 * index) for index in range(4))
DR7_LOCAL = 0x55   # the L bits of DR7_ENABLE
DR7_CONDITION = tuple(3 << (16 + 4 * index) for index in range(4))   # R/W bits: 00 = execution

MSR_IA32_TSC = 0x10
MSR_TSC_AUX = 0xC0000103
MSR_LSTAR = 0xC0000082    # syscall's entry in 64-bit mode
MSR_CSTAR = 0xC0000083    # and in compatibility mode


def general_registers_as_dict(values):
    """{name: value} from the general registers in GENERAL_REGISTERS order."""
    return dict(zip(GENERAL_REGISTERS, values))


def special_registers_as_dict(sregs):
    """A struct kvm_sregs as nested dicts: each segment's fields, the descriptor tables, and
    the control registers."""
    values = {name: {field: getattr(getattr(sregs, name), field) for field in SEGMENT_FIELDS}
              for name in SEGMENT_REGISTERS + SYSTEM_SEGMENTS}
    for table in DESCRIPTOR_TABLES:
        values[table] = {"base": getattr(sregs, table).base, "limit": getattr(sregs, table).limit}
    values.update({name: getattr(sregs, name) for name in CONTROL_REGISTERS})
    return values
