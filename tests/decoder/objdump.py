"""GNU objdump as the oracle for vmm.x86.decoder: run it, read its Intel-syntax lines, and
compare every instruction it reports with the decoder's view of the same bytes.

Where objdump's output is not a statement about one instruction, an explicit rule below
says what is compared instead (each rule is counted, so a report shows how often it fired):

- `(bad)`: objdump knows no instruction there (the CPU raises #UD, or an extension
  binutils lacks). Its length is objdump's guess: not compared; comparison resumes at
  objdump's next line, as objdump's own decoding does. `{bad}` inside a line: objdump
  decodes the length but marks a field invalid: the length is compared, not the operands.
- `.byte`: objdump ran into the end of its input, --stop-address or the next symbol
  inside an instruction. Not compared (nor are bytes the decoder needs past the input).
- prefixes that belong to the next instruction: objdump prints a REX that a legacy prefix
  follows (`rex.W`, `ss rex.XB`) on its own line, with the prefixes before it, and a
  prefix it does not apply (`data16` before 3DNow!); the CPU runs them as prefixes of the
  next instruction (ignoring such a REX). So the
  decoder's length at the line's start must cover the next line too (objdump shows the
  next line's segment without those prefixes: not compared). If those prefixes
  hold a 66, 67, F2 or F3, objdump decodes the next line without them although they can
  change its length (immediate or address size, mandatory prefix): then the length must
  be the ignored REX bytes plus the decoder's length of the same bytes without them.
- FWAIT (9B): objdump treats it as a prefix. It merges `9b d9 38` into one `fstcw`, prints
  `9b f2` as one `repnz fwait`, and shows prefixes before a 9B on the x87 instruction
  after it. The CPU runs [prefixes] 9B as FWAIT, then the next instruction: compared so
  (prefix bytes after the 9B go with the next instruction; the x87 instruction's segment
  is not compared when prefixes preceded the 9B).
- VEX/EVEX after a 66, F2, F3, F0 or REX prefix: the CPU raises #UD (the decoder says
  unknown, with no operands); objdump decodes the instruction and shows the prefix.
  Its length is still compared.
- EVEX.b with a memory operand of an instruction that has no broadcast (#UD): objdump
  prints a BCST operand; the decoder says unknown. The length is still compared.
- EVEX with the W an instruction does not take (its element type fixes it: vaddps is W0
  only): #UD, the decoder says unknown, and knows the same bytes with W flipped; binutils
  decodes it with a broadcast element from W. The length is still compared.
- encodings the CPU rejects (#UD) that binutils 2.40 decodes, listed in ACCEPTED_UD by
  opcode with the reason (EVEX pp ignored for a few opcodes, memory forms of
  register-only instructions...): where the decoder says unknown for one of those
  opcodes, the length is compared, not the operands.
- memory operand sizes: objdump prints a keyword for forms that access no memory or an
  amount the encoding does not fix (`nop DWORD PTR`, `prefetcht0 BYTE PTR`, `ud1`...);
  the decoder reports None for them by design (NO_ACCESS lists those mnemonics).
- moffs (mov/movabs with A0-A3): objdump prints no keyword; the size is that of the
  register operand (al, ax, eax, rax).
- forms objdump prints without a keyword (lgdt, fxsave, fldenv, invpcid...): compared with
  UNPRINTED_SIZES, the sizes the SDM gives them, where listed; counted otherwise.
- far pointers with REX.W on Intel (`jmp`/`call` far indirect, `lss`/`lfs`/`lgs`):
  the SDM's m16:64 is 10 bytes; binutils 2.40 prints FWORD.
- xlat: objdump shows DS:[rBX]; the decoder's operand also holds the AL index.
- branch targets: objdump prints 16-bit code's targets without the 16-bit wrap; compared
  modulo the operand size.
- `pop` to an rSP-based address: the CPU computes the address after the pop (SDM POP),
  so the decoder's displacement includes the slot objdump does not show.
"""
import dataclasses
import re
import shutil
import subprocess

