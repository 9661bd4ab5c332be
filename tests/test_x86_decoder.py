"""vmm.x86.decoder by named vectors: each rule of the decoder's contract, with the bytes
that show it (objdump is the oracle of test_x86_decoder_objdump.py; these are from the SDM)."""
import pytest

from vmm.x86.decoder import (MAX_LENGTH, RAX, RBP, RBX, RCX, RDI, RDX, REGISTERS, RSI, RSP, Encoding, Flow,
                             decode, linear_address)

PADDING = bytes(16)
R8, R9, R12, R13 = 8, 9, 12, 13


def insn(hex_bytes, bits=64, vendor="intel", stack_bits=None):
    code = bytes.fromhex(hex_bytes.replace(" ", ""))
    decoded = decode(code + PADDING, bits, vendor, stack_bits)
    assert decoded is not None, f"expected {hex_bytes} to decode in {bits}-bit code, got None"
    return decoded


def fields(operand, *names):
    return tuple(getattr(operand, name) for name in names)


# -- lengths --------------------------------------------------------------------------------

@pytest.mark.parametrize("bits, hex_bytes, length, opcode", [
    (64, "c3", 1, 0xC3),
    (64, "be36002000", 5, 0xBE),                    # mov $imm32, %esi
    (64, "48b85a5a5a5a5a5a5a5a", 10, 0xB8),         # movabs $imm64, %rax
    (64, "89042500001800", 7, 0x89),                # mov %eax, abs32 (SIB, no base, disp32)
    (64, "48833d96aa630000", 8, 0x83),              # cmpq $0, rip-relative
    (64, "c78424bc00000001000000", 11, 0xC7),       # movl $imm32, disp32(%rsp)
    (64, "f00fb1158fea1a00", 8, 0x0FB1),            # lock cmpxchg rip-relative
    (64, "660f3a0fc108", 6, 0x0F3A0F),              # palignr $8
    (64, "c5f877", 3, 0x177),                       # vzeroupper: VEX without ModRM
    (64, "c4e27918c0", 5, 0x218),                   # vbroadcastss
    (64, "62f17c4828c1", 6, 0x128),                 # vmovaps zmm (EVEX)
    (64, "a10000000000000000", 9, 0xA1),            # movabs moffs64, %eax
    (64, "67a100000000", 6, 0xA1),                  # moffs32 with 67
    (64, "f7c000800000", 6, 0xF7),                  # test $imm32, %eax
    (64, "f6c001", 3, 0xF6),                        # test $imm8, %al
    (64, "f6d0", 2, 0xF6),                          # not %al: /2 has no immediate
    (64, "0f0fc19e", 4, 0x0F0F9E),                  # 3DNow! pfadd: ModRM, then the opcode suffix
    (64, "8fea7810c0 78563412", 9, 0xA10),          # XOP map A: bextr with imm32
    (64, "c8100003", 4, 0xC8),                      # enter $16, $3
    (64, "62f17c48584001", 7, 0x158),               # EVEX with disp8
    (32, "66bafd03", 4, 0xBA),                      # mov $imm16, %dx
    (32, "a100001000", 5, 0xA1),                    # moffs32
    (32, "9a785634120800", 7, 0x9A),                # lcall $8, $0x12345678
    (32, "c406", 2, 0xC4),                          # les (%esi): VEX needs ModRM.mod = 11 here
    (16, "be3690", 3, 0xBE),                        # mov $imm16, %si
    (16, "66b910000000", 6, 0xB9),                  # mov $imm32, %ecx
    (16, "66a30090", 4, 0xA3),                      # moffs16 with a 32-bit register
    (16, "8b4602", 3, 0x8B),                        # mov 2(%bp), %ax
    (16, "8b863412", 4, 0x8B),                      # 16-bit disp16
    (16, "8b063412", 4, 0x8B),                      # [disp16]
    (16, "67668b0424", 5, 0x8B),                    # 32-bit addressing in 16-bit code
    (16, "ea00100000", 5, 0xEA),                    # ljmp ptr16:16
])
def test_length_and_opcode(bits, hex_bytes, length, opcode):
    decoded = insn(hex_bytes, bits)
    assert (decoded.length, decoded.opcode) == (length, opcode), (
        f"expected {hex_bytes} ({bits}-bit) to be {length} bytes, opcode {opcode:#x}; "
        f"got {decoded.length} bytes, opcode {decoded.opcode:#x}")


@pytest.mark.parametrize("hex_bytes, bits, length", [
    ("0f2279", 64, 3),          # mov %rcx, %cr7 with ModRM.mod = 01: the CPU ignores mod
    ("0f2080", 64, 3),          # mov %cr0, %rax, mod = 10
    ("0f2100", 32, 3),          # mov %dr0, %eax, mod = 00
    ("0f2345", 32, 3),
    ("0f2479", 32, 3),          # 486 test-register moves ignore mod too
])
def test_mov_to_and_from_control_and_debug_registers_ignores_modrm_mod(hex_bytes, bits, length):
    decoded = insn(hex_bytes, bits)
    assert (decoded.length, decoded.memory) == (length, ()), (
        f"expected {hex_bytes} to be {length} bytes with no memory operand, got {decoded.length}, {decoded.memory}")


