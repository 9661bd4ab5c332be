"""x86 instruction length decoding, enough to record each traced instruction's bytes.

Covers the legacy, 0F, 0F38 and 0F3A opcode maps with prefixes, REX, ModRM,
SIB, displacements and immediates, plus VEX/EVEX/XOP encodings, in 16-, 32-
and 64-bit code. It does not validate opcodes: the CPU already executed the
instruction; only its length is wanted.
"""
MAX_LENGTH = 15

_LEGACY_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))


def _ranges(*spans):
    table = set()
    for span in spans:
        if isinstance(span, int):
            table.add(span)
        else:
            table.update(range(span[0], span[1] + 1))
    return frozenset(table)


# One-byte map: opcodes with a ModRM byte.
_MODRM_1 = _ranges((0x00, 0x03), (0x08, 0x0B), (0x10, 0x13), (0x18, 0x1B), (0x20, 0x23), (0x28, 0x2B),
                   (0x30, 0x33), (0x38, 0x3B), 0x62, 0x63, 0x69, 0x6B, (0x80, 0x8F), (0xC0, 0xC1),
                   (0xC4, 0xC7), (0xD0, 0xD3), (0xD8, 0xDF), (0xF6, 0xF7), (0xFE, 0xFF))
# One-byte map: immediate byte, and immediate word/dword (16 or 32 by operand size).
_IMM8_1 = _ranges(0x04, 0x0C, 0x14, 0x1C, 0x24, 0x2C, 0x34, 0x3C, 0x6A, 0x6B, (0x70, 0x7F), 0x80, 0x82,
                  0x83, 0xA8, (0xB0, 0xB7), 0xC0, 0xC1, 0xC6, 0xCD, 0xD4, 0xD5, (0xE0, 0xE7), 0xEB)
_IMMZ_1 = _ranges(0x05, 0x0D, 0x15, 0x1D, 0x25, 0x2D, 0x35, 0x3D, 0x68, 0x69, 0x81, 0xA9, 0xC7, 0xE8, 0xE9)
# Two-byte map (0F xx): opcodes without ModRM, and the immediates.
_NO_MODRM_2 = _ranges((0x05, 0x0B), 0x0E, (0x30, 0x37), 0x77, (0x80, 0x8F), (0xA0, 0xA2), (0xA8, 0xAA),
                      (0xC8, 0xCF))
_IMM8_2 = _ranges((0x70, 0x73), 0xA4, 0xAC, 0xBA, 0xC2, (0xC4, 0xC6), 0x0F)


def _modrm_length(code, at, address_bits):
    """Bytes taken by the ModRM at code[at] with its SIB and displacement."""
    modrm = code[at]
    mod, rm = modrm >> 6, modrm & 7
    if mod == 3:
        return 1
    if address_bits == 16:
        if mod == 0:
            return 3 if rm == 6 else 1
        return 2 if mod == 1 else 3
    length = 1
    if rm == 4:
        length += 1
        if mod == 0 and code[at + 1] & 7 == 5:
            return length + 4
    if mod == 0:
        return length + (4 if rm == 5 else 0)
    return length + (1 if mod == 1 else 4)


def decode(code, bits):
    """(length, opcode) of the instruction starting code[0] in `bits`-bit code, or None when
    `code` is too short to hold it. opcode is the primary opcode byte, 0x0Fxx for the
    two-byte map, and 0x0F38xx/0x0F3Axx (or the VEX/EVEX map) for the three-byte maps."""
    try:
        return _decode(code, bits)
    except IndexError:
        return None