from vmm.x86.decoder import MAX_LENGTH, RSP, decode

OBJDUMP = shutil.which("objdump")
MACHINES = {16: "i8086", 32: "i386", 64: "i386:x86-64"}
_LINE = re.compile(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)$")
_KEYWORD_SIZES = {"BYTE": 1, "WORD": 2, "DWORD": 4, "FWORD": 6, "QWORD": 8, "TBYTE": 10, "OWORD": 16,
                  "XMMWORD": 16, "YMMWORD": 32, "ZMMWORD": 64}
_MEMORY = re.compile(r"(?:(" + "|".join(_KEYWORD_SIZES) + r") (PTR|BCST) )?(?:([c-gs]s):)?"
                     r"(\[[^\]]*\]|(?<=s:)0x[0-9a-f]+)")
_PREFIXES = frozenset(("data16", "data32", "addr16", "addr32", "lock", "rep", "repz", "repnz", "repe", "repne",
                       "cs", "ds", "es", "fs", "gs", "ss", "bnd", "notrack", "xacquire", "xrelease",
                       "{vex}", "{vex3}", "{evex}"))
_GPR_NAMES = {}
for _number, _name in enumerate(("ax", "bx", "cx", "dx", "si", "di", "sp", "bp")):
    _GPR_NAMES.update({"r" + _name: _number, "e" + _name: _number, _name: _number})
for _number in range(8, 16):
    _GPR_NAMES.update({f"r{_number}{suffix}": _number for suffix in ("", "d", "w", "b")})
_VECTOR = re.compile(r"^[xyz]mm(\d+)$")
# Mnemonics whose memory operand the decoder reports with size None by design (see above).
NO_ACCESS = frozenset(("nop", "prefetch", "prefetchw", "prefetchwt1", "prefetchnta", "prefetcht0", "prefetcht1",
                       "prefetcht2", "prefetchit0", "prefetchit1", "clflush", "clflushopt", "clwb", "cldemote",
                       "ud0", "ud1", "bndcl", "bndcu", "bndcn", "bndmk", "bndldx", "bndstx", "invlpg",
                       "vgatherpf0dps", "vgatherpf0dpd", "vgatherpf0qps", "vgatherpf0qpd", "vgatherpf1dps",
                       "vgatherpf1dpd", "vgatherpf1qps", "vgatherpf1qpd", "vscatterpf0dps", "vscatterpf0dpd",
                       "vscatterpf0qps", "vscatterpf0qpd", "vscatterpf1dps", "vscatterpf1dpd", "vscatterpf1qps",
                       "vscatterpf1qpd"))