def test_rex_before_a_legacy_prefix_is_ignored():
    decoded = insn("486690")                        # rex.W; data16 nop: xchg %ax, %ax
    got = (decoded.length, decoded.rex, decoded.w, decoded.operand_bits, decoded.operand_size_prefix)
    assert got == (3, None, False, 16, True), f"expected 3 bytes, no REX, 16-bit operand with 66; got {got}"
    decoded = insn("4c668b00")                      # REX.WR ignored: mov (%rax), %ax
    got = (decoded.length, decoded.rex, decoded.operand_bits, decoded.memory[0].size)
    assert got == (4, None, 16, 2), f"expected a 4-byte 16-bit mov from a 2-byte operand, got {got}"


def test_only_the_last_rex_counts():
    decoded = insn("484890")
    assert (decoded.length, decoded.rex, decoded.w) == (3, 0x48, True), (
        f"expected 3 bytes with REX.W 0x48, got {decoded.length}, {decoded.rex}, {decoded.w}")
    decoded = insn("48418b00")                      # REX.W then REX.B: only REX.B (r8 base, 32-bit)
    got = (decoded.length, decoded.rex, decoded.operand_bits, decoded.memory[0].base)
    assert got == (4, 0x41, 32, R8), f"expected REX 0x41: 32-bit mov from (%r8), got {got}"


def test_rex_w_beats_66():
    decoded = insn("66489c")                        # pushfq
    assert decoded.operand_bits == 64 and decoded.memory[0].size == 8, (
        f"expected a 64-bit push of 8 bytes, got {decoded.operand_bits} bits, {decoded.memory}")


@pytest.mark.parametrize("hex_bytes, intel, amd", [
    ("66e900000000", (6, 64), (4, 16)),             # jmp rel32 / rel16
    ("66e800000000", (6, 64), (4, 16)),             # call
    ("660f8500000000", (7, 64), (5, 16)),           # jne
    ("66eb00", (3, 64), (3, 16)),                   # jmp rel8: same length
    ("66c3", (2, 64), (2, 16)),                     # ret
])
def test_near_branches_with_66_in_64_bit_mode_follow_the_vendor(hex_bytes, intel, amd):
    for vendor, expected in (("intel", intel), ("amd", amd)):
        decoded = insn(hex_bytes, 64, vendor)
        assert (decoded.length, decoded.operand_bits) == expected, (
            f"expected {hex_bytes} on {vendor} to be {expected} (length, operand bits), "
            f"got {(decoded.length, decoded.operand_bits)}")


def test_66_near_branch_outside_64_bit_mode_is_the_same_on_both_vendors():
    for vendor in ("intel", "amd"):
        assert insn("66e90000", 32, vendor).length == 4, f"expected jmp rel16 in 32-bit code to be 4 bytes ({vendor})"
        assert insn("66e900000000", 16, vendor).length == 6, f"expected jmp rel32 in 16-bit code ({vendor})"


def test_66_near_branch_stack_slot_follows_the_vendor():
    intel, amd = insn("66e800000000", 64, "intel"), insn("66e80000", 64, "amd")
    assert (intel.memory[0].size, amd.memory[0].size) == (8, 2), (
        f"expected call to push 8 bytes on Intel and 2 on AMD, got {intel.memory[0].size}, {amd.memory[0].size}")
    intel, amd = insn("66ff10", 64, "intel"), insn("66ff10", 64, "amd")
    assert (intel.memory[0].size, amd.memory[0].size) == (8, 2), (
        f"expected call *(%rax) to read 8 bytes on Intel and 2 on AMD, got {intel.memory[0].size}, "
        f"{amd.memory[0].size}")


@pytest.mark.parametrize("hex_bytes, length, opcode", [
    ("660f78c00102", 6, 0x0F78),                    # extrq $1, $2, %xmm0
    ("f20f78c10102", 6, 0x0F78),                    # insertq $1, $2, %xmm1, %xmm0
    ("0f78c0", 3, 0x0F78),                          # vmread %rax, %rax: no immediates
    ("660f79c1", 4, 0x0F79),                        # extrq %xmm1, %xmm0
    ("f20f79c1", 4, 0x0F79),                        # insertq %xmm1, %xmm0
    ("66f20f78c10102", 7, 0x0F78),                  # F2 is the mandatory prefix, not 66
])
def test_sse4a_extrq_insertq_and_vmread(hex_bytes, length, opcode):
    decoded = insn(hex_bytes)
    assert (decoded.length, decoded.opcode) == (length, opcode), (
        f"expected {hex_bytes} to be {length} bytes, got {decoded.length}")


