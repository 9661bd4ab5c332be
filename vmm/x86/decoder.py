"""x86 instruction decoding for the tracer: length, prefixes, control flow and memory operands.

    from vmm.x86.decoder import decode, linear_address
    insn = decode(code, bits=64, vendor="amd")        # None: truncated, or longer than 15 bytes
    insn.length, insn.flow, insn.memory
    address = linear_address(insn.memory[0], regs, rip + insn.length, segment_base)

Covers 16-, 32- and 64-bit code: the one-byte map, 0F, 0F38, 0F3A, 3DNow! (0F 0F),
x87, VEX, EVEX (AVX-512 incl. FP16 maps 5 and 6), XOP and system instructions. The
opcode tables below are written in the notation of the Intel SDM's opcode tables (one
line per form); operand letters follow the SDM's Appendix A (E, G, M, W, V, I, J, O, X,
Y...), with the access of a memory-capable operand marked like a compiler's asm
constraint: `=` written, `+` read and written, nothing: read.

Choices worth knowing (they are the documented contract of `MemoryOperand`):
- `size` is the number of bytes one execution accesses through the operand, or None when
  it accesses none (lea, nop and hint forms, prefetch*, clflush/clflushopt/clwb/cldemote,
  invlpg, MPX address checks, monitor) or when the amount is not fixed by the encoding
  (the xsave/xrstor family, AMX tile loads and stores); `access` is None exactly when
  nothing is accessed. Broadcast (EVEX.b) operands report the element; gathers and
  scatters report one element (their addresses need the vector index, see
  `MemoryOperand.vsib`); expand and compress the whole vector (the mask decides how much
  of it is used, as it does for any masked access); `rep` string instructions one
  iteration; clzero the 64 bytes at rAX (the CPU clears the aligned line holding it).
- The address is the one the CPU computes: pop to an rSP-based address uses rSP after the
  pop (the displacement includes the slot); bt/bts/btr/btc with a register bit offset
  address the word the offset selects (`bit_offset`); xlat adds AL (`index_bits`).
- Implicit operands (`implicit=True`): string instructions' DS:rSI / ES:rDI, xlat, the
  stack slots of push/pop/call/ret/enter/leave/pusha/popa/pushf/popf/iret and far
  call/ret, maskmovq/maskmovdqu, movdir64b/enqcmd's destination, clzero's line and
  monitor's address. The stack is addressed with `stack_bits` (SS.B; by default the
  code size). int/int3/into/syscall/sysenter and exceptions may switch stacks: their
  frames are not reported.
- Far pointers with REX.W (jmp/call far indirect, lss/lfs/lgs): m16:64 on Intel, m16:32 on
  AMD, which ignores REX.W there. Near branches with 66 in 64-bit mode: Intel ignores the
  prefix (64-bit operand, rel32), AMD honours it (16-bit operand, rel16).
- In 64-bit mode only FS and GS overrides count (the last of them); the others are
  ignored, as the CPU ignores them.
- `known` checks the opcode under its mandatory prefix, the mode, ModRM forms, EVEX's
  fixed bits, a W that selects the instruction or that its element type fixes, and VSIB's
  SIB; not every vector-length restriction: a few #UD encodings (a 256-bit form of a
  128-bit-only instruction, say) decode as known, and the CPU's #UD then shows up to the
  tracer as RIP not moving on.
"""
import enum
from dataclasses import dataclass, replace

from .registers import GENERAL_REGISTERS as REGISTERS
from .registers import RAX, RBP, RBX, RCX, RDI, RDX, RIP, RSI, RSP

