"""Target descriptions: the registers gdb sees for a vCPU in 64-bit, 32-bit and 16-bit mode,
their order in `g` packets, and the XML (qXfer:features:read:target.xml) that tells gdb so.

The core, SSE and (64-bit) segment-base features carry the names gdb's i386 and amd64 code
looks for; the control registers are a feature of this VMM's own, in gdb's "system" group.
"""
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

# Where a register's value lives: (KVM structure, field); see registers.py.
REGS, SREGS, SEGMENT_BASE, FPU = "regs", "sregs", "segment_base", "fpu"


@dataclass(slots=True, frozen=True)
class Register:
    name: str
    bits: int
    type: str
    group: str | None
    feature: str
    source: tuple        # (REGS | SREGS | SEGMENT_BASE | FPU, field)


@dataclass(slots=True, frozen=True)
class Layout:
    """The registers of one description, in gdb's register-number order."""

    name: str            # "64", "32" or "16"
    architecture: str
    registers: tuple

    def index(self, name):
        return next(i for i, register in enumerate(self.registers) if register.name == name)

    @property
    def g_size(self):
        return sum(register.bits // 8 for register in self.registers)


CORE = "org.gnu.gdb.i386.core"
SSE = "org.gnu.gdb.i386.sse"
SEGMENTS = "org.gnu.gdb.i386.segments"
SYSTEM = "org.v2e-vmm.x86.system"

# gdb's general-register order: amd64 and i386 each have their own.
_AMD64_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
               "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_I386_GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
_X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")


def _layout(name, architecture, bits):
    wide = bits == 64
    registers = []
    gprs = _AMD64_GPRS if wide else _I386_GPRS
    for gpr in gprs:
        kind = "data_ptr" if gpr in ("rsp", "rbp", "esp", "ebp") else "int64" if wide else "int32"
        registers.append(Register(gpr, 64 if wide else 32, kind, "general", CORE,
                                  (REGS, gpr if wide else "r" + gpr[1:])))
    registers.append(Register("rip" if wide else "eip", 64 if wide else 32, "code_ptr", "general", CORE,
                              (REGS, "rip")))
    registers.append(Register("eflags", 32, "i386_eflags", "general", CORE, (REGS, "rflags")))
    for segment in _SEGMENTS:
        registers.append(Register(segment, 32, "int32", "general", CORE, (SREGS, segment)))
    for index in range(8):
        registers.append(Register(f"st{index}", 80, "i387_ext", "float", CORE, (FPU, index)))
    for control in _X87_CONTROL:
        registers.append(Register(control, 32, "int", "float", CORE, (FPU, control)))
    for index in range(16 if wide else 8):
        registers.append(Register(f"xmm{index}", 128, "vec128", "vector", SSE, (FPU, f"xmm{index}")))
    registers.append(Register("mxcsr", 32, "i386_mxcsr", "vector", SSE, (FPU, "mxcsr")))
    # gdb 13 knows the segment-base feature for amd64 only: an i386 description with it fails
    # an internal assertion, so there the bases join the control registers.
    for base in ("fs_base", "gs_base"):
        registers.append(Register(base, 64 if wide else 32, "int", None, SEGMENTS if wide else SYSTEM,
                                  (SEGMENT_BASE, base[:2])))
    for control in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer"):
        registers.append(Register(control, 64 if wide else 32, "int", "system", SYSTEM, (SREGS, control)))
    return Layout(name, architecture, tuple(registers))


LAYOUTS = {"64": _layout("64", "i386:x86-64", 64),
           "32": _layout("32", "i386", 32),
           "16": _layout("16", "i8086", 32)}


def layout_for_bits(bits):
    """The description for a vCPU whose code is `bits` wide (16, 32 or 64)."""
    return LAYOUTS[str(bits)]


_EFLAGS = (("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
           ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19),
           ("VIP", 20), ("ID", 21))
_MXCSR = (("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5), ("DAZ", 6), ("IM", 7),
          ("DM", 8), ("ZM", 9), ("OM", 10), ("UM", 11), ("PM", 12), ("FZ", 15))


def _flags(type_id, fields):
    lines = [f'<flags id="{type_id}" size="4">']
    lines += [f'<field name="{name}" start="{bit}" end="{bit}"/>' for name, bit in fields]
    lines.append("</flags>")
    return lines


_VECTOR_TYPES = [
    '<vector id="v4f" type="ieee_single" count="4"/>',
    '<vector id="v2d" type="ieee_double" count="2"/>',
    '<vector id="v16i8" type="int8" count="16"/>',
    '<vector id="v8i16" type="int16" count="8"/>',
    '<vector id="v4i32" type="int32" count="4"/>',
    '<vector id="v2i64" type="int64" count="2"/>',
    '<union id="vec128">',
    '<field name="v4_float" type="v4f"/>', '<field name="v2_double" type="v2d"/>',
    '<field name="v16_int8" type="v16i8"/>', '<field name="v8_int16" type="v8i16"/>',
    '<field name="v4_int32" type="v4i32"/>', '<field name="v2_int64" type="v2i64"/>',
    '<field name="uint128" type="uint128"/>',
    "</union>",
]


def target_xml(layout):
    """The target description of `layout`, one document without includes."""
    lines = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', "<target>",
             f"<architecture>{layout.architecture}</architecture>"]
    features = []
    for register in layout.registers:
        if register.feature not in features:
            features.append(register.feature)
    for feature in features:
        lines.append(f"<feature name={quoteattr(feature)}>")
        if feature == CORE:
            lines += _flags("i386_eflags", _EFLAGS)
        elif feature == SSE:
            lines += _VECTOR_TYPES + _flags("i386_mxcsr", _MXCSR)
        for number, register in enumerate(layout.registers):
            if register.feature != feature:
                continue
            group = f' group="{register.group}"' if register.group else ""
            lines.append(f'<reg name="{register.name}" bitsize="{register.bits}" type="{register.type}" '
                         f'regnum="{number}"{group}/>')
        lines.append("</feature>")
    lines.append("</target>")
    return ("\n".join(lines) + "\n").encode("ascii")