@pytest.mark.parametrize("bits", (16, 32))
def test_xop_is_xop_outside_64_bit_mode_whatever_modrm_mod(bits):
    decoded = insn("8fe9780108", bits)              # blcfill (%eax/%bx+si), %eax: byte 1 has "mod" 11
    assert (decoded.encoding, decoded.length, decoded.opcode) == (Encoding.XOP, 5, 0x901), (
        f"expected XOP map 9 op 01, 5 bytes; got {decoded.encoding}, {decoded.length}, {decoded.opcode:#x}")
    decoded = insn("8f09780108", bits)              # the same with "mod" 00 in byte 1
    assert (decoded.encoding, decoded.length) == (Encoding.XOP, 5), (
        f"expected XOP with mod 00 too, got {decoded.encoding}, {decoded.length}")
    decoded = insn("8f00", bits)                    # map 0: pop
    assert (decoded.encoding, decoded.length, decoded.memory[0].access) == (Encoding.LEGACY, 2, "w"), (
        f"expected pop to memory, got {decoded}")


@pytest.mark.parametrize("bits, hex_bytes, encoding, length", [
    (32, "c400", Encoding.LEGACY, 2),               # les (%eax), %eax
    (32, "c5 06", Encoding.LEGACY, 2),              # lds
    (32, "c4e2791800", Encoding.VEX, 5),            # vbroadcastss (%eax)
    (32, "c5f877", Encoding.VEX, 3),
    (16, "c4e2791800", Encoding.VEX, 5),
    (32, "6200", Encoding.LEGACY, 2),               # bound
    (32, "62f17c485800", Encoding.EVEX, 6),
    (64, "c400", Encoding.VEX, 5),                  # 64-bit: always VEX (a truncated-looking one)
    (64, "62f17c485800", Encoding.EVEX, 6),
])
def test_vex_and_evex_outside_64_bit_mode_need_modrm_mod_11(bits, hex_bytes, encoding, length):
    decoded = insn(hex_bytes, bits)
    assert (decoded.encoding, decoded.length) == (encoding, length), (
        f"expected {hex_bytes} ({bits}-bit) to be {encoding} of {length} bytes, got {decoded.encoding}, "
        f"{decoded.length}")


def test_truncated_or_too_long_is_none():
    assert decode(bytes.fromhex("48b85a5a"), 64) is None, "expected a truncated movabs to be None"
    assert decode(b"", 64) is None, "expected no bytes to be None"
    assert decode(bytes.fromhex("8b04"), 32) is None, "expected a missing SIB to be None"
    assert decode(bytes.fromhex("62f17c48"), 64) is None, "expected a truncated EVEX to be None"
    assert decode(b"\x66" * 14 + b"\x90", 64).length == MAX_LENGTH, "expected 14 prefixes and nop to be 15 bytes"
    assert decode(b"\x66" * 15 + b"\x90", 64) is None, "expected 16 bytes to be None"
    assert decode(b"\x67" * 11 + bytes.fromhex("c7c000000000"), 64) is None, "expected 17 bytes to be None"


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError):
        decode(b"\x90", 8)
    with pytest.raises(ValueError):
        decode(b"\x90", 64, "via")
    with pytest.raises(ValueError):
        decode(b"\x90", 64, "intel", 8)


# -- prefixes, sizes and known-ness --------------------------------------------------------

def test_prefixes_seen():
    decoded = insn("f0 64 67 66 48 0f b1 08")       # lock fs addr32 data16 REX.W cmpxchg %rcx, (%eax)
    got = (decoded.lock, decoded.segment_prefix, decoded.address_size_prefix, decoded.operand_size_prefix,
           decoded.rex, decoded.w, decoded.operand_bits, decoded.address_bits, decoded.repeat)
    assert got == (True, "fs", True, True, 0x48, True, 64, 32, None), f"got {got}"
    assert insn("f3a4", 32).repeat == "rep" and insn("f2ae", 32).repeat == "repne", "expected rep and repne"
    assert insn("f2f3a4", 32).repeat == "rep", "expected the last of F2/F3 to count"


@pytest.mark.parametrize("hex_bytes, bits, operand_bits", [
    ("50", 64, 64), ("6650", 64, 16), ("50", 32, 32), ("6650", 32, 16), ("50", 16, 16), ("6650", 16, 32),
    ("0f20c0", 64, 64), ("660f20c0", 32, 32),       # mov from CR: the prefix changes nothing
    ("8b00", 64, 32), ("488b00", 64, 64), ("668b00", 64, 16),
    ("660f6ec0", 64, 32), ("66480f6ec0", 64, 64),   # movd/movq: a mandatory 66 is no operand size
])
def test_operand_size(hex_bytes, bits, operand_bits):
    decoded = insn(hex_bytes, bits)
    assert decoded.operand_bits == operand_bits, (
        f"expected {hex_bytes} ({bits}-bit) to have {operand_bits}-bit operands, got {decoded.operand_bits}")