MAX_LENGTH = 15
# Registers in operands are indexes into a tuple in REGISTERS order (struct kvm_regs').
# ModRM, SIB and opcode register numbers (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8...) as REGISTERS indexes.
_GPR = (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, *range(8, 16))
# 16-bit ModRM r/m: (base, index) registers.
_ADDRESS16 = ((RBX, RSI), (RBX, RDI), (RBP, RSI), (RBP, RDI), (RSI, None), (RDI, None), (RBP, None), (RBX, None))
_SEGMENT_PREFIXES = {0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs"}
_VENDORS = ("intel", "amd")


class Flow(enum.Enum):
    """What the tracer must do after the instruction executes.

    FAR_OR_MODE_CHANGE: far jmp/call/ret, int/int3/into/int1, iret, syscall/sysret/
    sysenter/sysexit, loads of segment registers (mov/pop to one, lds/les/lfs/lgs/lss),
    wrfsbase/wrgsbase/swapgs, mov to CR or DR, clts, lmsw, lgdt/lidt/lldt/ltr, wrmsr,
    invlpg/invpcid/invlpga/invlpgb/tlbsync, rsm, VMX/SVM world switches (vmcall, vmrun,
    vmlaunch, vmload...), SGX/TXT entries, ud0/ud1/ud2, and anything undecodable.
    """
    ORDINARY = "ordinary"                        # nothing: RIP moves to the next instruction
    NEAR_BRANCH = "near_branch"                  # RIP may move anywhere in the same code segment
    FAR_OR_MODE_CHANGE = "far_or_mode_change"    # CS, mode, control/segment/descriptor/debug state or
                                                 # translations may change, or the bytes are undecodable
    HLT = "hlt"


class Encoding(enum.Enum):
    LEGACY = "legacy"
    VEX = "vex"
    EVEX = "evex"
    XOP = "xop"


@dataclass(slots=True, frozen=True)
class MemoryOperand:
    """One memory access of an instruction, as the effective-address parts it encodes.

    Registers are indexes into REGISTERS. `segment` is the effective segment after
    overrides and defaults; in 64-bit mode (`mode_bits` 64) only FS and GS have a base.
    `displacement` is signed (an absolute moffs is unsigned: it is an address).
    `index_bits` narrows the index register (xlat adds AL); `bit_offset` names the
    register whose signed value selects the word of a bit string (bt/bts/btr/btc with a
    register offset). A VSIB operand (`vsib`) has a vector register number as `index`.
    """
    segment: str
    base: int | None
    index: int | None
    scale: int
    displacement: int
    rip_relative: bool
    address_bits: int
    mode_bits: int
    size: int | None
    access: str | None
    implicit: bool = False
    index_bits: int | None = None
    bit_offset: int | None = None
    vsib: bool = False


@dataclass(slots=True, frozen=True)
class Instruction:
    """One decoded instruction.

    `opcode`: the primary opcode byte; 0x0Fxx for the two-byte map; 0x0F38xx, 0x0F3Axx
    and 0x0F0Fxx (3DNow!, by its suffix byte) for the three-byte maps; (map << 8) | opcode
    for VEX, EVEX and XOP (`encoding` tells them apart). `reg` is ModRM.reg (0-7) when
    there is a ModRM. The prefix fields say what was seen (`segment_prefix`: the last
    segment override byte, even where 64-bit mode ignores it; `rex`: the REX byte in
    effect, i.e. the last one, immediately before the opcode). `w` is REX.W, VEX.W,
    EVEX.W or XOP.W. `operand_bits` is the operand-size attribute (byte forms keep it;
    their memory operands say 1), `address_bits` the address size. `relative` is the
    signed displacement of a relative branch (see `branch_target`). `known` is False
    when this decoder does not know the bytes as an instruction in this mode (the CPU
    raises #UD, or an extension the tables lack): then `flow` is FAR_OR_MODE_CHANGE
    and `memory` is empty.
    """
    length: int
    encoding: Encoding
    opcode: int
    reg: int | None
    segment_prefix: str | None
    operand_size_prefix: bool
    address_size_prefix: bool
    repeat: str | None           # "rep" (F3) or "repne" (F2): the last of them
    lock: bool
    rex: int | None
    w: bool
    operand_bits: int
    address_bits: int
    flow: Flow
    branches_to_itself: bool
    relative: int | None
    memory: tuple[MemoryOperand, ...]
    known: bool

    def branch_target(self, rip):
        """Where a relative branch at `rip` goes when taken (None for other instructions)."""
        if self.relative is None:
            return None
        return (rip + self.length + self.relative) & ((1 << self.operand_bits) - 1)


def linear_address(operand, regs, next_rip, segment_base):
    """The linear address `operand` accesses, from the register values before the
    instruction (`regs` in REGISTERS order), the address of the next instruction (for
    RIP-relative forms) and `segment_base(name) -> int`. The effective address wraps
    at the address size; outside 64-bit mode the linear address wraps at 32 bits."""
    if operand.vsib:
        raise ValueError("a VSIB operand's addresses depend on a vector register")
    if operand.rip_relative:
        address = next_rip + operand.displacement
    else:
        address = operand.displacement
        if operand.base is not None:
            address += regs[operand.base]
        if operand.index is not None:
            index = regs[operand.index]
            if operand.index_bits is not None:
                index &= (1 << operand.index_bits) - 1
            address += index * operand.scale
        if operand.bit_offset is not None:
            bits = operand.size * 8
            offset = regs[operand.bit_offset] & ((1 << bits) - 1)
            if offset >> (bits - 1):
                offset -= 1 << bits
            address += (offset // bits) * operand.size
    address &= (1 << operand.address_bits) - 1
    if operand.mode_bits == 64:
        if operand.segment in ("fs", "gs"):
            address += segment_base(operand.segment)
        return address & 0xFFFF_FFFF_FFFF_FFFF
    return (address + segment_base(operand.segment)) & 0xFFFF_FFFF


# -- opcode tables ------------------------------------------------------------------------
#
# One line per form:   opcode | encodings | mnemonic operands | flags
#
# opcode: [PP.]MAP[.W0|.W1] OPCODE[-LAST] [/digit | /r] [m | r] [MODRM]
#   PP: NP, 66, F3 or F2, the mandatory prefix (VEX/EVEX/XOP pp); absent on a legacy line:
#   any prefix. MAP: absent for the one-byte map; 0F, 0F38, 0F3A; M5 and M6 (EVEX maps 5
#   and 6); X8, X9, XA (XOP). W: REX.W (legacy), VEX/EVEX/XOP.W. /digit: ModRM.reg;
#   m / r: ModRM.mod != 3 / == 3; MODRM: that exact ModRM byte.
# encodings: L legacy, V VEX, E EVEX, X XOP.
# operands (SDM Appendix A letters; first letter upper case: an addressing method):
#   E W Q  ModRM r/m, memory when mod != 3     M  memory only     R U N  register only
#   G V P S C D T K  ModRM.reg (a register)     H B  VEX.vvvv     Z  register in the opcode
#   I  immediate     J  relative branch     O  moffs     X Y  DS:rSI / ES:rDI     A  far ptr16:16/32
#   L  register in imm8[7:4]   lower case: a fixed register or constant (no encoding effect)
#   size after the letter: b w d q t(10) o(16) qq(32) zz(64) 48 512, v (operand size),
#   z (16 or 32), y (32 or 64), sxd (movsxd's source: z on Intel, 32 on AMD),
#   p (far pointer), s (6 or 10: descriptor table), a (two operand-size items: bound),
#   x h qr oc (the vector, half, quarter, eighth of it), dup (m64 for 128-bit vectors,
#   else the vector), e (scalar element, 4 << W), env fsave (x87 environment and state:
#   14/28, 94/108), bnd (bound pair: 8 or 16), 0 (no access), n (an access whose size the
#   encoding does not fix); prefix of a memory-capable operand: = written, + read and
#   written, none: read.
# flags: i64 / o64 invalid / only in 64-bit mode; d64 default 64-bit operand in 64-bit
#   mode; f64 near branch operand size (Intel: always 64 in 64-bit mode; AMD: as d64);
#   w64 operand size 64 in 64-bit mode, 32 elsewhere, whatever the prefixes;
#   flow: jmp (near branch), far, fault (always raises an exception), hlt; ud: the form
#   of another vendor's instruction (VIA PadLock): #UD on Intel and AMD, so not known;
#   stack and other implicit operands: push pop callf retf iret enter leave pusha popa
#   xlat maskmov8 maskmov16 clzero monitor dest64 (ES:[ModRM.reg], 64 bytes);
#   popm (pop to memory: the address uses rSP after the pop); bitoff (bit string offset
#   in ModRM.reg); ctrl (ModRM always a register: mov to/from CR, DR); vsib;
#   b4 b8 b2 bw (EVEX broadcast of 4, 8, 2 or 4 << W bytes; b4 b8 b2 also fix EVEX.W:
#   W0, W1, W0, the other W is #UD); n=e n=bw (EVEX disp8 scale: the element, 4 << W or
#   1 << W, whatever the operand size).

def _alu_rows():
    rows = []
    for row, name in enumerate(("add", "or", "adc", "sbb", "and", "sub", "xor", "cmp")):
        dest = "" if name == "cmp" else "+"
        first = row * 8
        rows += [f"{first:02X} | L | {name} {dest}Eb,Gb", f"{first + 1:02X} | L | {name} {dest}Ev,Gv",
                 f"{first + 2:02X} | L | {name} Gb,Eb", f"{first + 3:02X} | L | {name} Gv,Ev",
                 f"{first + 4:02X} | L | {name} al,Ib", f"{first + 5:02X} | L | {name} rax,Iz",
                 f"80 /{row} | L | {name} {dest}Eb,Ib", f"81 /{row} | L | {name} {dest}Ev,Iz",
                 f"82 /{row} | L | {name} {dest}Eb,Ib | i64", f"83 /{row} | L | {name} {dest}Ev,Ib"]
    for digit, name in enumerate(("rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar")):
        rows += [f"C0 /{digit} | L | {name} +Eb,Ib", f"C1 /{digit} | L | {name} +Ev,Ib",
                 f"D0 /{digit} | L | {name} +Eb,1", f"D1 /{digit} | L | {name} +Ev,1",
                 f"D2 /{digit} | L | {name} +Eb,cl", f"D3 /{digit} | L | {name} +Ev,cl"]
    return "\n".join(rows)


_ONE_BYTE = _alu_rows() + """
06 | L | push es | i64 push
07 | L | pop es | i64 pop far
0E | L | push cs | i64 push
16 | L | push ss | i64 push
17 | L | pop ss | i64 pop far
1E | L | push ds | i64 push
1F | L | pop ds | i64 pop far
27 | L | daa | i64
2F | L | das | i64
37 | L | aaa | i64
3F | L | aas | i64
40-47 | L | inc Zv | i64
48-4F | L | dec Zv | i64
50-57 | L | push Zv | d64 push
58-5F | L | pop Zv | d64 pop
60 | L | pusha | i64 pusha
61 | L | popa | i64 popa
62 | L | bound Gv,Ma | i64
63 | L | arpl +Ew,Gw | i64
63 | L | movsxd Gv,Esxd | o64
68 | L | push Iz | d64 push
69 | L | imul Gv,Ev,Iz
6A | L | push Ib | d64 push
6B | L | imul Gv,Ev,Ib
6C | L | ins =Yb,dx
6D | L | ins =Yz,dx
6E | L | outs dx,Xb
6F | L | outs dx,Xz
70-7F | L | jcc Jb | jmp f64
84 | L | test Eb,Gb
85 | L | test Ev,Gv
86 | L | xchg +Eb,Gb
87 | L | xchg +Ev,Gv
88 | L | mov =Eb,Gb
89 | L | mov =Ev,Gv
8A | L | mov Gb,Eb
8B | L | mov Gv,Ev
8C | L | mov =Ew,Sw
8D | L | lea Gv,M0
8E | L | mov Sw,Ew | far
8F /0 | L | pop =Ev | d64 pop popm
90 | L | nop
91-97 | L | xchg Zv,rax
98 | L | cbw
99 | L | cwd
9A | L | call Ap | i64 callf far
9B | L | fwait
9C | L | pushf | d64 push
9D | L | popf | d64 pop
9E | L | sahf
9F | L | lahf
A0 | L | mov al,Ob
A1 | L | mov rax,Ov
A2 | L | mov =Ob,al
A3 | L | mov =Ov,rax
A4 | L | movs =Yb,Xb
A5 | L | movs =Yv,Xv
A6 | L | cmps Xb,Yb
A7 | L | cmps Xv,Yv
A8 | L | test al,Ib
A9 | L | test rax,Iz
AA | L | stos =Yb,al
AB | L | stos =Yv,rax
AC | L | lods al,Xb
AD | L | lods rax,Xv
AE | L | scas al,Yb
AF | L | scas rax,Yv
B0-B7 | L | mov Zb,Ib
B8-BF | L | mov Zv,Iv
C2 | L | ret Iw | jmp f64 pop
C3 | L | ret | jmp f64 pop
C4 | L | les Gz,Mp | i64 far
C5 | L | lds Gz,Mp | i64 far
C6 /0 | L | mov =Eb,Ib
C6 F8 | L | xabort Ib
C7 /0 | L | mov =Ev,Iz
C7 F8 | L | xbegin Jz | jmp
C8 | L | enter Iw,Ib | d64 enter
C9 | L | leave | d64 leave
CA | L | retf Iw | far retf
CB | L | retf | far retf
CC | L | int3 | far
CD | L | int Ib | far
CE | L | into | i64 far
CF | L | iret | far iret
D4 | L | aam Ib | i64
D5 | L | aad Ib | i64
D6 | L | salc | i64
D7 | L | xlat | xlat
E0 | L | loopne Jb | jmp f64
E1 | L | loope Jb | jmp f64
E2 | L | loop Jb | jmp f64
E3 | L | jrcxz Jb | jmp f64
E4 | L | in al,Ib
E5 | L | in eax,Ib
E6 | L | out Ib,al
E7 | L | out Ib,eax
E8 | L | call Jz | jmp f64 push
E9 | L | jmp Jz | jmp f64
EA | L | jmp Ap | i64 far
EB | L | jmp Jb | jmp f64
EC | L | in al,dx
ED | L | in eax,dx
EE | L | out dx,al
EF | L | out dx,eax
F1 | L | int1 | far
F4 | L | hlt | hlt
F5 | L | cmc
F6 /0 | L | test Eb,Ib
F6 /1 | L | test Eb,Ib
F6 /2 | L | not +Eb
F6 /3 | L | neg +Eb
F6 /4 | L | mul Eb
F6 /5 | L | imul Eb
F6 /6 | L | div Eb
F6 /7 | L | idiv Eb
F7 /0 | L | test Ev,Iz
F7 /1 | L | test Ev,Iz
F7 /2 | L | not +Ev
F7 /3 | L | neg +Ev
F7 /4 | L | mul Ev
F7 /5 | L | imul Ev
F7 /6 | L | div Ev
F7 /7 | L | idiv Ev
F8 | L | clc
F9 | L | stc
FA | L | cli
FB | L | sti
FC | L | cld
FD | L | std
FE /0 | L | inc +Eb
FE /1 | L | dec +Eb
FF /0 | L | inc +Ev
FF /1 | L | dec +Ev
FF /2 | L | call Ev | jmp f64 push
FF /3 | L | call Mp | far callf
FF /4 | L | jmp Ev | jmp f64
FF /5 | L | jmp Mp | far
FF /6 | L | push Ev | d64 push
"""

_X87 = """
D8 /0 m | L | fadd Md
D8 /1 m | L | fmul Md
D8 /2 m | L | fcom Md
D8 /3 m | L | fcomp Md
D8 /4 m | L | fsub Md
D8 /5 m | L | fsubr Md
D8 /6 m | L | fdiv Md
D8 /7 m | L | fdivr Md
D9 /0 m | L | fld Md
D9 /2 m | L | fst =Md
D9 /3 m | L | fstp =Md
D9 /4 m | L | fldenv Menv
D9 /5 m | L | fldcw Mw
D9 /6 m | L | fnstenv =Menv
D9 /7 m | L | fnstcw =Mw
DA /0 m | L | fiadd Md
DA /1 m | L | fimul Md
DA /2 m | L | ficom Md
DA /3 m | L | ficomp Md
DA /4 m | L | fisub Md
DA /5 m | L | fisubr Md
DA /6 m | L | fidiv Md
DA /7 m | L | fidivr Md
DB /0 m | L | fild Md
DB /1 m | L | fisttp =Md
DB /2 m | L | fist =Md
DB /3 m | L | fistp =Md
DB /5 m | L | fld Mt
DB /7 m | L | fstp =Mt
DC /0 m | L | fadd Mq
DC /1 m | L | fmul Mq
DC /2 m | L | fcom Mq
DC /3 m | L | fcomp Mq
DC /4 m | L | fsub Mq
DC /5 m | L | fsubr Mq
DC /6 m | L | fdiv Mq
DC /7 m | L | fdivr Mq
DD /0 m | L | fld Mq
DD /1 m | L | fisttp =Mq
DD /2 m | L | fst =Mq
DD /3 m | L | fstp =Mq
DD /4 m | L | frstor Mfsave
DD /6 m | L | fnsave =Mfsave
DD /7 m | L | fnstsw =Mw
DE /0 m | L | fiadd Mw
DE /1 m | L | fimul Mw
DE /2 m | L | ficom Mw
DE /3 m | L | ficomp Mw
DE /4 m | L | fisub Mw
DE /5 m | L | fisubr Mw
DE /6 m | L | fidiv Mw
DE /7 m | L | fidivr Mw
DF /0 m | L | fild Mw
DF /1 m | L | fisttp =Mw
DF /2 m | L | fist =Mw
DF /3 m | L | fistp =Mw
DF /4 m | L | fbld Mt
DF /5 m | L | fild Mq
DF /6 m | L | fbstp =Mt
DF /7 m | L | fistp =Mq
D8-DF r | L | x87 (register forms)
"""

_TWO_BYTE = """
0F 00 /0 | L | sldt =Ew
0F 00 /1 | L | str =Ew
0F 00 /2 | L | lldt Ew | far
0F 00 /3 | L | ltr Ew | far
0F 00 /4 | L | verr Ew
0F 00 /5 | L | verw Ew
0F 01 /0 m | L | sgdt =Ms
0F 01 /1 m | L | sidt =Ms
0F 01 /2 m | L | lgdt Ms | far
0F 01 /3 m | L | lidt Ms | far
0F 01 /4 | L | smsw =Ew
F3.0F 01 /5 m | L | rstorssp +Mq
0F 01 /6 | L | lmsw Ew | far
0F 01 /7 m | L | invlpg M0 | far
0F 01 C0 | L | enclv | far
0F 01 C1 | L | vmcall | far
0F 01 C2 | L | vmlaunch | far
0F 01 C3 | L | vmresume | far
0F 01 C4 | L | vmxoff | far
NP.0F 01 C5 | L | pconfig
NP.0F 01 C6 | L | wrmsrns | far
F2.0F 01 C6 | L | rdmsrlist
F3.0F 01 C6 | L | wrmsrlist | far
0F 01 C8 | L | monitor | monitor
0F 01 C9 | L | mwait
0F 01 CA | L | clac
0F 01 CB | L | stac
0F 01 CF | L | encls | far
0F 01 D0 | L | xgetbv
0F 01 D1 | L | xsetbv
0F 01 D4 | L | vmfunc | far
0F 01 D5 | L | xend
0F 01 D6 | L | xtest
0F 01 D7 | L | enclu | far
0F 01 D8 | L | vmrun | far
0F 01 D9 | L | vmmcall | far
0F 01 DA | L | vmload | far
0F 01 DB | L | vmsave
0F 01 DC | L | stgi
0F 01 DD | L | clgi
0F 01 DE | L | skinit | far
0F 01 DF | L | invlpga | far
NP.0F 01 E8 | L | serialize
F3.0F 01 E8 | L | setssbsy
F2.0F 01 E8 | L | xsusldtrk
F2.0F 01 E9 | L | xresldtrk
F3.0F 01 EA | L | saveprevssp
F3.0F 01 EC | L | uiret | o64 far
F3.0F 01 ED | L | testui | o64
F3.0F 01 EE | L | clui | o64
F3.0F 01 EF | L | stui | o64
NP.0F 01 EE | L | rdpkru
NP.0F 01 EF | L | wrpkru
0F 01 F8 | L | swapgs | o64 far
0F 01 F9 | L | rdtscp
NP.0F 01 FA | L | monitorx | monitor
F3.0F 01 FA | L | mcommit
NP.0F 01 FB | L | mwaitx
NP.0F 01 FC | L | clzero | clzero
NP.0F 01 FD | L | rdpru
NP.0F 01 FE | L | invlpgb | far
F3.0F 01 FE | L | rmpadjust | o64
F2.0F 01 FE | L | rmpupdate | o64
NP.0F 01 FF | L | tlbsync | far
F3.0F 01 FF | L | psmash | o64
F2.0F 01 FF | L | pvalidate
0F 02 | L | lar Gv,Ew
0F 03 | L | lsl Gv,Ew
0F 05 | L | syscall | far
0F 06 | L | clts | far
0F 07 | L | sysret | far
0F 08 | L | invd
0F 09 | L | wbinvd
0F 0B | L | ud2 | fault
0F 0D m | L | prefetch M0
0F 0D r | L | nop Rv
0F 0E | L | femms
NP.0F 10 | LVE | movups V,Wx
66.0F 10 | LVE | movupd V,Wx
F3.0F 10 | LVE | movss V,Wd
F2.0F 10 | LVE | movsd V,Wq
NP.0F 11 | LVE | movups =Wx,V
66.0F 11 | LVE | movupd =Wx,V
F3.0F 11 | LVE | movss =Wd,V
F2.0F 11 | LVE | movsd =Wq,V
NP.0F 12 m | LVE | movlps V,Mq
NP.0F 12 r | LVE | movhlps V,U
66.0F 12 m | LVE | movlpd V,Mq
F3.0F 12 | LVE | movsldup V,Wx
F2.0F 12 | LVE | movddup V,Wdup
NP.0F 13 | LVE | movlps =Mq,V
66.0F 13 | LVE | movlpd =Mq,V
NP.0F 14 | LVE | unpcklps V,Wx | b4
66.0F 14 | LVE | unpcklpd V,Wx | b8
NP.0F 15 | LVE | unpckhps V,Wx | b4
66.0F 15 | LVE | unpckhpd V,Wx | b8
NP.0F 16 m | LVE | movhps V,Mq
NP.0F 16 r | LVE | movlhps V,U
66.0F 16 m | LVE | movhpd V,Mq
F3.0F 16 | LVE | movshdup V,Wx
NP.0F 17 | LVE | movhps =Mq,V
66.0F 17 | LVE | movhpd =Mq,V
0F 18 /0 m | L | prefetchnta M0
0F 18 /1 m | L | prefetcht0 M0
0F 18 /2 m | L | prefetcht1 M0
0F 18 /3 m | L | prefetcht2 M0
0F 18 | L | nop E0
0F 19 | L | nop E0
NP.0F 1A m | L | bndldx G,M0
F3.0F 1A | L | bndcl G,E0
F2.0F 1A | L | bndcu G,E0
66.0F 1A | L | bndmov G,Wbnd
0F 1A | L | nop E0
NP.0F 1B m | L | bndstx M0,G
F3.0F 1B m | L | bndmk G,M0
F2.0F 1B | L | bndcn G,E0
66.0F 1B | L | bndmov =Wbnd,G
0F 1B | L | nop E0
NP.0F 1C /0 m | L | cldemote M0
0F 1C | L | nop E0
0F 1D | L | nop E0
F3.0F 1E FA | L | endbr64
F3.0F 1E FB | L | endbr32
F3.0F 1E /1 r | L | rdssp Ry
0F 1E | L | nop E0
0F 1F | L | nop E0
0F 20 | L | mov Rd,Cd | ctrl w64
0F 21 | L | mov Rd,Dd | ctrl w64
0F 22 | L | mov Cd,Rd | ctrl w64 far
0F 23 | L | mov Dd,Rd | ctrl w64 far
0F 24 | L | mov Rd,Td | ctrl i64 fault
0F 26 | L | mov Td,Rd | ctrl i64 fault
NP.0F 28 | LVE | movaps V,Wx
66.0F 28 | LVE | movapd V,Wx
NP.0F 29 | LVE | movaps =Wx,V
66.0F 29 | LVE | movapd =Wx,V
NP.0F 2A | L | cvtpi2ps V,Qq
66.0F 2A | L | cvtpi2pd V,Qq
F3.0F 2A | LVE | cvtsi2ss V,Ey
F2.0F 2A | LVE | cvtsi2sd V,Ey
NP.0F 2B | LVE | movntps =Mx,V
66.0F 2B | LVE | movntpd =Mx,V
F3.0F 2B | L | movntss =Md,V
F2.0F 2B | L | movntsd =Mq,V
NP.0F 2C | L | cvttps2pi P,Wq
66.0F 2C | L | cvttpd2pi P,Wo
F3.0F 2C | LVE | cvttss2si Gy,Wd
F2.0F 2C | LVE | cvttsd2si Gy,Wq
NP.0F 2D | L | cvtps2pi P,Wq
66.0F 2D | L | cvtpd2pi P,Wo
F3.0F 2D | LVE | cvtss2si Gy,Wd
F2.0F 2D | LVE | cvtsd2si Gy,Wq
NP.0F 2E | LVE | ucomiss V,Wd
66.0F 2E | LVE | ucomisd V,Wq
NP.0F 2F | LVE | comiss V,Wd
66.0F 2F | LVE | comisd V,Wq
0F 30 | L | wrmsr | far
0F 31 | L | rdtsc
0F 32 | L | rdmsr
0F 33 | L | rdpmc
0F 34 | L | sysenter | far
0F 35 | L | sysexit | far
0F 37 | L | getsec | far
0F 40-4F | L | cmovcc Gv,Ev
NP.0F 50 | LV | movmskps Gd,U
66.0F 50 | LV | movmskpd Gd,U
NP.0F 51 | LVE | sqrtps V,Wx | b4
66.0F 51 | LVE | sqrtpd V,Wx | b8
F3.0F 51 | LVE | sqrtss V,Wd
F2.0F 51 | LVE | sqrtsd V,Wq
NP.0F 52 | LV | rsqrtps V,Wx
F3.0F 52 | LV | rsqrtss V,Wd
NP.0F 53 | LV | rcpps V,Wx
F3.0F 53 | LV | rcpss V,Wd
NP.0F 54 | LVE | andps V,Wx | b4
66.0F 54 | LVE | andpd V,Wx | b8
NP.0F 55 | LVE | andnps V,Wx | b4
66.0F 55 | LVE | andnpd V,Wx | b8
NP.0F 56 | LVE | orps V,Wx | b4
66.0F 56 | LVE | orpd V,Wx | b8
NP.0F 57 | LVE | xorps V,Wx | b4
66.0F 57 | LVE | xorpd V,Wx | b8
NP.0F 58 | LVE | addps V,Wx | b4
66.0F 58 | LVE | addpd V,Wx | b8
F3.0F 58 | LVE | addss V,Wd
F2.0F 58 | LVE | addsd V,Wq
NP.0F 59 | LVE | mulps V,Wx | b4
66.0F 59 | LVE | mulpd V,Wx | b8
F3.0F 59 | LVE | mulss V,Wd
F2.0F 59 | LVE | mulsd V,Wq
NP.0F 5A | LVE | cvtps2pd V,Wh | b4
66.0F 5A | LVE | cvtpd2ps V,Wx | b8
F3.0F 5A | LVE | cvtss2sd V,Wd
F2.0F 5A | LVE | cvtsd2ss V,Wq
NP.0F 5B | LV | cvtdq2ps V,Wx
NP.0F.W0 5B | E | cvtdq2ps V,Wx | b4
NP.0F.W1 5B | E | cvtqq2ps V,Wx | b8
66.0F 5B | LVE | cvtps2dq V,Wx | b4
F3.0F 5B | LVE | cvttps2dq V,Wx | b4
NP.0F 5C | LVE | subps V,Wx | b4
66.0F 5C | LVE | subpd V,Wx | b8
F3.0F 5C | LVE | subss V,Wd
F2.0F 5C | LVE | subsd V,Wq
NP.0F 5D | LVE | minps V,Wx | b4
66.0F 5D | LVE | minpd V,Wx | b8
F3.0F 5D | LVE | minss V,Wd
F2.0F 5D | LVE | minsd V,Wq
NP.0F 5E | LVE | divps V,Wx | b4
66.0F 5E | LVE | divpd V,Wx | b8
F3.0F 5E | LVE | divss V,Wd
F2.0F 5E | LVE | divsd V,Wq
NP.0F 5F | LVE | maxps V,Wx | b4
66.0F 5F | LVE | maxpd V,Wx | b8
F3.0F 5F | LVE | maxss V,Wd
F2.0F 5F | LVE | maxsd V,Wq
NP.0F 60 | L | punpcklbw P,Qd
NP.0F 61 | L | punpcklwd P,Qd
NP.0F 62 | L | punpckldq P,Qd
NP.0F 63 | L | packsswb P,Qq
NP.0F 64 | L | pcmpgtb P,Qq
NP.0F 65 | L | pcmpgtw P,Qq
NP.0F 66 | L | pcmpgtd P,Qq
NP.0F 67 | L | packuswb P,Qq
NP.0F 68 | L | punpckhbw P,Qq
NP.0F 69 | L | punpckhwd P,Qq
NP.0F 6A | L | punpckhdq P,Qq
NP.0F 6B | L | packssdw P,Qq
66.0F 60 | LVE | punpcklbw V,Wx
66.0F 61 | LVE | punpcklwd V,Wx
66.0F 62 | LVE | punpckldq V,Wx | b4
66.0F 63 | LVE | packsswb V,Wx
66.0F 64 | LVE | pcmpgtb V,Wx
66.0F 65 | LVE | pcmpgtw V,Wx
66.0F 66 | LVE | pcmpgtd V,Wx | b4
66.0F 67 | LVE | packuswb V,Wx
66.0F 68 | LVE | punpckhbw V,Wx
66.0F 69 | LVE | punpckhwd V,Wx
66.0F 6A | LVE | punpckhdq V,Wx | b4
66.0F 6B | LVE | packssdw V,Wx | b4
66.0F 6C | LVE | punpcklqdq V,Wx | b8
66.0F 6D | LVE | punpckhqdq V,Wx | b8
NP.0F 6E | L | movd P,Ey
66.0F 6E | LVE | movd V,Ey
NP.0F 6F | L | movq P,Qq
66.0F 6F | LVE | movdqa V,Wx
F3.0F 6F | LVE | movdqu V,Wx
F2.0F 6F | E | movdqu8 V,Wx
NP.0F 70 | L | pshufw P,Qq,Ib
66.0F 70 | LVE | pshufd V,Wx,Ib | b4
F3.0F 70 | LVE | pshufhw V,Wx,Ib
F2.0F 70 | LVE | pshuflw V,Wx,Ib
NP.0F 71 /2 r | L | psrlw N,Ib
NP.0F 71 /4 r | L | psraw N,Ib
NP.0F 71 /6 r | L | psllw N,Ib
66.0F 71 /2 r | LV | psrlw U,Ib
66.0F 71 /4 r | LV | psraw U,Ib
66.0F 71 /6 r | LV | psllw U,Ib
66.0F 71 /2 | E | psrlw H,Wx,Ib
66.0F 71 /4 | E | psraw H,Wx,Ib
66.0F 71 /6 | E | psllw H,Wx,Ib
NP.0F 72 /2 r | L | psrld N,Ib
NP.0F 72 /4 r | L | psrad N,Ib
NP.0F 72 /6 r | L | pslld N,Ib
66.0F 72 /2 r | LV | psrld U,Ib
66.0F 72 /4 r | LV | psrad U,Ib
66.0F 72 /6 r | LV | pslld U,Ib
66.0F 72 /0 | E | prord H,Wx,Ib | bw
66.0F 72 /1 | E | prold H,Wx,Ib | bw
66.0F 72 /2 | E | psrld H,Wx,Ib | b4
66.0F 72 /4 | E | psrad H,Wx,Ib | bw
66.0F 72 /6 | E | pslld H,Wx,Ib | b4
NP.0F 73 /2 r | L | psrlq N,Ib
NP.0F 73 /6 r | L | psllq N,Ib
66.0F 73 /2 r | LV | psrlq U,Ib
66.0F 73 /3 r | LV | psrldq U,Ib
66.0F 73 /6 r | LV | psllq U,Ib
66.0F 73 /7 r | LV | pslldq U,Ib
66.0F 73 /2 | E | psrlq H,Wx,Ib | b8
66.0F 73 /3 | E | psrldq H,Wx,Ib
66.0F 73 /6 | E | psllq H,Wx,Ib | b8
66.0F 73 /7 | E | pslldq H,Wx,Ib
NP.0F 74 | L | pcmpeqb P,Qq
NP.0F 75 | L | pcmpeqw P,Qq
NP.0F 76 | L | pcmpeqd P,Qq
66.0F 74 | LVE | pcmpeqb V,Wx
66.0F 75 | LVE | pcmpeqw V,Wx
66.0F 76 | LVE | pcmpeqd V,Wx | b4
NP.0F 77 | LV | emms
NP.0F 78 | L | vmread =Ey,Gy | w64
66.0F 78 /0 r | L | extrq U,Ib,Ib
F2.0F 78 r | L | insertq V,U,Ib,Ib
NP.0F 79 | L | vmwrite Gy,Ey | w64
66.0F 79 r | L | extrq V,U
F2.0F 79 r | L | insertq V,U
NP.0F.W0 78 | E | cvttps2udq V,Wx | b4
NP.0F.W1 78 | E | cvttpd2udq V,Wx | b8
66.0F.W0 78 | E | cvttps2uqq V,Wh | b4
66.0F.W1 78 | E | cvttpd2uqq V,Wx | b8
F3.0F 78 | E | cvttss2usi Gy,Wd
F2.0F 78 | E | cvttsd2usi Gy,Wq
NP.0F.W0 79 | E | cvtps2udq V,Wx | b4
NP.0F.W1 79 | E | cvtpd2udq V,Wx | b8
66.0F.W0 79 | E | cvtps2uqq V,Wh | b4
66.0F.W1 79 | E | cvtpd2uqq V,Wx | b8
F3.0F 79 | E | cvtss2usi Gy,Wd
F2.0F 79 | E | cvtsd2usi Gy,Wq
66.0F.W0 7A | E | cvttps2qq V,Wh | b4
66.0F.W1 7A | E | cvttpd2qq V,Wx | b8
F3.0F.W0 7A | E | cvtudq2pd V,Wh | b4
F3.0F.W1 7A | E | cvtuqq2pd V,Wx | b8
F2.0F.W0 7A | E | cvtudq2ps V,Wx | b4
F2.0F.W1 7A | E | cvtuqq2ps V,Wx | b8
66.0F.W0 7B | E | cvtps2qq V,Wh | b4
66.0F.W1 7B | E | cvtpd2qq V,Wx | b8
F3.0F 7B | E | cvtusi2ss V,H,Ey
F2.0F 7B | E | cvtusi2sd V,H,Ey
66.0F 7C | LV | haddpd V,Wx
F2.0F 7C | LV | haddps V,Wx
66.0F 7D | LV | hsubpd V,Wx
F2.0F 7D | LV | hsubps V,Wx
NP.0F 7E | L | movd =Ey,P
66.0F 7E | LVE | movd =Ey,V
F3.0F 7E | LVE | movq V,Wq
NP.0F 7F | L | movq =Qq,P
66.0F 7F | LVE | movdqa =Wx,V
F3.0F 7F | LVE | movdqu =Wx,V
F2.0F 7F | E | movdqu8 =Wx,V
0F 80-8F | L | jcc Jz | jmp f64
0F 90-9F | L | setcc =Eb
NP.0F.W0 90 | V | kmovw K,Ww
NP.0F.W1 90 | V | kmovq K,Wq
66.0F.W0 90 | V | kmovb K,Wb
66.0F.W1 90 | V | kmovd K,Wd
NP.0F.W0 91 | V | kmovw =Mw,K
NP.0F.W1 91 | V | kmovq =Mq,K
66.0F.W0 91 | V | kmovb =Mb,K
66.0F.W1 91 | V | kmovd =Md,K
NP.0F 92 r | V | kmovw K,Rd
66.0F 92 r | V | kmovb K,Rd
F2.0F 92 r | V | kmovd K,Ry
NP.0F 93 r | V | kmovw G,R
66.0F 93 r | V | kmovb G,R
F2.0F 93 r | V | kmovd G,R
NP.0F 41-47 r | V | kop K,H,R
66.0F 41-47 r | V | kop K,H,R
NP.0F 4A-4B r | V | kop K,H,R
66.0F 4A-4B r | V | kop K,H,R
NP.0F 98-99 r | V | kortest K,R
66.0F 98-99 r | V | kortest K,R
0F A0 | L | push fs | d64 push
0F A1 | L | pop fs | d64 pop far
0F A2 | L | cpuid
0F A3 | L | bt Ev,Gv | bitoff
0F A4 | L | shld +Ev,Gv,Ib
0F A5 | L | shld +Ev,Gv,cl
0F A8 | L | push gs | d64 push
0F A9 | L | pop gs | d64 pop far
0F AA | L | rsm | far
0F AB | L | bts +Ev,Gv | bitoff
0F AC | L | shrd +Ev,Gv,Ib
0F AD | L | shrd +Ev,Gv,cl
0F AE /0 m | L | fxsave =M512
0F AE /1 m | L | fxrstor M512
0F AE /2 m | LV | ldmxcsr Md
0F AE /3 m | LV | stmxcsr =Md
0F AE /4 m | L | xsave =Mn
0F AE /5 m | L | xrstor Mn
0F AE /6 m | L | xsaveopt =Mn
0F AE /7 m | L | clflush M0
66.0F AE /6 m | L | clwb M0
66.0F AE /7 m | L | clflushopt M0
F3.0F AE /4 m | L | ptwrite Ey
F3.0F AE /6 m | L | clrssbsy +Mq
F3.0F AE /0 r | L | rdfsbase Ry | o64
F3.0F AE /1 r | L | rdgsbase Ry | o64
F3.0F AE /2 r | L | wrfsbase Ry | o64 far
F3.0F AE /3 r | L | wrgsbase Ry | o64 far
F3.0F AE /4 r | L | ptwrite Ry
F3.0F AE /5 r | L | incssp Ry
F3.0F AE /6 r | L | umonitor Rv
F2.0F AE /6 r | L | umwait Rd
66.0F AE /6 r | L | tpause Rd
0F AE /5 r | L | lfence
0F AE /6 r | L | mfence
0F AE /7 r | L | sfence
0F A6 C0 | L | montmul | ud
0F A6 C8 | L | xsha1 | ud
0F A6 D0 | L | xsha256 | ud
0F A7 C0 | L | xstore | ud
0F A7 C8 | L | xcryptecb | ud
0F A7 D0 | L | xcryptcbc | ud
0F A7 D8 | L | xcryptctr | ud
0F A7 E0 | L | xcryptcfb | ud
0F A7 E8 | L | xcryptofb | ud
0F AF | L | imul Gv,Ev
0F B0 | L | cmpxchg +Eb,Gb
0F B1 | L | cmpxchg +Ev,Gv
0F B2 | L | lss Gv,Mp | far
0F B3 | L | btr +Ev,Gv | bitoff
0F B4 | L | lfs Gv,Mp | far
0F B5 | L | lgs Gv,Mp | far
0F B6 | L | movzx Gv,Eb
0F B7 | L | movzx Gv,Ew
F3.0F B8 | L | popcnt Gv,Ev
0F B9 | L | ud1 Gv,E0 | fault
0F BA /4 | L | bt Ev,Ib
0F BA /5 | L | bts +Ev,Ib
0F BA /6 | L | btr +Ev,Ib
0F BA /7 | L | btc +Ev,Ib
0F BB | L | btc +Ev,Gv | bitoff
0F BC | L | bsf Gv,Ev
F3.0F BC | L | tzcnt Gv,Ev
0F BD | L | bsr Gv,Ev
F3.0F BD | L | lzcnt Gv,Ev
0F BE | L | movsx Gv,Eb
0F BF | L | movsx Gv,Ew
0F C0 | L | xadd +Eb,Gb
0F C1 | L | xadd +Ev,Gv
NP.0F C2 | LVE | cmpps V,Wx,Ib | b4
66.0F C2 | LVE | cmppd V,Wx,Ib | b8
F3.0F C2 | LVE | cmpss V,Wd,Ib
F2.0F C2 | LVE | cmpsd V,Wq,Ib
NP.0F C3 | L | movnti =My,Gy
NP.0F C4 | L | pinsrw P,Ew,Ib
66.0F C4 | LVE | pinsrw V,Ew,Ib
NP.0F C5 r | L | pextrw Gd,N,Ib
66.0F C5 r | LVE | pextrw Gd,U,Ib
NP.0F C6 | LVE | shufps V,Wx,Ib | b4
66.0F C6 | LVE | shufpd V,Wx,Ib | b8
0F.W0 C7 /1 m | L | cmpxchg8b +Mq
0F.W1 C7 /1 m | L | cmpxchg16b +Mo
0F C7 /3 m | L | xrstors Mn
0F C7 /4 m | L | xsavec =Mn
0F C7 /5 m | L | xsaves =Mn
NP.0F C7 /6 m | L | vmptrld Mq
66.0F C7 /6 m | L | vmclear Mq
F3.0F C7 /6 m | L | vmxon Mq | far
0F C7 /7 m | L | vmptrst =Mq
F3.0F C7 /6 r | L | senduipi Rq | o64
F3.0F C7 /7 r | L | rdpid Ry | w64
0F C7 /6 r | L | rdrand Rv
0F C7 /7 r | L | rdseed Rv
0F C8-CF | L | bswap Zv
66.0F D0 | LV | addsubpd V,Wx
F2.0F D0 | LV | addsubps V,Wx
NP.0F D1 | L | psrlw P,Qq
NP.0F D2 | L | psrld P,Qq
NP.0F D3 | L | psrlq P,Qq
NP.0F D4 | L | paddq P,Qq
NP.0F D5 | L | pmullw P,Qq
66.0F D1 | LVE | psrlw V,Wo
66.0F D2 | LVE | psrld V,Wo
66.0F D3 | LVE | psrlq V,Wo
66.0F D4 | LVE | paddq V,Wx | b8
66.0F D5 | LVE | pmullw V,Wx
66.0F D6 | LVE | movq =Wq,V
F3.0F D6 r | L | movq2dq V,N
F2.0F D6 r | L | movdq2q P,U
NP.0F D7 r | L | pmovmskb Gd,N
66.0F D7 r | LV | pmovmskb Gd,U
NP.0F D8-DF | L | mmx P,Qq
66.0F D8 | LVE | psubusb V,Wx
66.0F D9 | LVE | psubusw V,Wx
66.0F DA | LVE | pminub V,Wx
66.0F DB | LVE | pand V,Wx | bw
66.0F DC | LVE | paddusb V,Wx
66.0F DD | LVE | paddusw V,Wx
66.0F DE | LVE | pmaxub V,Wx
66.0F DF | LVE | pandn V,Wx | bw
NP.0F E0-E5 | L | mmx P,Qq
66.0F E0 | LVE | pavgb V,Wx
66.0F E1 | LVE | psraw V,Wo
66.0F E2 | LVE | psrad V,Wo
66.0F E3 | LVE | pavgw V,Wx
66.0F E4 | LVE | pmulhuw V,Wx
66.0F E5 | LVE | pmulhw V,Wx
66.0F E6 | LVE | cvttpd2dq V,Wx | b8
F3.0F E6 | LV | cvtdq2pd V,Wh
F3.0F.W0 E6 | E | cvtdq2pd V,Wh | b4
F3.0F.W1 E6 | E | cvtqq2pd V,Wx | b8
F2.0F E6 | LVE | cvtpd2dq V,Wx | b8
NP.0F E7 | L | movntq =Mq,P
66.0F E7 | LVE | movntdq =Mx,V
NP.0F E8-EF | L | mmx P,Qq
66.0F E8 | LVE | psubsb V,Wx
66.0F E9 | LVE | psubsw V,Wx
66.0F EA | LVE | pminsw V,Wx
66.0F EB | LVE | por V,Wx | bw
66.0F EC | LVE | paddsb V,Wx
66.0F ED | LVE | paddsw V,Wx
66.0F EE | LVE | pmaxsw V,Wx
66.0F EF | LVE | pxor V,Wx | bw
F2.0F F0 | LV | lddqu V,Mx
NP.0F F1-F6 | L | mmx P,Qq
66.0F F1 | LVE | psllw V,Wo
66.0F F2 | LVE | pslld V,Wo
66.0F F3 | LVE | psllq V,Wo
66.0F F4 | LVE | pmuludq V,Wx | b8
66.0F F5 | LVE | pmaddwd V,Wx
66.0F F6 | LVE | psadbw V,Wx
NP.0F F7 r | L | maskmovq P,N | maskmov8
66.0F F7 r | LV | maskmovdqu V,U | maskmov16
NP.0F F8-FE | L | mmx P,Qq
66.0F F8 | LVE | psubb V,Wx
66.0F F9 | LVE | psubw V,Wx
66.0F FA | LVE | psubd V,Wx | b4
66.0F FB | LVE | psubq V,Wx | b8
66.0F FC | LVE | paddb V,Wx
66.0F FD | LVE | paddw V,Wx
66.0F FE | LVE | paddd V,Wx | b4
0F FF | L | ud0 Gv,E0 | fault
"""

_0F38 = """
NP.0F38 00-0B | L | ssse3 P,Qq
NP.0F38 1C-1E | L | ssse3 P,Qq
66.0F38 00 | LVE | pshufb V,Wx
66.0F38 01 | LV | phaddw V,Wx
66.0F38 02 | LV | phaddd V,Wx
66.0F38 03 | LV | phaddsw V,Wx
66.0F38 04 | LVE | pmaddubsw V,Wx
66.0F38 05 | LV | phsubw V,Wx
66.0F38 06 | LV | phsubd V,Wx
66.0F38 07 | LV | phsubsw V,Wx
66.0F38 08 | LV | psignb V,Wx
66.0F38 09 | LV | psignw V,Wx
66.0F38 0A | LV | psignd V,Wx
66.0F38 0B | LVE | pmulhrsw V,Wx
66.0F38 0C | V | vpermilps V,H,Wx
66.0F38 0D | V | vpermilpd V,H,Wx
66.0F38.W0 0C | E | vpermilps V,H,Wx | b4
66.0F38.W1 0D | E | vpermilpd V,H,Wx | b8
66.0F38 0E | V | vtestps V,Wx
66.0F38 0F | V | vtestpd V,Wx
66.0F38 10 | L | pblendvb V,Wx,xmm0
66.0F38 14 | L | blendvps V,Wx,xmm0
66.0F38 15 | L | blendvpd V,Wx,xmm0
66.0F38 10 | E | vpsrlvw V,H,Wx
66.0F38 11 | E | vpsravw V,H,Wx
66.0F38 12 | E | vpsllvw V,H,Wx
66.0F38 13 | VE | vcvtph2ps V,Wh
66.0F38 14 | E | vprorv V,H,Wx | bw
66.0F38 15 | E | vprolv V,H,Wx | bw
F3.0F38 10 | E | vpmovuswb =Wh,V
F3.0F38 11 | E | vpmovusdb =Wqr,V
F3.0F38 12 | E | vpmovusqb =Woc,V
F3.0F38 13 | E | vpmovusdw =Wh,V
F3.0F38 14 | E | vpmovusqw =Wqr,V
F3.0F38 15 | E | vpmovusqd =Wh,V
66.0F38 16 | VE | vpermps V,H,Wx | bw
66.0F38 17 | LV | ptest V,Wx
66.0F38 18 | VE | vbroadcastss V,Wd
66.0F38 19 | VE | vbroadcastsd V,Wq
66.0F38 1A | VE | vbroadcastf128 V,Mo
66.0F38 1B | E | vbroadcastf32x8 V,Mqq
66.0F38 1C | LVE | pabsb V,Wx
66.0F38 1D | LVE | pabsw V,Wx
66.0F38 1E | LVE | pabsd V,Wx | b4
66.0F38 1F | E | vpabsq V,Wx | b8
66.0F38 20 | LVE | pmovsxbw V,Wh
66.0F38 21 | LVE | pmovsxbd V,Wqr
66.0F38 22 | LVE | pmovsxbq V,Woc
66.0F38 23 | LVE | pmovsxwd V,Wh
66.0F38 24 | LVE | pmovsxwq V,Wqr
66.0F38 25 | LVE | pmovsxdq V,Wh
F3.0F38 20 | E | vpmovswb =Wh,V
F3.0F38 21 | E | vpmovsdb =Wqr,V
F3.0F38 22 | E | vpmovsqb =Woc,V
F3.0F38 23 | E | vpmovsdw =Wh,V
F3.0F38 24 | E | vpmovsqw =Wqr,V
F3.0F38 25 | E | vpmovsqd =Wh,V
66.0F38 26 | E | vptestm K,H,Wx
F3.0F38 26 | E | vptestnm K,H,Wx
66.0F38 27 | E | vptestm K,H,Wx | bw
F3.0F38 27 | E | vptestnm K,H,Wx | bw
66.0F38 28 | LVE | pmuldq V,Wx | b8
66.0F38 29 | LVE | pcmpeqq V,Wx | b8
66.0F38 2A | LVE | movntdqa V,Mx
66.0F38 2B | LVE | packusdw V,Wx | b4
F3.0F38 28-29 r | E | vpmovm2b V,U
F3.0F38 38-39 r | E | vpmovm2d V,U
F3.0F38 2A r | E | vpbroadcastmb2q V,U
F3.0F38 3A r | E | vpbroadcastmw2d V,U
66.0F38 2C | V | vmaskmovps V,H,Mx
66.0F38 2D | V | vmaskmovpd V,H,Mx
66.0F38 2E | V | vmaskmovps =Mx,H,V
66.0F38 2F | V | vmaskmovpd =Mx,H,V
66.0F38 2C | E | vscalef V,H,Wx | bw
66.0F38 2D | E | vscalefs V,H,We
66.0F38 30 | LVE | pmovzxbw V,Wh
66.0F38 31 | LVE | pmovzxbd V,Wqr
66.0F38 32 | LVE | pmovzxbq V,Woc
66.0F38 33 | LVE | pmovzxwd V,Wh
66.0F38 34 | LVE | pmovzxwq V,Wqr
66.0F38 35 | LVE | pmovzxdq V,Wh
F3.0F38 30 | E | vpmovwb =Wh,V
F3.0F38 31 | E | vpmovdb =Wqr,V
F3.0F38 32 | E | vpmovqb =Woc,V
F3.0F38 33 | E | vpmovdw =Wh,V
F3.0F38 34 | E | vpmovqw =Wqr,V
F3.0F38 35 | E | vpmovqd =Wh,V
66.0F38 36 | VE | vpermd V,H,Wx | bw
66.0F38 37 | LVE | pcmpgtq V,Wx | b8
66.0F38 38 | LVE | pminsb V,Wx
66.0F38 39 | LVE | pminsd V,Wx | bw
66.0F38 3A | LVE | pminuw V,Wx
66.0F38 3B | LVE | pminud V,Wx | bw
66.0F38 3C | LVE | pmaxsb V,Wx
66.0F38 3D | LVE | pmaxsd V,Wx | bw
66.0F38 3E | LVE | pmaxuw V,Wx
66.0F38 3F | LVE | pmaxud V,Wx | bw
66.0F38 40 | LVE | pmulld V,Wx | bw
66.0F38 41 | LV | phminposuw V,Wx
66.0F38 42 | E | vgetexp V,Wx | bw
66.0F38 43 | E | vgetexps V,H,We
66.0F38 44 | E | vplzcnt V,Wx | bw
66.0F38 45 | VE | vpsrlv V,H,Wx | bw
66.0F38 46 | VE | vpsrav V,H,Wx | bw
66.0F38 47 | VE | vpsllv V,H,Wx | bw
NP.0F38.W0 49 /0 m | V | ldtilecfg Mzz
66.0F38.W0 49 /0 m | V | sttilecfg =Mzz
NP.0F38.W0 49 C0 | V | tilerelease
F2.0F38.W0 49 r | V | tilezero T
F2.0F38.W0 4B m | V | tileloadd T,Mn
66.0F38.W0 4B m | V | tileloaddt1 T,Mn
F3.0F38.W0 4B m | V | tilestored =Mn,T
66.0F38 4C | E | vrcp14 V,Wx | bw
66.0F38 4D | E | vrcp14s V,H,We
66.0F38 4E | E | vrsqrt14 V,Wx | bw
66.0F38 4F | E | vrsqrt14s V,H,We
66.0F38 50-53 | VE | vpdpbusd V,H,Wx | b4
NP.0F38 50-51 | VE | vpdpbuud V,H,Wx | b4
F3.0F38 50-51 | VE | vpdpbsud V,H,Wx | b4
F2.0F38 50-51 | VE | vpdpbssd V,H,Wx | b4
F2.0F38 52-53 | E | vp4dpwssd V,H,Mo
F3.0F38 52 | E | vdpbf16ps V,H,Wx | b4
66.0F38 54 | E | vpopcntb V,Wx
66.0F38 55 | E | vpopcntd V,Wx | bw
66.0F38 58 | VE | vpbroadcastd V,Wd
66.0F38 59 | VE | vpbroadcastq V,Wq
66.0F38 5A | VE | vbroadcasti128 V,Mo
66.0F38 5B | E | vbroadcasti32x8 V,Mqq
F3.0F38.W0 5C r | V | tdpbf16ps T,T,T
F2.0F38.W0 5C r | V | tdpfp16ps T,T,T
NP.0F38.W0 5E r | V | tdpbuud T,T,T
66.0F38.W0 5E r | V | tdpbusd T,T,T
F3.0F38.W0 5E r | V | tdpbsud T,T,T
F2.0F38.W0 5E r | V | tdpbssd T,T,T
66.0F38 62 | E | vpexpandb V,Wx | n=bw
66.0F38 63 | E | vpcompressb =Wx,V | n=bw
66.0F38 64 | E | vpblendm V,H,Wx | bw
66.0F38 65 | E | vblendm V,H,Wx | bw
66.0F38 66 | E | vpblendmb V,H,Wx
F2.0F38 68 | E | vp2intersect K,H,Wx | bw
66.0F38 70 | E | vpshldvw V,H,Wx
66.0F38 71 | E | vpshldv V,H,Wx | bw
66.0F38 72 | E | vpshrdvw V,H,Wx
66.0F38 73 | E | vpshrdv V,H,Wx | bw
F2.0F38 72 | E | vcvtne2ps2bf16 V,H,Wx | b4
F3.0F38 72 | VE | vcvtneps2bf16 V,Wx | b4
66.0F38 75 | E | vpermi2b V,H,Wx
66.0F38 76 | E | vpermi2d V,H,Wx | bw
66.0F38 77 | E | vpermi2ps V,H,Wx | bw
66.0F38 78 | VE | vpbroadcastb V,Wb
66.0F38 79 | VE | vpbroadcastw V,Ww
66.0F38 7A r | E | vpbroadcastb V,R
66.0F38 7B r | E | vpbroadcastw V,R
66.0F38 7C r | E | vpbroadcastd V,R
66.0F38 7D | E | vpermt2b V,H,Wx
66.0F38 7E | E | vpermt2d V,H,Wx | bw
66.0F38 7F | E | vpermt2ps V,H,Wx | bw
66.0F38 80 | L | invept Gy,Mo | w64
66.0F38 81 | L | invvpid Gy,Mo | w64
66.0F38 82 | L | invpcid Gy,Mo | w64 far
66.0F38 83 | E | vpmultishiftqb V,H,Wx | b8
66.0F38 88 | E | vexpandps V,Wx | n=e
66.0F38 89 | E | vpexpandd V,Wx | n=e
66.0F38 8A | E | vcompressps =Wx,V | n=e
66.0F38 8B | E | vpcompressd =Wx,V | n=e
66.0F38 8C | V | vpmaskmovd V,H,Mx
66.0F38 8E | V | vpmaskmovd =Mx,H,V
66.0F38 8D | E | vpermb V,H,Wx
66.0F38 8F | E | vpshufbitqmb K,H,Wx
66.0F38 90-93 | VE | vpgatherdd V,Me,H | vsib
66.0F38 96-98 | VE | vfmadd V,H,Wx | bw
66.0F38 9A | VE | vfmsub V,H,Wx | bw
66.0F38 9C | VE | vfnmadd V,H,Wx | bw
66.0F38 9E | VE | vfnmsub V,H,Wx | bw
66.0F38 A6-A8 | VE | vfmadd V,H,Wx | bw
66.0F38 AA | VE | vfmsub V,H,Wx | bw
66.0F38 AC | VE | vfnmadd V,H,Wx | bw
66.0F38 AE | VE | vfnmsub V,H,Wx | bw
66.0F38 B6-B8 | VE | vfmadd V,H,Wx | bw
66.0F38 BA | VE | vfmsub V,H,Wx | bw
66.0F38 BC | VE | vfnmadd V,H,Wx | bw
66.0F38 BE | VE | vfnmsub V,H,Wx | bw
66.0F38 99 | VE | vfmadds V,H,We
66.0F38 9B | VE | vfmsubs V,H,We
66.0F38 9D | VE | vfnmadds V,H,We
66.0F38 9F | VE | vfnmsubs V,H,We
66.0F38 A9 | VE | vfmadds V,H,We
66.0F38 AB | VE | vfmsubs V,H,We
66.0F38 AD | VE | vfnmadds V,H,We
66.0F38 AF | VE | vfnmsubs V,H,We
66.0F38 B9 | VE | vfmadds V,H,We
66.0F38 BB | VE | vfmsubs V,H,We
66.0F38 BD | VE | vfnmadds V,H,We
66.0F38 BF | VE | vfnmsubs V,H,We
F2.0F38 9A-9B | E | v4fmaddps V,H,Mo
F2.0F38 AA-AB | E | v4fnmaddps V,H,Mo
66.0F38 A0-A3 | E | vpscatterdd =Me,V | vsib
66.0F38 B4-B5 | VE | vpmadd52luq V,H,Wx | b8
NP.0F38.W0 B0 m | V | vcvtneoph2ps V,Mx
66.0F38.W0 B0 m | V | vcvtneeph2ps V,Mx
F3.0F38.W0 B0 m | V | vcvtneebf162ps V,Mx
F2.0F38.W0 B0 m | V | vcvtneobf162ps V,Mx
66.0F38.W0 B1 m | V | vbcstnesh2ps V,Mw
F3.0F38.W0 B1 m | V | vbcstnebf162ps V,Mw
66.0F38 C4 | E | vpconflict V,Wx | bw
66.0F38 C6 /1 m | E | vgatherpf0d M0 | vsib n=e
66.0F38 C6 /2 m | E | vgatherpf1d M0 | vsib n=e
66.0F38 C6 /5 m | E | vscatterpf0d M0 | vsib n=e
66.0F38 C6 /6 m | E | vscatterpf1d M0 | vsib n=e
66.0F38 C7 /1 m | E | vgatherpf0q M0 | vsib n=e
66.0F38 C7 /2 m | E | vgatherpf1q M0 | vsib n=e
66.0F38 C7 /5 m | E | vscatterpf0q M0 | vsib n=e
66.0F38 C7 /6 m | E | vscatterpf1q M0 | vsib n=e
66.0F38 C8 | E | vexp2 V,Wx | bw
66.0F38 CA | E | vrcp28 V,Wx | bw
66.0F38 CB | E | vrcp28s V,H,We
66.0F38 CC | E | vrsqrt28 V,Wx | bw
66.0F38 CD | E | vrsqrt28s V,H,We
NP.0F38 C8-CD | L | sha V,Wo
66.0F38 CF | LVE | gf2p8mulb V,Wx
66.0F38 DB | LV | aesimc V,Wo
66.0F38 DC-DF | LVE | aesenc V,Wx
F3.0F38 D8 /0 m | L | aesencwide128kl M48
F3.0F38 D8 /1 m | L | aesdecwide128kl M48
F3.0F38 D8 /2 m | L | aesencwide256kl Mzz
F3.0F38 D8 /3 m | L | aesdecwide256kl Mzz
F3.0F38 DC m | L | aesenc128kl V,M48
F3.0F38 DD m | L | aesdec128kl V,M48
F3.0F38 DE m | L | aesenc256kl V,Mzz
F3.0F38 DF m | L | aesdec256kl V,Mzz
F3.0F38 DC r | L | loadiwkey V,U
F3.0F38 FA r | L | encodekey128 Gd,R
F3.0F38 FB r | L | encodekey256 Gd,R
66.0F38 E0-EF m | V | cmpccxadd +My,Gy,By | o64
0F38 F0 m | L | movbe Gv,Mv
0F38 F1 m | L | movbe =Mv,Gv
F2.0F38 F0 | L | crc32 Gd,Eb
F2.0F38 F1 | L | crc32 Gd,Ev
NP.0F38 F2 | V | andn Gy,By,Ey
NP.0F38 F3 /1 | V | blsr By,Ey
NP.0F38 F3 /2 | V | blsmsk By,Ey
NP.0F38 F3 /3 | V | blsi By,Ey
NP.0F38 F5 | V | bzhi Gy,Ey,By
F3.0F38 F5 | V | pext Gy,By,Ey
F2.0F38 F5 | V | pdep Gy,By,Ey
66.0F38 F5 m | L | wruss =My,Gy
F2.0F38 F6 | V | mulx Gy,By,Ey
NP.0F38 F6 m | L | wrss =My,Gy
66.0F38 F6 | L | adcx Gy,Ey
F3.0F38 F6 | L | adox Gy,Ey
NP.0F38 F7 | V | bextr Gy,Ey,By
66.0F38 F7 | V | shlx Gy,Ey,By
F3.0F38 F7 | V | sarx Gy,Ey,By
F2.0F38 F7 | V | shrx Gy,Ey,By
66.0F38 F8 m | L | movdir64b G,Mzz | dest64
F2.0F38 F8 m | L | enqcmd G,Mzz | dest64
F3.0F38 F8 m | L | enqcmds G,Mzz | dest64
NP.0F38 F9 m | L | movdiri =My,Gy
NP.0F38 FC m | L | aadd +My,Gy
66.0F38 FC m | L | aand +My,Gy
F2.0F38 FC m | L | aor +My,Gy
F3.0F38 FC m | L | axor +My,Gy
"""

_0F3A = """
66.0F3A 00-01 | VE | vpermq V,Wx,Ib | b8
66.0F3A 02 | V | vpblendd V,H,Wx,Ib
66.0F3A 03 | E | valign V,H,Wx,Ib | bw
66.0F3A 04 | VE | vpermilps V,Wx,Ib | b4
66.0F3A 05 | VE | vpermilpd V,Wx,Ib | b8
66.0F3A 06 | V | vperm2f128 V,H,Wqq,Ib
66.0F3A 08 | LVE | roundps V,Wx,Ib | b4
66.0F3A 09 | LVE | roundpd V,Wx,Ib | b8
66.0F3A 0A | LVE | roundss V,H,Wd,Ib
66.0F3A 0B | LVE | roundsd V,H,Wq,Ib
NP.0F3A 08 | E | vrndscaleph V,Wx,Ib | b2
NP.0F3A 0A | E | vrndscalesh V,H,Ww,Ib
66.0F3A 0C | LV | blendps V,Wx,Ib
66.0F3A 0D | LV | blendpd V,Wx,Ib
66.0F3A 0E | LV | pblendw V,Wx,Ib
NP.0F3A 0F | L | palignr P,Qq,Ib
66.0F3A 0F | LVE | palignr V,Wx,Ib
66.0F3A 14 | LVE | pextrb =Eb,V,Ib
66.0F3A 15 | LVE | pextrw =Ew,V,Ib
66.0F3A 16 | LVE | pextrd =Ey,V,Ib
66.0F3A 17 | LVE | extractps =Ed,V,Ib
66.0F3A 18 | VE | vinsertf128 V,H,Wo,Ib
66.0F3A 19 | VE | vextractf128 =Wo,V,Ib
66.0F3A 1A | E | vinsertf32x8 V,H,Wqq,Ib
66.0F3A 1B | E | vextractf32x8 =Wqq,V,Ib
66.0F3A 1D | VE | vcvtps2ph =Wh,V,Ib
66.0F3A 1E-1F | E | vpcmpd K,H,Wx,Ib | bw
66.0F3A 20 | LVE | pinsrb V,Eb,Ib
66.0F3A 21 | LVE | insertps V,Wd,Ib
66.0F3A 22 | LVE | pinsrd V,Ey,Ib
66.0F3A 23 | E | vshuff32x4 V,H,Wx,Ib | bw
66.0F3A 25 | E | vpternlog V,H,Wx,Ib | bw
66.0F3A 26 | E | vgetmant V,Wx,Ib | bw
66.0F3A 27 | E | vgetmants V,H,We,Ib
NP.0F3A 26 | E | vgetmantph V,Wx,Ib | b2
NP.0F3A 27 | E | vgetmantsh V,H,Ww,Ib
66.0F3A 30-33 r | V | kshift K,R,Ib
66.0F3A 38 | VE | vinserti128 V,H,Wo,Ib
66.0F3A 39 | VE | vextracti128 =Wo,V,Ib
66.0F3A 3A | E | vinserti32x8 V,H,Wqq,Ib
66.0F3A 3B | E | vextracti32x8 =Wqq,V,Ib
66.0F3A 3E-3F | E | vpcmpb K,H,Wx,Ib
66.0F3A 40 | LV | dpps V,Wx,Ib
66.0F3A 41 | LV | dppd V,Wo,Ib
66.0F3A 42 | LVE | mpsadbw V,Wx,Ib
66.0F3A 43 | E | vshufi32x4 V,H,Wx,Ib | bw
66.0F3A 44 | LVE | pclmulqdq V,Wx,Ib
66.0F3A 46 | V | vperm2i128 V,H,Wqq,Ib
66.0F3A 48-49 | V | vpermil2ps V,H,Wx,L
66.0F3A 4A-4C | V | vblendvps V,H,Wx,L
66.0F3A 50 | E | vrange V,H,Wx,Ib | bw
66.0F3A 51 | E | vranges V,H,We,Ib
66.0F3A 54 | E | vfixupimm V,H,Wx,Ib | bw
66.0F3A 55 | E | vfixupimms V,H,We,Ib
66.0F3A 56 | E | vreduce V,Wx,Ib | bw
66.0F3A 57 | E | vreduces V,H,We,Ib
NP.0F3A 56 | E | vreduceph V,Wx,Ib | b2
NP.0F3A 57 | E | vreducesh V,H,Ww,Ib
66.0F3A 5C-5F | V | vfmaddsubps V,H,Wx,L
66.0F3A 68-69 | V | vfmaddps V,H,Wx,L
66.0F3A 6C-6D | V | vfmsubps V,H,Wx,L
66.0F3A 78-79 | V | vfnmaddps V,H,Wx,L
66.0F3A 7C-7D | V | vfnmsubps V,H,Wx,L
66.0F3A 6A | V | vfmaddss V,H,Wd,L
66.0F3A 6E | V | vfmsubss V,H,Wd,L
66.0F3A 7A | V | vfnmaddss V,H,Wd,L
66.0F3A 7E | V | vfnmsubss V,H,Wd,L
66.0F3A 6B | V | vfmaddsd V,H,Wq,L
66.0F3A 6F | V | vfmsubsd V,H,Wq,L
66.0F3A 7B | V | vfnmaddsd V,H,Wq,L
66.0F3A 7F | V | vfnmsubsd V,H,Wq,L
66.0F3A 60-63 | LV | pcmpstr V,Wo,Ib
66.0F3A 66 | E | vfpclass K,Wx,Ib | bw
66.0F3A 67 | E | vfpclasss K,We,Ib
NP.0F3A 66 | E | vfpclassph K,Wx,Ib | b2
NP.0F3A 67 | E | vfpclasssh K,Ww,Ib
66.0F3A 70 | E | vpshldw V,H,Wx,Ib
66.0F3A 71 | E | vpshld V,H,Wx,Ib | bw
66.0F3A 72 | E | vpshrdw V,H,Wx,Ib
66.0F3A 73 | E | vpshrd V,H,Wx,Ib | bw
NP.0F3A C2 | E | vcmpph K,H,Wx,Ib | b2
F3.0F3A C2 | E | vcmpsh K,H,Ww,Ib
NP.0F3A CC | L | sha1rnds4 V,Wo,Ib
66.0F3A CE-CF | LVE | gf2p8affineqb V,Wx,Ib | b8
66.0F3A DF | LV | aeskeygenassist V,Wo,Ib
F2.0F3A F0 | V | rorx Gy,Ey,Ib
"""

_FP16 = """
NP.M5 51 | E | vsqrtph V,Wx | b2
NP.M5 58-59 | E | vaddph V,H,Wx | b2
NP.M5 5C-5F | E | vsubph V,H,Wx | b2
F3.M5 51 | E | vsqrtsh V,H,Ww
F3.M5 58-59 | E | vaddsh V,H,Ww
F3.M5 5C-5F | E | vsubsh V,H,Ww
F3.M5 10 | E | vmovsh V,Ww
F3.M5 11 | E | vmovsh =Ww,V
NP.M5 1D | E | vcvtss2sh V,H,Wd
66.M5 1D | E | vcvtps2phx V,Wx | b4
F3.M5 2A | E | vcvtsi2sh V,H,Ey
F3.M5 2C-2D | E | vcvtsh2si Gy,Ww
NP.M5 2E-2F | E | vcomish V,Ww
NP.M5 5A | E | vcvtph2pd V,Wqr | b2
66.M5.W1 5A | E | vcvtpd2ph V,Wx | b8
F3.M5 5A | E | vcvtsh2sd V,H,Ww
F2.M5.W1 5A | E | vcvtsd2sh V,H,Wq
NP.M5.W0 5B | E | vcvtdq2ph V,Wx | b4
NP.M5.W1 5B | E | vcvtqq2ph V,Wx | b8
66.M5 5B | E | vcvtph2dq V,Wh | b2
F3.M5 5B | E | vcvttph2dq V,Wh | b2
66.M5 6E | E | vmovw V,Ew
66.M5 7E | E | vmovw =Ew,V
NP.M5 78-79 | E | vcvtph2udq V,Wh | b2
66.M5 78-79 | E | vcvtph2uqq V,Wqr | b2
F3.M5 78-79 | E | vcvtsh2usi Gy,Ww
66.M5 7A-7B | E | vcvtph2qq V,Wqr | b2
F2.M5.W0 7A | E | vcvtudq2ph V,Wx | b4
F2.M5.W1 7A | E | vcvtuqq2ph V,Wx | b8
F3.M5 7B | E | vcvtusi2sh V,H,Ey
NP.M5 7C-7D | E | vcvtph2uw V,Wx | b2
66.M5 7C-7D | E | vcvtph2w V,Wx | b2
F3.M5 7D | E | vcvtw2ph V,Wx | b2
F2.M5 7D | E | vcvtuw2ph V,Wx | b2
66.M6 13 | E | vcvtph2psx V,Wh | b2
NP.M6 13 | E | vcvtsh2ss V,H,Ww
66.M6 2C | E | vscalefph V,H,Wx | b2
66.M6 2D | E | vscalefsh V,H,Ww
66.M6 42 | E | vgetexpph V,Wx | b2
66.M6 43 | E | vgetexpsh V,H,Ww
66.M6 4C | E | vrcpph V,Wx | b2
66.M6 4D | E | vrcpsh V,H,Ww
66.M6 4E | E | vrsqrtph V,Wx | b2
66.M6 4F | E | vrsqrtsh V,H,Ww
F3.M6 56 | E | vfmaddcph V,H,Wx | b4
F2.M6 56 | E | vfcmaddcph V,H,Wx | b4
F3.M6 57 | E | vfmaddcsh V,H,Wd
F2.M6 57 | E | vfcmaddcsh V,H,Wd
F3.M6 D6 | E | vfmulcph V,H,Wx | b4
F2.M6 D6 | E | vfcmulcph V,H,Wx | b4
F3.M6 D7 | E | vfmulcsh V,H,Wd
F2.M6 D7 | E | vfcmulcsh V,H,Wd
66.M6 96-98 | E | vfmaddph V,H,Wx | b2
66.M6 9A | E | vfmsubph V,H,Wx | b2
66.M6 9C | E | vfnmaddph V,H,Wx | b2
66.M6 9E | E | vfnmsubph V,H,Wx | b2
66.M6 A6-A8 | E | vfmaddph V,H,Wx | b2
66.M6 AA | E | vfmsubph V,H,Wx | b2
66.M6 AC | E | vfnmaddph V,H,Wx | b2
66.M6 AE | E | vfnmsubph V,H,Wx | b2
66.M6 B6-B8 | E | vfmaddph V,H,Wx | b2
66.M6 BA | E | vfmsubph V,H,Wx | b2
66.M6 BC | E | vfnmaddph V,H,Wx | b2
66.M6 BE | E | vfnmsubph V,H,Wx | b2
66.M6 99 | E | vfmaddsh V,H,Ww
66.M6 9B | E | vfmsubsh V,H,Ww
66.M6 9D | E | vfnmaddsh V,H,Ww
66.M6 9F | E | vfnmsubsh V,H,Ww
66.M6 A9 | E | vfmaddsh V,H,Ww
66.M6 AB | E | vfmsubsh V,H,Ww
66.M6 AD | E | vfnmaddsh V,H,Ww
66.M6 AF | E | vfnmsubsh V,H,Ww
66.M6 B9 | E | vfmaddsh V,H,Ww
66.M6 BB | E | vfmsubsh V,H,Ww
66.M6 BD | E | vfnmaddsh V,H,Ww
66.M6 BF | E | vfnmsubsh V,H,Ww
"""

_XOP = """
X8 85-87 | X | vpmacssww V,H,Wo,L
X8 8E-8F | X | vpmacssdd V,H,Wo,L
X8 95-97 | X | vpmacsww V,H,Wo,L
X8 9E-9F | X | vpmacsdd V,H,Wo,L
X8 A6 | X | vpmadcsswd V,H,Wo,L
X8 B6 | X | vpmadcswd V,H,Wo,L
X8 A2 | X | vpcmov V,H,Wx,L
X8 A3 | X | vpperm V,H,Wo,L
X8 C0-C3 | X | vprotb V,Wo,Ib
X8 CC-CF | X | vpcomb V,H,Wo,Ib
X8 EC-EF | X | vpcomub V,H,Wo,Ib
X9 01 /1 | X | blcfill By,Ey
X9 01 /2 | X | blsfill By,Ey
X9 01 /3 | X | blcs By,Ey
X9 01 /4 | X | tzmsk By,Ey
X9 01 /5 | X | blcic By,Ey
X9 01 /6 | X | blsic By,Ey
X9 01 /7 | X | t1mskc By,Ey
X9 02 /1 | X | blcmsk By,Ey
X9 02 /6 | X | blci By,Ey
X9 12 /0 r | X | llwpcb Ry
X9 12 /1 r | X | slwpcb Ry
X9 80-81 | X | vfrczps V,Wx
X9 82 | X | vfrczss V,Wd
X9 83 | X | vfrczsd V,Wq
X9 90-9B | X | vprotb V,Wo,H
X9 C1-C3 | X | vphaddbw V,Wo
X9 C6-C7 | X | vphaddwd V,Wo
X9 CB | X | vphadddq V,Wo
X9 D1-D3 | X | vphaddubw V,Wo
X9 D6-D7 | X | vphadduwd V,Wo
X9 DB | X | vphaddudq V,Wo
X9 E1-E3 | X | vphsubbw V,Wo
XA 10 | X | bextr Gy,Ey,Id
XA 12 /0 | X | lwpins By,Ed,Id
XA 12 /1 | X | lwpval By,Ed,Id
"""

# 3DNow! (0F 0F ModRM imm8): the imm8 is the opcode; every form reads an m64.
_3DNOW = frozenset((0x0C, 0x0D, 0x1C, 0x1D, 0x8A, 0x8E, 0x90, 0x94, 0x96, 0x97, 0x9A, 0x9E, 0xA0, 0xA4,
                    0xA6, 0xA7, 0xAA, 0xAE, 0xB0, 0xB4, 0xB6, 0xB7, 0xBB, 0xBF))


# -- table construction ---------------------------------------------------------------------

_MAPS = ("0F", "0F38", "0F3A", "M5", "M6", "X8", "X9", "XA")
_MANDATORY = ("NP", "66", "F3", "F2")
_ENCODING_LETTERS = {"L": Encoding.LEGACY, "V": Encoding.VEX, "E": Encoding.EVEX, "X": Encoding.XOP}
_ACCESS = {"": "r", "=": "w", "+": "rw"}
_FIXED_SIZES = {"b": 1, "w": 2, "d": 4, "q": 8, "t": 10, "o": 16, "qq": 32, "zz": 64, "48": 48, "512": 512}
_SIZE_CODES = frozenset((*_FIXED_SIZES, "v", "z", "y", "p", "s", "a", "x", "h", "qr", "oc", "dup", "e", "sxd",
                         "env", "fsave", "bnd", "0", "n"))
_IMMEDIATE_SIZES = frozenset(("b", "w", "d", "z", "v"))
_FLAGS = frozenset(("i64", "o64", "d64", "f64", "w64", "jmp", "far", "fault", "hlt", "ud", "push", "pop", "callf",
                    "retf", "iret", "enter", "leave", "pusha", "popa", "xlat", "maskmov8", "maskmov16",
                    "clzero", "monitor", "dest64", "popm", "bitoff", "ctrl", "vsib", "b4", "b8", "b2", "bw",
                    "n=e", "n=bw"))
_BROADCAST = {"b4": 4, "b8": 8, "b2": 2, "bw": "w"}
_IMPLICIT_FLAGS = frozenset(("push", "pop", "callf", "retf", "iret", "enter", "leave", "pusha", "popa", "xlat",
                             "maskmov8", "maskmov16", "clzero", "monitor", "dest64"))


@dataclass(slots=True, frozen=True)
class _Form:
    """One table line, parsed: what selects it and what it encodes."""
    name: str
    pp: str | None               # mandatory prefix; None: any (legacy lines only)
    w: int | None
    reg: int | None
    mod: str | None              # "m": memory forms only, "r": register forms only
    modrm_byte: int | None
    has_modrm: bool
    immediates: tuple[str, ...]  # size codes, in encoding order ("p": a far pointer)
    relative: str | None         # "b" or "z"
    rm: tuple[str, str] | None   # (size code, access) of a memory-capable r/m operand
    moffs: tuple[str, str] | None
    strings: tuple[tuple[str, str, str], ...]   # ("X" or "Y", size code, access)
    flags: frozenset
    broadcast: int | str | None
    implicit: bool = False       # whether the form has implicit memory operands

    @property
    def specificity(self):
        return (self.modrm_byte is not None, self.reg is not None, self.mod is not None, self.w is not None)


def _parse_line(line):
    fields = [field.strip() for field in line.split("|")]
    if len(fields) not in (3, 4):
        raise ValueError(f"opcode table line {line!r}: want 3 or 4 fields")
    opcode_field, encodings, instruction = fields[:3]
    flags = frozenset(fields[3].split()) if len(fields) == 4 else frozenset()
    if not flags <= _FLAGS:
        raise ValueError(f"opcode table line {line!r}: unknown flags {sorted(flags - _FLAGS)}")
    tokens = opcode_field.split()
    pp = w = reg = mod = modrm_byte = None
    opcode_map = ""
    if "." in tokens[0] or tokens[0] in _MAPS:
        for part in tokens.pop(0).split("."):
            if part in _MANDATORY:
                pp = part
            elif part in _MAPS:
                opcode_map = part
            elif part in ("W0", "W1"):
                w = int(part[1])
            else:
                raise ValueError(f"opcode table line {line!r}: bad opcode part {part!r}")
    first, _, last = tokens.pop(0).partition("-")
    opcodes = range(int(first, 16), int(last or first, 16) + 1)
    has_modrm = False
    for token in tokens:
        if token.startswith("/"):
            has_modrm = True
            reg = None if token == "/r" else int(token[1:])
        elif token in ("m", "r"):
            mod, has_modrm = token, True
        else:
            modrm_byte, has_modrm = int(token, 16), True
    name, _, operand_text = instruction.partition(" ")
    immediates, strings = [], []
    relative = rm = moffs = None
    for token in filter(None, operand_text.split(",")):
        access = _ACCESS[token[0] if token[0] in "=+" else ""]
        token = token.lstrip("=+")
        letter, size = token[0], token[1:]
        if not letter.isupper():
            continue                             # a fixed register or constant
        if letter in "EWQMO" and size not in _SIZE_CODES:
            raise ValueError(f"opcode table line {line!r}: bad size {size!r}")
        if letter in "EWQM":
            has_modrm, rm = True, (size, access)
            mod = "m" if letter == "M" else mod
        elif letter in "RUN":
            has_modrm, mod = True, "r"
        elif letter in "GVPSCDTK":
            has_modrm = True
        elif letter == "I":
            if size not in _IMMEDIATE_SIZES:
                raise ValueError(f"opcode table line {line!r}: bad immediate {token!r}")
            immediates.append(size)
        elif letter == "L":
            immediates.append("b")
        elif letter == "A":
            immediates.append("p")
        elif letter == "J":
            relative = size
        elif letter == "O":
            moffs = (size, access)
        elif letter in "XY":
            strings.append((letter, size, access))
        elif letter not in "HBZ":
            raise ValueError(f"opcode table line {line!r}: bad operand {token!r}")
    if "ctrl" in flags:
        mod = None                               # the CPU ignores ModRM.mod: always a register
    broadcast = next((_BROADCAST[flag] for flag in flags if flag in _BROADCAST), None)
    form = _Form(name, pp, w, reg, mod, modrm_byte, has_modrm, tuple(immediates), relative, rm, moffs,
                 tuple(strings), flags, broadcast, bool(strings or flags & _IMPLICIT_FLAGS))
    for letter in encodings:
        encoding = _ENCODING_LETTERS[letter]
        for opcode in opcodes:
            # VEX, EVEX and XOP always encode pp: no pp means none.
            yield (encoding, opcode_map, opcode), (form if pp or encoding is Encoding.LEGACY
                                                   else replace(form, pp="NP"))


def _build_table(*texts):
    """{(encoding, map, opcode): {mandatory prefix or None: [forms, most specific first]}}."""
    table = {}
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line:
                for key, form in _parse_line(line):
                    table.setdefault(key, {}).setdefault(form.pp, []).append(form)
    for groups in table.values():
        for forms in groups.values():
            forms.sort(key=lambda form: form.specificity, reverse=True)
    return table


_TABLE = None   # built at the first decode: a run that decodes nothing does not wait for it


def _table():
    global _TABLE
    if _TABLE is None:
        _TABLE = _build_table(_ONE_BYTE, _X87, _TWO_BYTE, _0F38, _0F3A, _FP16, _XOP)
    return _TABLE
_3DNOW_FORM = _Form("3dnow", None, None, None, None, None, True, ("b",), None, ("q", "r"), None, (),
                    frozenset(), None)
# Where the tables have no form: does the map's encoding still have a ModRM, and immediates?
_UNKNOWN_SHAPE = {"": (False, ()), "0F": (False, ()), "0F38": (True, ()), "0F3A": (True, ("b",)),
                  "M5": (True, ()), "M6": (True, ()), "X8": (True, ("b",)), "X9": (True, ()),
                  "XA": (True, ("d",))}
_VEX_MAPS = {1: "0F", 2: "0F38", 3: "0F3A"}
_EVEX_MAPS = {1: "0F", 2: "0F38", 3: "0F3A", 5: "M5", 6: "M6"}
_XOP_MAPS = {8: "X8", 9: "X9", 10: "XA"}
_MAP_NUMBERS = {"0F": 1, "0F38": 2, "0F3A": 3, "M5": 5, "M6": 6, "X8": 8, "X9": 9, "XA": 10}


# -- decoding -------------------------------------------------------------------------------

def decode(code, bits, vendor="intel", stack_bits=None):
    """The instruction at the start of `code` in `bits`-bit code (16, 32 or 64), as the CPU
    of `vendor` ("intel" or "amd", from CPUID) executes it; None when `code` is too short
    to hold it or it would be longer than 15 bytes. `stack_bits` is the stack's address
    size for implicit stack operands (SS.B outside 64-bit mode; default: `bits`)."""
    if bits not in (16, 32, 64):
        raise ValueError(f"bits must be 16, 32 or 64, not {bits!r}")
    if vendor not in _VENDORS:
        raise ValueError(f"vendor must be 'intel' or 'amd', not {vendor!r}")
    if stack_bits is None:
        stack_bits = bits
    elif stack_bits not in (16, 32, 64):
        raise ValueError(f"stack_bits must be 16, 32 or 64, not {stack_bits!r}")
    try:
        return _decode(code, bits, vendor == "amd", stack_bits)
    except IndexError:                           # read past the end of `code`
        return None


def _decode(code, bits, amd, stack_bits):
    # Legacy prefixes, and REX: only the one immediately before the opcode counts.
    pos = 0
    segment_prefix = segment_fs_gs = repeat = None
    operand_prefix = address_prefix = lock = False
    rex = 0
    while True:
        byte = code[pos]
        if byte in _SEGMENT_PREFIXES:
            segment_prefix = _SEGMENT_PREFIXES[byte]
            if byte >= 0x64:
                segment_fs_gs = segment_prefix
        elif byte == 0x66:
            operand_prefix = True
        elif byte == 0x67:
            address_prefix = True
        elif byte == 0xF0:
            lock = True
        elif byte == 0xF2:
            repeat = "repne"
        elif byte == 0xF3:
            repeat = "rep"
        elif bits == 64 and byte & 0xF0 == 0x40:
            rex = byte
            pos += 1
            if pos >= MAX_LENGTH:
                return None
            continue
        else:
            break
        rex = 0
        pos += 1
        if pos >= MAX_LENGTH:
            return None
    override = segment_fs_gs if bits == 64 else segment_prefix
    if bits == 64:
        address_bits = 32 if address_prefix else 64
    else:
        address_bits = 16 if (bits == 16) != address_prefix else 32

    # Opcode, and the VEX / EVEX / XOP payloads.
    w = bool(rex & 8)
    rex_r, rex_x, rex_b = rex >> 2 & 1, rex >> 1 & 1, rex & 1
    vector_bytes, evex_broadcast, evex_length, vsib_high = 16, False, 0, 0
    known = True
    byte = code[pos]
    pos += 1
    encoding = Encoding.LEGACY
    if byte == 0x0F:
        second = code[pos]
        pos += 1
        if second in (0x38, 0x3A):
            opcode_map, opcode = ("0F38" if second == 0x38 else "0F3A"), code[pos]
            pos += 1
            reported = 0x0F0000 | second << 8 | opcode
        else:
            opcode_map, opcode, reported = "0F", second, 0x0F00 | second
    elif byte in (0xC4, 0xC5, 0x62) and (bits == 64 or code[pos] >= 0xC0) or (
            byte == 0x8F and code[pos] & 0x1F >= 8):
        known = not (operand_prefix or repeat or lock or rex)     # #UD after 66/F2/F3/F0/REX
        first = code[pos]
        if byte == 0xC5:
            encoding, map_number, payload = Encoding.VEX, 1, first
            rex_r, rex_x, rex_b, w = (~first >> 7) & 1, 0, 0, False
            pos += 1
        elif byte == 0x62:
            encoding, map_number = Encoding.EVEX, first & 7
            payload, options = code[pos + 1], code[pos + 2]
            rex_r, rex_x, rex_b = (~first >> 7) & 1, (~first >> 6) & 1, (~first >> 5) & 1
            w = bool(payload & 0x80)
            evex_broadcast = bool(options & 0x10)
            vsib_high = (~options >> 3) & 1
            evex_length = (options >> 5) & 3     # 3 is reserved, but for rounding control (below)
            vector_bytes = 16 << min(evex_length, 2)
            known = known and not first & 0x08 and bool(payload & 0x04)      # fixed bits of P0, P1
            pos += 3
        else:
            encoding = Encoding.VEX if byte == 0xC4 else Encoding.XOP
            map_number, payload = first & 0x1F, code[pos + 1]
            rex_r, rex_x, rex_b = (~first >> 7) & 1, (~first >> 6) & 1, (~first >> 5) & 1
            w = bool(payload & 0x80)
            pos += 2
        if encoding is not Encoding.EVEX:
            vector_bytes = 32 if payload & 0x04 else 16
        if bits != 64:
            rex_r = rex_x = rex_b = vsib_high = 0
        maps = {Encoding.VEX: _VEX_MAPS, Encoding.EVEX: _EVEX_MAPS, Encoding.XOP: _XOP_MAPS}[encoding]
        opcode_map = maps.get(map_number)
        opcode = code[pos]
        pos += 1
        reported = map_number << 8 | opcode
        if opcode_map is None:
            known = False
            opcode_map = "0F3A" if map_number == 3 else "0F38"
        mandatory = _MANDATORY[payload & 3]
    else:
        opcode_map, opcode, reported = "", byte, byte
    if encoding is Encoding.LEGACY:
        mandatory = ("F3" if repeat == "rep" else "F2") if repeat else "66" if operand_prefix else "NP"

    # The form: by mandatory prefix (else any), then W, ModRM and mode constraints.
    if opcode_map == "0F" and opcode == 0x0F:
        form = _3DNOW_FORM
        reported = 0x0F0F00
    else:
        groups = _table().get((encoding, opcode_map, opcode), {})
        form = None
        for candidates in (groups.get(mandatory), groups.get(None)):
            if candidates:
                form = _match(candidates, code, pos, w, bits)
                if form is not None:
                    break
        if form is None:
            known = False
            has_modrm, immediates = _UNKNOWN_SHAPE[opcode_map]
            has_modrm = has_modrm or any(f.has_modrm for forms in groups.values() for f in forms)
            form = _Form("(unknown)", None, None, None, None, None, has_modrm, immediates, None, None,
                         None, (), frozenset(), None)
    flags = form.flags
    if "ud" in flags:
        known = False
    if encoding is Encoding.EVEX and form.broadcast in (2, 4, 8) and w != (form.broadcast == 8):
        known = False                            # the element type fixes EVEX.W: W0 ps/ph/d, W1 pd/q

    if encoding is Encoding.LEGACY:
        operand_bits = _operand_bits(bits, flags, operand_prefix and form.pp != "66", w, amd)
    else:
        operand_bits = 64 if w and bits == 64 else 32
    operand_bytes = operand_bits // 8

    # ModRM, SIB, displacement.
    memory = []
    reg = None
    if form.has_modrm:
        modrm = code[pos]
        pos += 1
        mod, reg, rm = modrm >> 6, (modrm >> 3) & 7, modrm & 7
        if evex_length == 3 and not (mod == 3 and evex_broadcast):
            known = False                        # the reserved vector length
        if "vsib" in flags and (mod == 3 or rm != 4 or address_bits == 16):
            known = False                        # VSIB needs a SIB byte
        if mod != 3 and "ctrl" not in flags:
            pos, operand, disp8 = _modrm_memory(code, pos, mod, rm, address_bits, bits, rex_x, rex_b,
                                                override, "vsib" in flags, vsib_high)
            size, access = _rm_size(form, operand_bits, vector_bytes, w, bits, amd, encoding, evex_broadcast)
            if encoding is Encoding.EVEX:
                if evex_broadcast and form.broadcast is None:
                    known = False                # broadcast of an instruction without one: #UD
                if disp8:
                    operand = _scaled(operand, _disp8_scale(flags, size, w))
            if "popm" in flags and operand["base"] == RSP:
                operand["displacement"] += operand_bytes
            if "bitoff" in flags:
                operand["bit_offset"] = _GPR[reg | rex_r << 3]
            memory.append(MemoryOperand(**operand, address_bits=address_bits, mode_bits=bits, size=size,
                                        access=access))

    # Immediates, moffs, relative displacement.
    relative = None
    immediates_at = pos
    for immediate in form.immediates:
        pos += _immediate_bytes(immediate, operand_bits)
    if form.moffs:
        width = address_bits // 8
        offset = int.from_bytes(code[pos:pos + width], "little")
        pos += width
        size_code, access = form.moffs
        memory.append(MemoryOperand(override or "ds", None, None, 1, offset, False, address_bits, bits,
                                    _memory_size(size_code, operand_bits, 16, w, bits, amd), access))
    if form.relative:
        width = 1 if form.relative == "b" else 2 if operand_bits == 16 else 4
        relative = int.from_bytes(code[pos:pos + width], "little", signed=True)
        pos += width
    if form is _3DNOW_FORM:
        suffix = code[pos - 1]
        reported |= suffix
        known = known and suffix in _3DNOW
    if pos > MAX_LENGTH:
        return None
    code[pos - 1]                                # the whole instruction must be inside `code`

    if not known:
        memory = []
        flow = Flow.FAR_OR_MODE_CHANGE
    else:
        if form.implicit:
            memory += _implicit_operands(flags, form, code, immediates_at, reg, rex_r, override, operand_bits,
                                         address_bits, stack_bits, bits)
        flow = (Flow.FAR_OR_MODE_CHANGE if "far" in flags or "fault" in flags else Flow.NEAR_BRANCH
                if "jmp" in flags else Flow.HLT if "hlt" in flags else Flow.ORDINARY)
    self_branch = relative is not None and (pos + relative) & ((1 << operand_bits) - 1) == 0
    return Instruction(pos, encoding, reported, reg, segment_prefix, operand_prefix, address_prefix, repeat,
                       lock, rex or None, w, operand_bits, address_bits, flow, self_branch, relative,
                       tuple(memory), known)


def _match(candidates, code, pos, w, bits):
    modrm = code[pos] if any(form.has_modrm for form in candidates) else None
    for form in candidates:
        flags = form.flags
        if ("i64" in flags and bits == 64) or ("o64" in flags and bits != 64):
            continue
        if form.w is not None and form.w != w:
            continue
        if modrm is not None and form.has_modrm:
            if form.modrm_byte is not None and modrm != form.modrm_byte:
                continue
            if form.reg is not None and (modrm >> 3) & 7 != form.reg:
                continue
            if form.mod is not None and (modrm >= 0xC0) != (form.mod == "r"):
                continue
        return form
    return None


def _operand_bits(bits, flags, operand_prefix, rex_w, amd):
    if "w64" in flags:
        return 64 if bits == 64 else 32
    if bits == 64:
        if rex_w or ("f64" in flags and not amd):
            return 64
        if "d64" in flags or "f64" in flags:
            return 16 if operand_prefix else 64
        return 16 if operand_prefix else 32
    return 16 if (bits == 16) != operand_prefix else 32


def _immediate_bytes(size, operand_bits):
    if size == "z":
        return 2 if operand_bits == 16 else 4
    if size == "v":
        return operand_bits // 8
    if size == "p":
        return 4 if operand_bits == 16 else 6
    return _FIXED_SIZES[size]


def _modrm_memory(code, pos, mod, rm, address_bits, bits, rex_x, rex_b, override, vsib, vsib_high):
    """(position after the displacement, MemoryOperand fields, whether the displacement is disp8)."""
    base = index = None
    scale = 1
    rip_relative = False
    if address_bits == 16:
        if mod == 0 and rm == 6:
            displacement_bytes = 2
        else:
            base, index = _ADDRESS16[rm]
            displacement_bytes = (0, 1, 2)[mod]
    else:
        displacement_bytes = (0, 1, 4)[mod]
        if rm == 4:
            sib = code[pos]
            pos += 1
            scale = 1 << (sib >> 6)
            index_number = (sib >> 3) & 7 | rex_x << 3
            if vsib:
                index = index_number | vsib_high << 4
            elif index_number != 4:
                index = _GPR[index_number]
            if sib & 7 == 5 and mod == 0:
                displacement_bytes = 4
            else:
                base = _GPR[sib & 7 | rex_b << 3]
        elif rm == 5 and mod == 0:
            displacement_bytes = 4
            rip_relative = bits == 64
        else:
            base = _GPR[rm | rex_b << 3]
    displacement = int.from_bytes(code[pos:pos + displacement_bytes], "little", signed=True)
    pos += displacement_bytes                    # past the end of `code`: the caller's check says None
    if override:
        segment = override
    elif base in (RSP, RBP) and not rip_relative:
        segment = "ss"
    else:
        segment = "ds"
    return pos, {"segment": segment, "base": base, "index": index, "scale": scale,
                 "displacement": displacement, "rip_relative": rip_relative, "vsib": vsib}, displacement_bytes == 1


def _scaled(operand, scale):
    return {**operand, "displacement": operand["displacement"] * scale}


def _disp8_scale(flags, size, w):
    """EVEX compressed disp8: N is the bytes accessed (a broadcast element, the vector, a
    tuple of elements), or the element for gathers, scatters, expand and compress."""
    if "n=e" in flags:
        return 4 << w
    if "n=bw" in flags:
        return 1 << w
    return size or 4 << w


def _rm_size(form, operand_bits, vector_bytes, w, bits, amd, encoding, evex_broadcast):
    size_code, access = form.rm or ("0", None)
    if size_code == "0":
        return None, None
    if encoding is Encoding.EVEX and evex_broadcast and form.broadcast is not None:
        return (4 << w if form.broadcast == "w" else form.broadcast), access
    return _memory_size(size_code, operand_bits, vector_bytes, w, bits, amd), access


def _memory_size(size_code, operand_bits, vector_bytes, w, bits, amd):
    fixed = _FIXED_SIZES.get(size_code)
    if fixed is not None:
        return fixed
    operand_bytes = operand_bits // 8
    if size_code == "v":
        return operand_bytes
    if size_code == "z":
        return 2 if operand_bytes == 2 else 4
    if size_code == "y":
        return 8 if operand_bytes == 8 else 4
    if size_code == "sxd":                       # movsxd: Intel reads m16 with 66, AMD always m32
        return 4 if amd or operand_bytes != 2 else 2
    if size_code == "p":                         # m16:16, m16:32, m16:64 (AMD: REX.W ignored)
        return 4 if operand_bytes == 2 else 6 if operand_bytes == 4 or amd else 10
    if size_code == "s":
        return 10 if bits == 64 else 6
    if size_code == "a":
        return 2 * operand_bytes
    if size_code == "x":
        return vector_bytes
    if size_code == "h":
        return vector_bytes // 2
    if size_code == "qr":
        return vector_bytes // 4
    if size_code == "oc":
        return vector_bytes // 8
    if size_code == "dup":
        return 8 if vector_bytes == 16 else vector_bytes
    if size_code == "e":
        return 4 << w
    if size_code == "env":
        return 14 if operand_bytes == 2 else 28
    if size_code == "fsave":
        return 94 if operand_bytes == 2 else 108
    if size_code == "bnd":
        return 16 if bits == 64 else 8
    return None                                  # "n": the encoding does not fix it


def _implicit_operands(flags, form, code, immediates_at, reg, rex_r, override, operand_bits, address_bits,
                       stack_bits, bits):
    operands = []
    slot = operand_bits // 8

    def implicit(segment, base, displacement, size, access, address=address_bits, **extra):
        operands.append(MemoryOperand(segment, base, extra.pop("index", None), 1, displacement, False, address,
                                      bits, size, access, True, **extra))

    for letter, size_code, access in form.strings:
        size = _memory_size(size_code, operand_bits, 16, False, bits, False)
        if letter == "X":
            implicit(override or "ds", RSI, 0, size, access)
        else:
            implicit("es", RDI, 0, size, access)
    if "xlat" in flags:
        implicit(override or "ds", RBX, 0, 1, "r", index=RAX, index_bits=8)
    elif "maskmov8" in flags or "maskmov16" in flags:
        implicit(override or "ds", RDI, 0, 8 if "maskmov8" in flags else 16, "w")
    elif "clzero" in flags:
        implicit(override or "ds", RAX, 0, 64, "w")
    elif "monitor" in flags:
        implicit(override or "ds", RAX, 0, None, None)
    elif "dest64" in flags:
        implicit("es", _GPR[reg | rex_r << 3], 0, 64, "w")
    # The stack.
    if "push" in flags:
        implicit("ss", RSP, -slot, slot, "w", stack_bits)
    elif "pop" in flags:
        implicit("ss", RSP, 0, slot, "r", stack_bits)
    elif "callf" in flags:
        implicit("ss", RSP, -2 * slot, 2 * slot, "w", stack_bits)
    elif "retf" in flags:
        implicit("ss", RSP, 0, 2 * slot, "r", stack_bits)
    elif "iret" in flags:
        implicit("ss", RSP, 0, (5 if bits == 64 else 3) * slot, "r", stack_bits)
    elif "pusha" in flags:
        implicit("ss", RSP, -8 * slot, 8 * slot, "w", stack_bits)
    elif "popa" in flags:
        implicit("ss", RSP, 0, 8 * slot, "r", stack_bits)
    elif "leave" in flags:
        implicit("ss", RBP, 0, slot, "r", stack_bits)
    elif "enter" in flags:
        # rBP, then the level - 1 frame pointers it copies from [rBP - ...], then the new frame pointer.
        level = code[immediates_at + 2] & 31
        slots = level + 1 if level else 1
        implicit("ss", RSP, -slots * slot, slots * slot, "w", stack_bits)
        if level > 1:
            implicit("ss", RBP, -(level - 1) * slot, (level - 1) * slot, "r", stack_bits)
    return operands
