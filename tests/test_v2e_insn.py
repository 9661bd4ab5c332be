"""The instruction length decoder that cuts each traced instruction's bytes."""
import pytest

from vmm.x86 import insn

PADDING = bytes(16)


@pytest.mark.parametrize("bits, hex_bytes, opcode", [
    (64, "c3", 0xC3),
    (64, "f4", 0xF4),
    (64, "be36002000", 0xBE),                     # mov $imm32, %esi
    (64, "48b85a5a5a5a5a5a5a5a", 0xB8),           # movabs $imm64, %rax
    (64, "890425 00001800", 0x89),                # mov %eax, abs32 (SIB, disp32)
    (64, "48833d96aa630000", 0x83),               # cmpq $0, rip-relative
    (64, "c78424bc00000001000000", 0xC7),         # movl $imm32, disp32(%rsp)
    (64, "f00fb1158fea1a00", 0x0FB1),             # lock cmpxchg rip-relative
    (64, "660f3a0fc108", 0x0F3A0F),               # palignr $8
    (64, "c5f877", 0x177),                        # vzeroupper
    (64, "c4e27918c0", 0x218),                    # vbroadcastss
    (64, "62f17c4828c1", 0x128),                  # vmovaps zmm (EVEX)
    (64, "e800000000", 0xE8),                     # call rel32
    (64, "0f8500000000", 0x0F85),                 # jnz rel32
    (64, "a1" "0000000000000000", 0xA1),          # movabs moffs64, %eax
    (64, "f7c000800000", 0xF7),                   # test $imm32, %eax
    (64, "f6c001", 0xF6),                         # test $imm8, %al
    (32, "66bafd03", 0xBA),                       # mov $imm16, %dx
    (32, "8b0424", 0x8B),                         # mov (%esp), %eax
    (32, "a1" "00001000", 0xA1),                  # mov moffs32, %eax
    (32, "c406", 0xC4),                           # les (%esi): VEX only with ModRM.mod=11 in 32-bit code
    (16, "be3690", 0xBE),                         # mov $imm16, %si
    (16, "66b910000000", 0xB9),                   # mov $imm32, %ecx (operand-size prefix)
    (16, "66a30090", 0xA3),                       # mov %eax, moffs16
    (16, "8b4602", 0x8B),                         # mov 2(%bp), %ax
    (16, "67668b0424", 0x8B),                     # mov (%esp), %eax (address-size prefix)
])
def test_length_and_opcode(bits, hex_bytes, opcode):
    code = bytes.fromhex(hex_bytes.replace(" ", ""))
    assert insn.decode(code + PADDING, bits) == (len(code), opcode)


def test_truncated_code_is_none():
    assert insn.decode(bytes.fromhex("48b85a5a"), 64) is None
    assert insn.decode(b"", 64) is None
    assert insn.decode(b"\x66" * 20, 64) is None


@pytest.mark.parametrize("code, opcode, bits, expected", [
    (b"\xeb\xfe", 0xEB, 64, True),                      # jmp .
    (b"\xeb\xe7", 0xEB, 64, False),                     # jmp back 25 bytes
    (b"\x75\xfe", 0x75, 32, True),                      # jnz .
    (b"\xe9\xfb\xff\xff\xff", 0xE9, 64, True),          # jmp rel32 .
    (b"\xe9\xfd\xff", 0xE9, 16, True),                  # jmp rel16 . in real mode
    (b"\x66\xe9\xfa\xff\xff\xff", 0xE9, 16, True),      # operand-size prefix: rel32 in real mode
    (b"\x0f\x85\xfa\xff\xff\xff", 0x0F85, 32, True),    # jnz rel32 .
    (b"\x0f\x85\x00\x00\x00\x00", 0x0F85, 32, False),
    (b"\xa8\x20", 0xA8, 64, False),                     # not a branch
])
def test_branches_to_itself(code, opcode, bits, expected):
    assert insn.branches_to_itself(code, opcode, bits) is expected