@pytest.mark.parametrize("hex_bytes, bits", [
    ("06", 64), ("d4 0a", 64), ("9a 0000 0000 0800", 64), ("0f0b", 64), ("0f ff c0", 32), ("fe d0", 64),
    ("66c5f877", 64), ("48c5f877", 64), ("f262f17c485800", 64),     # VEX/EVEX after a prefix: #UD
    ("62f17c581000", 64),                           # EVEX.b on vmovups from memory: no broadcast, #UD
    ("0fa6c8", 64),                                 # VIA PadLock: not on Intel/AMD
])
def test_undecodable_bytes_are_far_or_mode_change(hex_bytes, bits):
    decoded = insn(hex_bytes, bits)
    assert decoded.flow is Flow.FAR_OR_MODE_CHANGE, f"expected {hex_bytes} to be FAR_OR_MODE_CHANGE, got {decoded.flow}"
    if hex_bytes not in ("0f0b", "0f ff c0"):
        assert (decoded.known, decoded.memory) == (False, ()), (
            f"expected {hex_bytes} to be unknown without operands, got {decoded.known}, {decoded.memory}")


# -- control flow ---------------------------------------------------------------------------

@pytest.mark.parametrize("hex_bytes, bits, flow", [
    ("90", 64, Flow.ORDINARY), ("f4", 64, Flow.HLT), ("0f05", 64, Flow.FAR_OR_MODE_CHANGE),
    ("c3", 64, Flow.NEAR_BRANCH), ("c20800", 32, Flow.NEAR_BRANCH), ("e8 00000000", 64, Flow.NEAR_BRANCH),
    ("ff d0", 64, Flow.NEAR_BRANCH), ("ff 20", 64, Flow.NEAR_BRANCH), ("e2 fe", 32, Flow.NEAR_BRANCH),
    ("e3 fe", 64, Flow.NEAR_BRANCH), ("75 00", 64, Flow.NEAR_BRANCH), ("0f84 00000000", 64, Flow.NEAR_BRANCH),
    ("c7f8 00000000", 64, Flow.NEAR_BRANCH),        # xbegin
    ("ff 18", 32, Flow.FAR_OR_MODE_CHANGE), ("ff 28", 64, Flow.FAR_OR_MODE_CHANGE),
    ("ea 00000000 0800", 32, Flow.FAR_OR_MODE_CHANGE), ("cb", 64, Flow.FAR_OR_MODE_CHANGE),
    ("cc", 64, Flow.FAR_OR_MODE_CHANGE), ("cd 80", 32, Flow.FAR_OR_MODE_CHANGE), ("ce", 32, Flow.FAR_OR_MODE_CHANGE),
    ("f1", 64, Flow.FAR_OR_MODE_CHANGE), ("48cf", 64, Flow.FAR_OR_MODE_CHANGE), ("0f07", 64, Flow.FAR_OR_MODE_CHANGE),
    ("0f34", 32, Flow.FAR_OR_MODE_CHANGE), ("0f35", 32, Flow.FAR_OR_MODE_CHANGE),
    ("0f22d8", 64, Flow.FAR_OR_MODE_CHANGE), ("0f20d8", 64, Flow.ORDINARY),     # mov to CR3 / from CR3
    ("0f23f8", 64, Flow.FAR_OR_MODE_CHANGE), ("0f30", 64, Flow.FAR_OR_MODE_CHANGE), ("0f32", 64, Flow.ORDINARY),
    ("0f0110", 64, Flow.FAR_OR_MODE_CHANGE), ("0f0118", 64, Flow.FAR_OR_MODE_CHANGE),    # lgdt, lidt
    ("0f0100", 64, Flow.ORDINARY), ("0f01f0", 64, Flow.FAR_OR_MODE_CHANGE),             # sgdt, lmsw
    ("0f0138", 64, Flow.FAR_OR_MODE_CHANGE), ("0f0010", 64, Flow.FAR_OR_MODE_CHANGE),   # invlpg, lldt
    ("0faa", 32, Flow.FAR_OR_MODE_CHANGE), ("8ed8", 32, Flow.FAR_OR_MODE_CHANGE),       # rsm, mov to DS
    ("1f", 32, Flow.FAR_OR_MODE_CHANGE), ("0fa1", 64, Flow.FAR_OR_MODE_CHANGE),         # pop ds, pop fs
    ("0fb200", 32, Flow.FAR_OR_MODE_CHANGE), ("0f01f8", 64, Flow.FAR_OR_MODE_CHANGE),   # lss, swapgs
    ("f30faed0", 64, Flow.FAR_OR_MODE_CHANGE), ("f30faec0", 64, Flow.ORDINARY),         # wrfsbase, rdfsbase
    ("0f06", 64, Flow.FAR_OR_MODE_CHANGE), ("0f01d8", 64, Flow.FAR_OR_MODE_CHANGE),     # clts, vmrun
    ("0f01c1", 64, Flow.FAR_OR_MODE_CHANGE), ("0f01c9", 64, Flow.ORDINARY),             # vmcall, mwait
    ("0fa2", 64, Flow.ORDINARY), ("0f31", 64, Flow.ORDINARY), ("9d", 64, Flow.ORDINARY),
])
def test_flow(hex_bytes, bits, flow):
    decoded = insn(hex_bytes, bits)
    assert decoded.flow is flow, f"expected {hex_bytes} ({bits}-bit) to be {flow}, got {decoded.flow}"