def _decode(code, bits):
    at = 0
    operand16 = bits == 16
    address_bits = bits
    while code[at] in _LEGACY_PREFIXES:
        if code[at] == 0x66:
            operand16 = bits != 16
        elif code[at] == 0x67:
            address_bits = 32 if bits != 32 else 16
        at += 1
        if at >= MAX_LENGTH:
            return None
    rex_w = False
    if bits == 64 and 0x40 <= code[at] <= 0x4F:
        rex_w = bool(code[at] & 8)
        at += 1
    if rex_w:
        operand16 = False
    immz = 2 if operand16 else 4
    opcode = code[at]
    # VEX (C4/C5), EVEX (62) and XOP (8F): outside 64-bit mode only when ModRM.mod would be 11.
    if opcode in (0xC4, 0xC5, 0x62, 0x8F) and (bits == 64 or code[at + 1] >> 6 == 3):
        if opcode != 0x8F or code[at + 1] & 0x1F >= 8:
            return _decode_vex(code, at, address_bits)
    at += 1
    if opcode == 0x0F:
        second = code[at]
        at += 1
        if second in (0x38, 0x3A):
            third = code[at]
            at += 1
            length = at + _modrm_length(code, at, address_bits) + (1 if second == 0x3A else 0)
            return length, (0x0F << 16) | (second << 8) | third
        length = at
        if second not in _NO_MODRM_2:
            length += _modrm_length(code, at, address_bits)
        if second in _IMM8_2:
            length += 1
        elif 0x80 <= second <= 0x8F:
            length += 4 if bits == 64 else immz
        return length, 0x0F00 | second
    length = at
    if opcode in _MODRM_1:
        length += _modrm_length(code, at, address_bits)
    if opcode in _IMM8_1:
        length += 1
    elif opcode in _IMMZ_1:
        length += 4 if bits == 64 and opcode in (0xE8, 0xE9) else immz
    elif 0xB8 <= opcode <= 0xBF:
        length += 8 if rex_w else immz
    elif 0xA0 <= opcode <= 0xA3:
        length += address_bits // 8
    elif opcode in (0xC2, 0xCA):
        length += 2
    elif opcode == 0xC8:
        length += 3
    elif opcode in (0x9A, 0xEA):
        length += immz + 2
    elif opcode in (0xF6, 0xF7) and (code[at] >> 3) & 7 in (0, 1):
        length += 1 if opcode == 0xF6 else immz
    if length > MAX_LENGTH:
        return None
    code[length - 1]  # the instruction must be entirely inside `code`
    return length, opcode


def _decode_vex(code, at, address_bits):
    escape = code[at]
    if escape == 0xC5:
        opcode_map, at = 1, at + 2
    elif escape == 0x62:
        opcode_map, at = code[at + 1] & 7, at + 4
    else:   # C4 (VEX3) or 8F (XOP)
        opcode_map, at = code[at + 1] & 0x1F, at + 3
    opcode = code[at]
    at += 1
    if opcode_map == 1 and opcode == 0x77:   # vzeroupper/vzeroall: no ModRM
        return at, (opcode_map << 8) | opcode
    length = at + _modrm_length(code, at, address_bits)
    if escape == 0x8F:
        length += 4 if opcode_map == 0x0A else (1 if opcode_map == 0x08 else 0)
    elif opcode_map == 3 or (opcode_map == 1 and opcode in (0x70, 0x71, 0x72, 0x73, 0xC2, 0xC4, 0xC5, 0xC6)):
        length += 1
    if length > MAX_LENGTH:
        return None
    code[length - 1]
    return length, (opcode_map << 8) | opcode



_REL8_BRANCHES = frozenset((*range(0x70, 0x80), 0xE0, 0xE1, 0xE2, 0xE3, 0xEB))
_RELATIVE_BRANCHES = frozenset((0xE8, 0xE9, *range(0x0F80, 0x0F90)))


def branches_to_itself(code, opcode, bits):
    """Whether a relative branch (code: the whole instruction) targets its own first byte."""
    if opcode in _REL8_BRANCHES:
        displacement = int.from_bytes(code[-1:], "little", signed=True)
    elif opcode in _RELATIVE_BRANCHES:
        prefixes = code[:len(code) - len(code.lstrip(bytes(_LEGACY_PREFIXES)))]
        size = 4 if bits == 64 or (bits == 32) != (0x66 in prefixes) else 2
        displacement = int.from_bytes(code[-size:], "little", signed=True)
    else:
        return False
    return displacement == -len(code)