# Sizes of memory operands objdump prints without a keyword, from the SDM: {mnemonic: {bits: size}}.
UNPRINTED_SIZES = {
    **{name: {16: 6, 32: 6, 64: 10} for name in ("lgdt", "lidt", "sgdt", "sidt", "lgdtw", "lidtw", "sgdtw",
                                                 "sidtw", "lgdtd", "lidtd", "sgdtd", "sidtd")},
    **{name: {16: 14, 32: 28, 64: 28} for name in ("fldenv", "fnstenv")},
    **{name: {16: 94, 32: 108, 64: 108} for name in ("frstor", "fnsave")},
    **{name: {16: 512, 32: 512, 64: 512} for name in ("fxsave", "fxrstor", "fxsave64", "fxrstor64")},
    **{name: {16: 16, 32: 16, 64: 16} for name in ("invpcid", "invept", "invvpid", "lddqu")},
    **{name: {32: 48, 64: 48} for name in ("aesenc128kl", "aesdec128kl", "aesencwide128kl", "aesdecwide128kl")},
    **{name: {32: 64, 64: 64} for name in ("aesenc256kl", "aesdec256kl", "aesencwide256kl", "aesdecwide256kl",
                                          "movdir64b", "enqcmd", "enqcmds", "ldtilecfg", "sttilecfg")},
    **{name: {32: 4, 64: 4} for name in ("wrssd", "wrussd")},
}
# Encodings binutils 2.40 decodes that the CPU rejects, by (encoding, the decoder's opcode).
ACCEPTED_UD = {
    ("evex", 0x24E): "vrsqrt14ps/pd: binutils ignores pp (66 only)",
    ("evex", 0x342): "vdbpsadbw: binutils ignores pp (66 only)",
    ("evex", 0x370): "vpshldw: binutils ignores pp (66 only)",
    ("evex", 0x372): "vpshrdw: binutils ignores pp (66 only)",
    ("evex", 0x229): "vpmovb2m/vpmovw2m: register only, binutils accepts memory",
    ("evex", 0x239): "vpmovd2m/vpmovq2m: register only, binutils accepts memory",
    ("evex", 0x22A): "vmovntdqa: memory only, binutils accepts a register",
    ("evex", 0x1E7): "vmovntdq: memory only, binutils accepts a register",
    ("vex", 0x177): "vzeroupper/vzeroall: binutils ignores pp (NP only)",
    ("vex", 0x249): "ldtilecfg/sttilecfg: binutils ignores ModRM.reg (/0 only)",
}
_REGISTER_BYTES = {"al": 1, "ax": 2, "eax": 4, "rax": 8}
_FAR_POINTER_LOADS = frozenset(("jmp", "call", "lfs", "lgs", "lss"))
# Opcodes whose implicit DS:rSI / ES:rDI / DS:[rBX+AL] operands objdump prints.
_SHOWN_IMPLICIT = frozenset((0x6C, 0x6D, 0x6E, 0x6F, 0xA4, 0xA5, 0xA6, 0xA7, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF,
                             0xD7))
_LEGACY_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))
# Prefixes that change an instruction's length or operands, which objdump does not carry
# over from a line it printed them on to the next instruction.
_DROPPED = frozenset((0x66, 0x67, 0xF2, 0xF3))
_BRANCH = re.compile(r"^(\S+)\s+(?:0x)?([0-9a-f]+)(?:\s+<[^>]*>)?$")


@dataclasses.dataclass(slots=True)
class Line:
    address: int
    raw: bytes
    text: str


def objdump_options(bits, vendor, syntax="intel"):
    options = [syntax] if syntax else []
    if bits == 64:
        options.append("intel64" if vendor == "intel" else "amd64")
    return ",".join(options)


def disassemble(path, bits, vendor, syntax="intel", binary=False, section=None, start=None, stop=None):
    """objdump's lines for the file at `path` (raw bytes with `binary`, else an object file)."""
    command = [OBJDUMP, "-z", "--insn-width=15", "-m", MACHINES[bits]]
    options = objdump_options(bits, vendor, syntax)
    if options:
        command += ["-M", options]
    if binary:
        command += ["-D", "-b", "binary"]
    else:
        command += ["-d"]
    if section:
        command += ["-j", section]
    if start is not None:
        command += [f"--start-address={start:#x}", f"--stop-address={stop:#x}"]
    output = subprocess.run(command + [str(path)], capture_output=True, text=True, check=True).stdout
    lines = []
    for text in output.splitlines():
        match = _LINE.match(text)
        if match:
            lines.append(Line(int(match[1], 16), bytes.fromhex(match[2].replace(" ", "")), match[3].strip()))
    return lines


def section_bytes(path, name):
    """(virtual address, bytes) of a section, located with objdump -h."""
    output = subprocess.run([OBJDUMP, "-h", str(path)], capture_output=True, text=True, check=True).stdout
    for text in output.splitlines():
        fields = text.split()
        if len(fields) >= 6 and fields[1] == name:
            size, address, offset = int(fields[2], 16), int(fields[3], 16), int(fields[5], 16)
            with open(path, "rb") as file:
                file.seek(offset)
                return address, file.read(size)
    raise LookupError(f"{path} has no section {name}")