@pytest.mark.parametrize("hex_bytes, bits, vendor, expected", [
    ("ebfe", 64, "intel", True),                    # jmp .
    ("ebe7", 64, "intel", False),                   # jmp back 25 bytes
    ("75fe", 32, "intel", True),                    # jnz .
    ("e2fe", 32, "intel", True),                    # loop .
    ("e9fbffffff", 64, "intel", True),              # jmp rel32 .
    ("e9fdff", 16, "intel", True),                  # jmp rel16 . in real mode
    ("66e9faffffff", 16, "intel", True),            # 66: rel32 in real mode
    ("66e9fcff", 64, "amd", True),                  # AMD: rel16 with 66 in 64-bit mode
    ("66e9faffffff", 64, "intel", True),            # Intel: rel32
    ("0f85faffffff", 32, "intel", True),
    ("0f8500000000", 32, "intel", False),
    ("a820", 64, "intel", False),                   # not a branch
])
def test_branches_to_itself(hex_bytes, bits, vendor, expected):
    decoded = insn(hex_bytes, bits, vendor)
    assert decoded.branches_to_itself is expected, (
        f"expected branches_to_itself {expected} for {hex_bytes}, got {decoded.branches_to_itself}")


def test_branch_target_wraps_at_the_operand_size():
    decoded = insn("eb80", 16)                      # jmp -128 from ip 0x10
    assert decoded.branch_target(0x10) == 0xFF92, f"expected 0xff92, got {decoded.branch_target(0x10):#x}"
    decoded = insn("e8 00100000")
    target = decoded.branch_target(0x7FFF_FFFF_F000)
    assert target == 0x8000_0000_0005, f"expected 0x800000000005, got {target:#x}"
    assert insn("90").branch_target(0) is None, "expected no target for nop"


# -- memory operands ------------------------------------------------------------------------

_FIELDS = ("segment", "base", "index", "scale", "displacement", "rip_relative", "address_bits", "size", "access")