def _tokens(text):
    return text.split("#")[0].split()


def mnemonic(text):
    for token in _tokens(text):
        if token not in _PREFIXES and not token.startswith("rex"):
            return token
    return None


def _operands_text(text):
    tokens = _tokens(text)
    for position, token in enumerate(tokens):
        if token not in _PREFIXES and not token.startswith("rex"):
            return " ".join(tokens[position + 1:])
    return ""


def _is_prefix_line(line, bits):
    tokens = _tokens(line.text)
    return (bool(tokens) and _all_prefixes(line.raw, bits)
            and all(token in _PREFIXES or token.startswith("rex") for token in tokens))


@dataclasses.dataclass(slots=True)
class ShownOperand:
    size: int | None
    broadcast: bool
    segment: str | None
    base: int | None = None
    index: int | None = None
    scale: int = 1
    displacement: int = 0
    rip_relative: bool = False
    vsib: bool = False


def memory_operands(text):
    """The memory operands objdump prints in an Intel-syntax line."""
    operands = []
    if "[" not in text and "s:0x" not in text:
        return operands
    for match in _MEMORY.finditer(_operands_text(text)):
        keyword, kind, segment, body = match.groups()
        operand = ShownOperand(_KEYWORD_SIZES.get(keyword), kind == "BCST", segment)
        if not body.startswith("["):
            operand.displacement = int(body, 16)
        else:
            for sign, term in re.findall(r"([+-]?)([^+-]+)", body[1:-1]):
                if term.startswith("0x"):
                    operand.displacement += -int(term, 16) if sign == "-" else int(term, 16)
                elif "*" in term:
                    register, scale = term.split("*")
                    operand.scale = int(scale)
                    vector = _VECTOR.match(register)
                    if vector:
                        operand.index, operand.vsib = int(vector[1]), True
                    elif register not in ("riz", "eiz"):
                        operand.index = _GPR_NAMES[register]
                elif term in ("rip", "eip"):
                    operand.rip_relative = True
                elif operand.base is None:
                    operand.base = _GPR_NAMES[term]
                else:                                    # 16-bit forms: [bx+si]
                    operand.index = _GPR_NAMES[term]
        operands.append(operand)
    return operands