@pytest.mark.parametrize("hex_bytes, bits, expected", [
    ("8b442408", 64, ("ss", RSP, None, 1, 8, False, 64, 4, "r")),               # mov 8(%rsp), %eax
    ("890425 00001800", 64, ("ds", None, None, 1, 0x180000, False, 64, 4, "w")),
    ("488b05 10000000", 64, ("ds", None, None, 1, 0x10, True, 64, 8, "r")),    # rip-relative
    ("64488b042528000000", 64, ("fs", None, None, 1, 0x28, False, 64, 8, "r")),
    ("678b0498", 64, ("ds", RAX, RBX, 4, 0, False, 32, 4, "r")),               # addr32 in 64-bit mode
    ("438b4c2580", 64, ("ds", R13, R12, 1, -0x80, False, 64, 4, "r")),         # REX.X/B: r13 + r12
    ("4a8b0424", 64, ("ss", RSP, R12, 1, 0, False, 64, 8, "r")),               # REX.X: index r12, not none
    ("418b4500", 64, ("ds", R13, None, 1, 0, False, 64, 4, "r")),              # r13 needs a disp8, not SS
    ("2e8b4500", 64, ("ss", RBP, None, 1, 0, False, 64, 4, "r")),              # CS ignored in 64-bit mode
    ("64 2e 8b00", 64, ("fs", RAX, None, 1, 0, False, 64, 4, "r")),            # ...and does not cancel FS
    ("3e8b45fc", 32, ("ds", RBP, None, 1, -4, False, 32, 4, "r")),             # DS override of EBP's SS
    ("8b05 78563412", 32, ("ds", None, None, 1, 0x12345678, False, 32, 4, "r")),  # absolute, not EIP-relative
    ("8b4210", 16, ("ss", RBP, RSI, 1, 0x10, False, 16, 2, "r")),              # [bp+si+0x10]
    ("8b063412", 16, ("ds", None, None, 1, 0x1234, False, 16, 2, "r")),        # [0x1234]
    ("268b07", 16, ("es", RBX, None, 1, 0, False, 16, 2, "r")),                # es:[bx]
    ("8b8600f0", 16, ("ss", RBP, None, 1, -0x1000, False, 16, 2, "r")),        # disp16 is signed
    ("0103", 32, ("ds", RBX, None, 1, 0, False, 32, 4, "rw")),                 # add %eax, (%ebx)
    ("3903", 32, ("ds", RBX, None, 1, 0, False, 32, 4, "r")),                  # cmp
    ("8703", 32, ("ds", RBX, None, 1, 0, False, 32, 4, "rw")),                 # xchg
    ("0f9403", 32, ("ds", RBX, None, 1, 0, False, 32, 1, "w")),                # sete
    ("d91b", 32, ("ds", RBX, None, 1, 0, False, 32, 4, "w")),                  # fstp m32
    ("db2b", 32, ("ds", RBX, None, 1, 0, False, 32, 10, "r")),                 # fld m80
    ("0f2903", 32, ("ds", RBX, None, 1, 0, False, 32, 16, "w")),               # movaps store
    ("c5fc1003", 32, ("ds", RBX, None, 1, 0, False, 32, 32, "r")),             # vmovups ymm load
    ("0fc70b", 32, ("ds", RBX, None, 1, 0, False, 32, 8, "rw")),               # cmpxchg8b
    ("480fc70b", 64, ("ds", RBX, None, 1, 0, False, 64, 16, "rw")),            # cmpxchg16b
    ("0f0113", 32, ("ds", RBX, None, 1, 0, False, 32, 6, "r")),                # lgdt
    ("0f0113", 64, ("ds", RBX, None, 1, 0, False, 64, 10, "r")),
    ("0fae03", 64, ("ds", RBX, None, 1, 0, False, 64, 512, "w")),              # fxsave
    ("dd33", 32, ("ds", RBX, None, 1, 0, False, 32, 108, "w")),                # fnsave
    ("66dd33", 32, ("ds", RBX, None, 1, 0, False, 32, 94, "w")),
    ("d923", 16, ("ss", RBP, RDI, 1, 0, False, 16, 14, "r")),                  # fldenv [bp+di], 16-bit
    ("0fae23", 64, ("ds", RBX, None, 1, 0, False, 64, None, "w")),             # xsave: the size varies
    ("8d03", 64, ("ds", RBX, None, 1, 0, False, 64, None, None)),              # lea: no access
    ("0f1803", 64, ("ds", RBX, None, 1, 0, False, 64, None, None)),            # prefetchnta
    ("0f1f4000", 64, ("ds", RAX, None, 1, 0, False, 64, None, None)),          # nopl 0(%rax)
    ("0fae3b", 64, ("ds", RBX, None, 1, 0, False, 64, None, None)),            # clflush
    ("ff2b", 64, ("ds", RBX, None, 1, 0, False, 64, 6, "r")),                  # ljmp *(%rbx): m16:32
    ("66ff2b", 64, ("ds", RBX, None, 1, 0, False, 64, 4, "r")),                # m16:16
    ("63 03", 64, ("ds", RBX, None, 1, 0, False, 64, 4, "r")),                 # movsxd
    ("62f17c48584001", 64, ("ds", RAX, None, 1, 0x40, False, 64, 64, "r")),    # vaddps zmm: disp8 * 64
    ("62f17c58584001", 64, ("ds", RAX, None, 1, 4, False, 64, 4, "r")),        # {1to16}: disp8 * 4
    ("62f1fd58584001", 64, ("ds", RAX, None, 1, 8, False, 64, 8, "r")),        # vaddpd {1to8}: disp8 * 8
    ("62f17c48588000010000", 64, ("ds", RAX, None, 1, 0x100, False, 64, 64, "r")),   # disp32: not scaled
    ("62f27d48884001", 64, ("ds", RAX, None, 1, 4, False, 64, 64, "r")),       # vexpandps: disp8 * element
    ("62f27d488a4001", 64, ("ds", RAX, None, 1, 4, False, 64, 64, "w")),       # vcompressps store
    ("62f27d08214001", 64, ("ds", RAX, None, 1, 4, False, 64, 4, "r")),        # vpmovsxbd xmm: m32
    ("62f27e48324001", 64, ("ds", RAX, None, 1, 8, False, 64, 8, "w")),        # vpmovqb zmm -> m64
    ("a1f0debc9a78563412", 64, ("ds", None, None, 1, 0x123456789ABCDEF0, False, 64, 4, "r")),  # moffs64: unsigned
    ("6548a31000000000000000", 64, ("gs", None, None, 1, 0x10, False, 64, 8, "w")),
    ("67a0f0ffffff", 64, ("ds", None, None, 1, 0xFFFFFFF0, False, 32, 1, "r")),  # moffs32 with 67
    ("66a33412", 16, ("ds", None, None, 1, 0x1234, False, 16, 4, "w")),
    ("2ea0 3412", 16, ("cs", None, None, 1, 0x1234, False, 16, 1, "r")),
])
def test_explicit_memory_operand(hex_bytes, bits, expected):
    decoded = insn(hex_bytes, bits)
    assert len(decoded.memory) == 1, f"expected one memory operand for {hex_bytes}, got {decoded.memory}"
    got = fields(decoded.memory[0], *_FIELDS)
    assert got == expected, (f"expected {hex_bytes} ({bits}-bit) {dict(zip(_FIELDS, expected))}, "
                             f"got {dict(zip(_FIELDS, got))}")


@pytest.mark.parametrize("hex_bytes, intel, amd", [
    ("48ff2b", 10, 6),                              # ljmp *(%rbx) with REX.W: m16:64 on Intel only
    ("48ff1b", 10, 6),                              # lcall
    ("480fb203", 10, 6),                            # lss
])
def test_far_pointers_with_rex_w_follow_the_vendor(hex_bytes, intel, amd):
    sizes = (insn(hex_bytes, 64, "intel").memory[0].size, insn(hex_bytes, 64, "amd").memory[0].size)
    assert sizes == (intel, amd), f"expected {hex_bytes} to read {intel} bytes on Intel, {amd} on AMD, got {sizes}"


def test_movsxd_with_66_reads_a_word_on_intel_and_a_dword_on_amd():
    sizes = (insn("666303", 64, "intel").memory[0].size, insn("666303", 64, "amd").memory[0].size)
    assert sizes == (2, 4), f"expected 2 bytes on Intel and 4 on AMD, got {sizes}"


def test_gather_has_a_vsib_operand_of_one_element():
    operand = insn("62f27d4990048d10000000").memory[0]          # vpgatherdd 0x10(,%zmm1,4), %zmm0{%k1}
    got = fields(operand, "vsib", "base", "index", "scale", "displacement", "size", "access")
    assert got == (True, None, 1, 4, 0x10, 4, "r"), f"expected a VSIB index zmm1, 4-byte elements, got {got}"
    with pytest.raises(ValueError):
        linear_address(operand, (0,) * 18, 0, lambda name: 0)
    operand = insn("62927d41901c8e").memory[0]                  # (%r14,%zmm25,4): EVEX.X and V' extend the index
    assert (operand.base, operand.index) == (14, 25), f"expected base r14, index zmm25, got {operand}"


@pytest.mark.parametrize("hex_bytes, bits, expected", [
    # string instructions: (segment, base, size, access) of each operand
    ("f3a4", 32, [("es", RDI, 1, "w"), ("ds", RSI, 1, "r")]),
    ("64a5", 32, [("es", RDI, 4, "w"), ("fs", RSI, 4, "r")]),
    ("66a7", 16, [("ds", RSI, 4, "r"), ("es", RDI, 4, "r")]),
    ("48ab", 64, [("es", RDI, 8, "w")]),
    ("ac", 64, [("ds", RSI, 1, "r")]),
    ("6d", 32, [("es", RDI, 4, "w")]),
    ("486d", 64, [("es", RDI, 4, "w")]),            # ins: at most 32 bits
    # the stack
    ("50", 64, [("ss", RSP, 8, "w")]),
    ("58", 32, [("ss", RSP, 4, "r")]),
    ("6a00", 16, [("ss", RSP, 2, "w")]),
    ("0fa8", 64, [("ss", RSP, 8, "w")]),            # push gs
    ("9c", 32, [("ss", RSP, 4, "w")]),
    ("60", 32, [("ss", RSP, 32, "w")]),             # pusha
    ("61", 16, [("ss", RSP, 16, "r")]),             # popa
    ("c3", 32, [("ss", RSP, 4, "r")]),
    ("c21000", 64, [("ss", RSP, 8, "r")]),
    ("cb", 32, [("ss", RSP, 8, "r")]),              # retf: eip and cs slots
    ("48cf", 64, [("ss", RSP, 40, "r")]),           # iretq: rip, cs, rflags, rsp, ss
    ("cf", 16, [("ss", RSP, 6, "r")]),
    ("e800000000", 64, [("ss", RSP, 8, "w")]),
    ("9a000000000800", 32, [("ss", RSP, 8, "w")]),  # lcall: eip and cs slots
    ("c9", 64, [("ss", RBP, 8, "r")]),              # leave pops from rbp
    ("ff33", 64, [("ds", RBX, 8, "r"), ("ss", RSP, 8, "w")]),   # push (%rbx)
    ("8f03", 32, [("ds", RBX, 4, "w"), ("ss", RSP, 4, "r")]),   # pop (%ebx)
    ("d7", 32, [("ds", RBX, 1, "r")]),              # xlat
    ("0ff7c1", 32, [("ds", RDI, 8, "w")]),          # maskmovq
    ("660ff7c1", 64, [("ds", RDI, 16, "w")]),       # maskmovdqu
    ("0f01fc", 64, [("ds", RAX, 64, "w")]),         # clzero
    ("0f01c8", 64, [("ds", RAX, None, None)]),      # monitor: an address, no access
])
def test_implicit_memory_operands(hex_bytes, bits, expected):
    decoded = insn(hex_bytes, bits)
    got = [fields(operand, "segment", "base", "size", "access") for operand in decoded.memory]
    assert got == expected, f"expected {hex_bytes} ({bits}-bit) operands {expected}, got {got}"
    implicit = [operand.implicit for operand in decoded.memory]
    explicit_first = hex_bytes in ("ff33", "8f03")
    assert implicit == [not (explicit_first and position == 0) for position in range(len(expected))], (
        f"expected {hex_bytes}'s encoded operand first and the rest implicit, got {implicit}")