class Comparison:
    """Counts and disagreements of the decoder against objdump over some lines."""

    def __init__(self, name, bits, vendor, limit=20):
        self.name, self.bits, self.vendor, self.limit = name, bits, vendor, limit
        self.counts = {}
        self.disagreements = []
        self._code_at = None

    def count(self, what, by=1):
        self.counts[what] = self.counts.get(what, 0) + by

    def disagree(self, line, what):
        self.count("disagreements")
        if len(self.disagreements) < self.limit:
            self.disagreements.append(f"{self.name} ({self.bits}-bit {self.vendor}) at {line.address:#x} "
                                      f"{line.raw.hex(' ')} `{line.text}`: {what}")

    def summary(self):
        return f"{self.name} ({self.bits}-bit {self.vendor}): " + ", ".join(
            f"{what} {number}" for what, number in sorted(self.counts.items()))

    def compare(self, lines, code_at, memory=True):
        """Compare every line; `code_at(address)` gives the bytes from there (15 or fewer)."""
        self._code_at = code_at
        carry = b""                              # prefixes objdump printed that belong to the next instruction
        for line in lines:
            if "(bad)" in line.text or line.text.startswith(".byte"):
                self._skip_bad(line)
                carry = b""
                continue
            start = line.address - len(carry)
            raw = carry + line.raw
            fwait = _fwait_end(raw, self.bits) if 0x9B in raw else None
            if fwait is not None:
                # The CPU: [prefixes] 9B is FWAIT; what follows on objdump's line is either more
                # prefixes (for the next instruction) or the x87 instruction objdump merged in.
                self.count("FWAIT split from objdump's line")
                self._one(start, raw[:fwait], "fwait", False)
                rest = raw[fwait:]
                if _all_prefixes(rest, self.bits):
                    carry = rest
                else:
                    self._one(start + fwait, rest, line.text, memory, segment_shown=fwait == 1)
                    carry = b""
                continue
            if _is_prefix(raw[-1], self.bits) and _is_prefix_line(line, self.bits):
                self.count("prefix line carried to the next instruction")
                carry = raw
                continue
            if carry and any(byte in carry for byte in _DROPPED):
                self._dropped_prefixes(start, carry, line)
            else:
                if carry:
                    self.count("prefix line merged into the next instruction")
                self._one(start, raw, line.text, memory, segment_shown=not carry)
            carry = b""

    def _skip_bad(self, line):
        if line.text.startswith(".byte"):
            # objdump ran into the end of its input, --stop-address or the next symbol.
            self.count("skipped: objdump stopped inside an instruction")
            return
        self.count("skipped (bad)")
        insn = decode(self._code_at(line.address), self.bits, self.vendor)
        if insn is not None and insn.known:
            self.count("(bad) that the decoder knows")

    def _dropped_prefixes(self, start, carry, line):
        """objdump decoded `line` without the 66/67/F2/F3 in `carry`: the length must be the
        ignored REX bytes plus the decoder's length without them."""
        self.count("prefix line with a prefix objdump drops")
        code = self._code_at(start)
        insn = decode(code, self.bits, self.vendor)
        rex = sum(1 for byte in carry if self.bits == 64 and byte & 0xF0 == 0x40)
        without_rex = bytes(byte for byte in carry if not (self.bits == 64 and byte & 0xF0 == 0x40))
        rest = decode(without_rex + code[len(carry):], self.bits, self.vendor)
        self.count("instructions")
        expected = rest and rest.length + rex
        if insn is None or insn.length != expected:
            self.disagree(line, f"length {insn and insn.length}, expected {expected} (with the prefixes before it)")

    def _one(self, start, raw, text, memory, segment_shown=True):
        line = Line(start, raw, text)
        code = self._code_at(start)
        insn = decode(code, self.bits, self.vendor)
        if insn is None and len(code) < MAX_LENGTH:
            self.count("skipped: the input ends inside the instruction")
            return
        self.count("instructions")
        if insn is None or insn.length != len(raw):
            self.disagree(line, f"length {insn and insn.length}, objdump {len(raw)}")
            return
        if memory and "{bad}" in text:
            self.count("skipped operands: objdump marks a field {bad}")
            return
        if memory and not insn.known and insn.encoding.value != "legacy":
            if insn.rex or insn.operand_size_prefix or insn.repeat or insn.lock:
                self.count("skipped operands: VEX/EVEX after a prefix (#UD)")
                return
            if "BCST" in text:
                self.count("skipped operands: broadcast without one (#UD)")
                return
            if (insn.encoding.value, insn.opcode) in ACCEPTED_UD:
                self.count("skipped operands: objdump accepts a #UD encoding")
                return
            if insn.encoding.value == "evex" and _known_with_other_w(self._code_at(start), self.bits, self.vendor):
                self.count("skipped operands: EVEX.W the instruction does not take (#UD)")
                return
        if memory:
            self._memory(line, insn, segment_shown)
            self._branch(line, insn)

    def _memory(self, line, insn, segment_shown):
        shown = memory_operands(line.text)
        ours = [operand for operand in insn.memory
                if not operand.implicit or (insn.encoding.value == "legacy" and insn.opcode in _SHOWN_IMPLICIT)]
        if len(shown) != len(ours):
            self.disagree(line, f"{len(ours)} memory operands, objdump shows {len(shown)}")
            return
        name = mnemonic(line.text)
        for theirs, mine in zip(shown, ours):
            self.count("memory operands")
            self._size(line, insn, name, theirs, mine)
            self._address(line, insn, name, theirs, mine, segment_shown)

    def _size(self, line, insn, name, theirs, mine):
        if theirs.size is None and name in ("mov", "movabs") and not mine.implicit and mine.base is None \
                and mine.index is None and not mine.rip_relative:
            registers = [token for token in re.split("[ ,]", _operands_text(line.text)) if token in _REGISTER_BYTES]
            if registers:
                self.count("moffs sizes from the register")
                theirs = dataclasses.replace(theirs, size=_REGISTER_BYTES[registers[0]])
        if theirs.size is None and name in UNPRINTED_SIZES and self.bits in UNPRINTED_SIZES[name]:
            self.count("sizes objdump does not print, from the SDM")
            theirs = dataclasses.replace(theirs, size=UNPRINTED_SIZES[name][self.bits])
        if theirs.size is None:
            self.count("sizes objdump does not print")
            return
        if mine.size is None and name in NO_ACCESS:
            self.count("skipped size of a no-access form")
            return
        if (mine.size == 10 and theirs.size == 6 and self.vendor == "intel" and insn.w
                and name in _FAR_POINTER_LOADS):
            self.count("REX.W far pointer m16:64")
            return
        self.count("sizes compared")
        if mine.size != theirs.size:
            self.disagree(line, f"size {mine.size}, objdump {theirs.size}")

    def _address(self, line, insn, name, theirs, mine, segment_shown):
        displacement = mine.displacement
        if name == "pop" and mine.base == RSP and not mine.implicit:
            self.count("pop rSP-based address")
            displacement -= insn.operand_bits // 8
        if name == "xlat":
            self.count("xlat without AL")
            mine = dataclasses.replace(mine, index=None)
        mask = (1 << mine.address_bits) - 1
        ours = (mine.base, mine.index if mine.index is not None else None, mine.scale if mine.index is not None else 1,
                mine.rip_relative, mine.vsib)
        expected = (theirs.base, theirs.index, theirs.scale if theirs.index is not None else 1, theirs.rip_relative,
                    theirs.vsib)
        self.count("addresses compared")
        if ours != expected or (displacement - theirs.displacement) & mask:
            self.disagree(line, f"address (base, index, scale, rip, vsib) {ours} + {displacement:#x}, "
                                f"objdump {expected} + {theirs.displacement:#x}")
        if theirs.segment is not None and not segment_shown:
            self.count("skipped segment: objdump applies a prefix of another line")
        elif theirs.segment is not None:
            self.count("segments compared")
            if theirs.segment != mine.segment:
                self.disagree(line, f"segment {mine.segment}, objdump {theirs.segment}")

    def _branch(self, line, insn):
        if insn.relative is None:
            return
        match = _BRANCH.match(" ".join(_tokens(line.text)[_tokens(line.text).index(mnemonic(line.text)):]))
        if not match:
            return
        self.count("branch targets compared")
        target = insn.branch_target(line.address)
        if (target - int(match[2], 16)) & ((1 << insn.operand_bits) - 1):
            self.disagree(line, f"branch target {target:#x}, objdump {match[2]}")


def _known_with_other_w(code, bits, vendor):
    """Whether the EVEX instruction at the start of `code` is known with EVEX.W flipped."""
    at = next(position for position, byte in enumerate(code) if byte == 0x62)
    flipped = bytearray(code)
    flipped[at + 2] ^= 0x80
    insn = decode(bytes(flipped), bits, vendor)
    return insn is not None and insn.known


def _is_prefix(byte, bits):
    return byte in _LEGACY_PREFIXES or (bits == 64 and byte & 0xF0 == 0x40)


def _all_prefixes(raw, bits):
    return all(_is_prefix(byte, bits) for byte in raw)


def _fwait_end(raw, bits):
    """Where `raw` holds an FWAIT (9B) after nothing but prefixes: the length up to and
    including it (the CPU's whole FWAIT instruction), else None."""
    for position, byte in enumerate(raw):
        if byte == 0x9B:
            return position + 1
        if not _is_prefix(byte, bits):
            return None
    return None