def test_enter_writes_its_frame_and_reads_the_outer_frame_pointers():
    decoded = insn("c8100003", 32)                  # enter $16, $3: push ebp, copy 2 frame pointers, push the new one
    got = [fields(operand, "base", "displacement", "size", "access") for operand in decoded.memory]
    assert got == [(RSP, -16, 16, "w"), (RBP, -8, 8, "r")], f"got {got}"
    decoded = insn("c8080000", 64)
    got = [fields(operand, "base", "displacement", "size", "access") for operand in decoded.memory]
    assert got == [(RSP, -8, 8, "w")], f"expected one slot for level 0, got {got}"


def test_movdir64b_writes_64_bytes_at_es_register():
    decoded = insn("660f38f811")                    # movdir64b (%rcx), %rdx
    got = [fields(operand, "segment", "base", "size", "access", "implicit") for operand in decoded.memory]
    assert got == [("ds", RCX, 64, "r", False), ("es", RDX, 64, "w", True)], f"got {got}"


def test_stack_operands_use_the_stack_address_size():
    operand = insn("50", 16, stack_bits=32).memory[0]
    assert (operand.size, operand.address_bits) == (2, 32), f"expected a 2-byte push on a 32-bit stack, got {operand}"


# -- linear addresses -----------------------------------------------------------------------

def _regs(**values):
    regs = [0] * len(REGISTERS)
    for name, value in values.items():
        regs[REGISTERS.index(name)] = value
    return tuple(regs)


def _bases(**bases):
    return lambda name: bases.get(name, 0)


@pytest.mark.parametrize("hex_bytes, bits, regs, next_rip, bases, expected", [
    ("8b442408", 64, _regs(rsp=0x7000), 0, {}, 0x7008),
    ("8b442408", 64, _regs(rsp=0x7000), 0, {"ss": 0x1000}, 0x7008),              # 64-bit: no SS base
    ("64488b042528000000", 64, _regs(), 0, {"fs": 0x7FFF_0000_0000}, 0x7FFF_0000_0028),
    ("488b05 10000000", 64, _regs(), 0x401000, {}, 0x401010),                    # rip-relative
    ("678b0498", 64, _regs(rax=0xFFFF_FFF0, rbx=0x10), 0, {}, 0x30),             # 32-bit wrap before FS/GS
    ("67648b00", 64, _regs(rax=0x1_0000_0010), 0, {"fs": 0x1_0000_0000}, 0x1_0000_0010),
    ("438b4c2580", 64, _regs(r13=0x1000, r12=0x20), 0, {}, 0xFA0),
    ("8b4210", 16, _regs(rbp=0xFFF0, rsi=0x8), 0, {"ss": 0x20000}, 0x20008),     # [bp+si+0x10] wraps at 16 bits
    ("8b8600f0", 16, _regs(rbp=0x0800), 0, {"ss": 0x1000}, 0x1000 + 0xF800),     # signed disp16, then wrap
    ("268b07", 16, _regs(rbx=0x1234), 0, {"es": 0xB8000}, 0xB9234),
    ("3e8b45fc", 32, _regs(rbp=0x2000), 0, {"ds": 0xFFFF_F000}, 0x0FFC),         # linear address wraps at 32 bits
    ("8b05 78563412", 32, _regs(), 0, {"ds": 0x100}, 0x12345778),
    ("d7", 32, _regs(rbx=0x1000, rax=0xFFFF_FF05), 0, {}, 0x1005),               # xlat adds AL only
    ("0fa303", 32, _regs(rbx=0x1000, rax=100), 0, {}, 0x1000 + 12),              # bt %eax, (%ebx): dword 3
    ("0fa303", 32, _regs(rbx=0x1000, rax=0xFFFF_FFFF), 0, {}, 0xFFC),            # bit -1: the dword below
    ("660fab03", 32, _regs(rbx=0x100, rax=0x8001), 0, {}, 0x100 - 0x1000),       # bts %ax: bit -32767 -> word -2048
    ("8f0424", 64, _regs(rsp=0x8000), 0, {}, 0x8008),                            # pop (%rsp): rsp after the pop
    ("50", 64, _regs(rsp=0x8000), 0, {}, 0x7FF8),
    ("50", 32, _regs(rsp=0x0000_0002), 0, {"ss": 0x100}, 0xFE),                  # stack wraps at 32 bits
])
def test_linear_address(hex_bytes, bits, regs, next_rip, bases, expected):
    decoded = insn(hex_bytes, bits)
    address = linear_address(decoded.memory[0], regs, next_rip, _bases(**bases))
    if bits != 64:
        expected &= 0xFFFF_FFFF
    assert address == expected, f"expected {hex_bytes} ({bits}-bit) at {expected:#x}, got {address:#x}"
