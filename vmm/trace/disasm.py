"""Disassembly with GNU objdump, batched and cached by instruction bytes.

A trace repeats the same few thousand instructions, so each distinct (code size, bytes) is
disassembled once: the distinct instructions not yet known are laid out in one flat binary,
each at the start of its own 32-byte slot padded with NOPs, and one objdump run decodes them
all. Whatever objdump makes of bytes it reads differently (at most 15 from a slot's start),
it is back in step at the next slot. Addresses objdump computes relative to the slot (branch
targets, RIP-relative operands) are kept as offsets from the instruction, so the cached text
serves the same bytes at any address.

A trace's reader asks a Lookahead, which gathers the distinct instructions ahead of it in
the file, so that a long trace costs a handful of objdump runs and no memory but the cache.
"""
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass

from .format import SYNTAXES

SLOT = 32
BATCH = 4096                 # distinct instructions per objdump run at most
LOOKAHEAD_LINES = 1 << 20    # how far ahead of the reader distinct instructions are gathered
LOOKAHEAD_BLOCK = 1 << 18    # bytes read ahead at a time
MAX_CACHED = 1 << 16         # a trace of ever-new code only makes the cache start over
_ARCHITECTURES = {16: "i8086", 32: "i386", 64: "i386:x86-64"}
_MASKS = {16: 0xFFFF, 32: 0xFFFFFFFF, 64: (1 << 64) - 1}
_LINE = re.compile(r"^ *([0-9a-f]+):\t(.*?)\s*$")
_RELATIVE_BRANCH = re.compile(r"^(j[a-z]*|call[a-z]*|loop[a-z]*|xbegin[a-z]*)$")
_BARE_ADDRESS = re.compile(r"^0x[0-9a-f]+$")
_COMMENT_ADDRESS = re.compile(r"(# )(0x[0-9a-f]+)$")
# In the lines read ahead: an event's code size, or an instruction's bytes.
_SCAN = re.compile(rb'"bits":(16|32|64)[,}]|"bytes":"((?:[0-9a-f]{2}){1,15})"')
_PREFIXES = frozenset(("rep", "repz", "repnz", "repe", "repne", "lock", "data16", "data32", "addr16", "addr32",
                       "cs", "ds", "es", "fs", "gs", "ss", "bnd", "notrack", "xacquire", "xrelease"))


@dataclass(slots=True, frozen=True)
class Instruction:
    """What objdump says of some instruction bytes: the text split around the addresses it
    computed (`pieces`, one more than `targets`), each address as an offset from the
    instruction's own address, and objdump's length when it differs from the bytes given."""

    mnemonic: str
    pieces: tuple
    targets: tuple = ()
    length: int | None = None

    def text(self, rip, bits, symbolize=None):
        """The instruction at rip as text; symbolize(address) -> 'name+0x10' or None."""
        if not self.targets:
            text = self.pieces[0]
        else:
            parts = [self.pieces[0]]
            for offset, piece in zip(self.targets, self.pieces[1:]):
                address = (rip + offset) & _MASKS[bits]
                name = symbolize(address) if symbolize else None
                parts.append(f"{address:#x} <{name}>" if name else f"{address:#x}")
                parts.append(piece)
            text = "".join(parts)
        if self.length is not None:
            text += f"  (objdump reads {self.length} of the bytes)"
        return text


UNAVAILABLE = Instruction("", ("",))


def mnemonic_of(text):
    """The mnemonic in objdump's text: its first word that is not a prefix."""
    words = text.split()
    for word in words:
        if word not in _PREFIXES and not word.startswith(("rex", "{")):
            return word
    return words[-1] if words else ""


def _parse(text, slot_offset, bits):
    """An Instruction from objdump's text for the instruction at slot_offset."""
    mnemonic = mnemonic_of(text)
    pieces, targets = [], []
    words = text.split(None, 1)
    head = text
    if _RELATIVE_BRANCH.match(mnemonic) and words:
        operand = text.rsplit(None, 1)[-1]
        if _BARE_ADDRESS.match(operand) and operand != words[0]:
            head = text[:len(text) - len(operand)]
            targets.append((int(operand, 16) - slot_offset) & _MASKS[bits])
            pieces.append(head)
            head = ""
    comment = _COMMENT_ADDRESS.search(head)
    if comment and not targets:
        pieces.append(head[:comment.start(2)])
        targets.append((int(comment.group(2), 16) - slot_offset) & _MASKS[bits])
        head = ""
    pieces.append(head)
    return Instruction(mnemonic, tuple(pieces), tuple(targets))


class Disassembler:
    """Disassembles instruction bytes with objdump, in `syntax` (att or intel), for a CPU of
    `vendor` (intel, amd...: decides how 64-bit code's vendor-specific encodings read).
    `problem` says why there is no disassembly (no objdump, or it failed), else None."""

    def __init__(self, syntax="att", vendor=None, objdump=None):
        if syntax not in SYNTAXES:
            raise ValueError(f"unknown syntax {syntax!r}")
        self.syntax = syntax
        self.vendor = vendor
        self.objdump = objdump or os.environ.get("OBJDUMP", "objdump")
        self.runs = 0
        self.problem = None if shutil.which(self.objdump) else (
            f"{self.objdump} (GNU binutils) not found: no disassembly")
        self._cache = {}

    def known(self, bits, code):
        return self._cache.get((bits, code))

    def resolve(self, keys):
        """{(bits, code): Instruction} for the keys, running objdump for those not cached."""
        found = {key: self._cache[key] for key in keys if key in self._cache}
        missing = [key for key in keys if key not in found]
        if len(self._cache) + len(missing) > MAX_CACHED:
            self._cache.clear()
        by_bits = {}
        for bits, code in missing:
            by_bits.setdefault(bits, []).append(code)
        for bits, codes in by_bits.items():
            for start in range(0, len(codes), BATCH):
                batch = codes[start:start + BATCH]
                for code, instruction in zip(batch, self._disassemble(bits, batch)):
                    found[(bits, code)] = self._cache[(bits, code)] = instruction
        return found

    def _options(self, bits):
        options = ["intel"] if self.syntax == "intel" else []
        if bits == 64 and self.vendor in ("intel", "amd"):
            options.append("intel64" if self.vendor == "intel" else "amd64")
        return ["-M", ",".join(options)] if options else []

    def _disassemble(self, bits, codes):
        """One objdump run over the codes (each at most 15 bytes): an Instruction for each."""
        if self.problem is not None:
            return [UNAVAILABLE] * len(codes)
        with tempfile.NamedTemporaryFile(prefix="vmm-disasm-", suffix=".bin") as blob:
            blob.write(b"".join(code[:SLOT // 2].ljust(SLOT, b"\x90") for code in codes))
            blob.flush()
            command = [self.objdump, "-D", "-b", "binary", "-m", _ARCHITECTURES[bits], "-z",
                       "--no-show-raw-insn", *self._options(bits), blob.name]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as error:
                self.problem = f"{self.objdump} failed ({error}): no disassembly"
                return [UNAVAILABLE] * len(codes)
        self.runs += 1
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
            self.problem = f"{self.objdump} failed: {reason}: no disassembly"
            return [UNAVAILABLE] * len(codes)
        lines = {}
        order = []
        for line in result.stdout.splitlines():
            match = _LINE.match(line)
            if match:
                offset = int(match.group(1), 16)
                lines[offset] = match.group(2)
                order.append(offset)
        following = dict(zip(order, order[1:]))
        instructions = []
        for index, code in enumerate(codes):
            offset = index * SLOT
            text = lines.get(offset)
            if text is None:
                instructions.append(Instruction("(bad)", ("(bad)",)))
                continue
            instruction = _parse(text, offset, bits)
            length = following.get(offset, offset + SLOT) - offset
            if length != len(code):
                instruction = Instruction(instruction.mnemonic, instruction.pieces, instruction.targets, length)
            instructions.append(instruction)
        return instructions


class Lookahead:
    """Disassembly for a trace file's reader, gathered ahead of it: when the reader meets bytes
    not yet disassembled, a second, light reading of the file from where that one stopped
    (by pattern, a block at a time, nothing checked: the reader does that) collects the
    distinct instructions coming next, up to a batch or `reach` lines past the reader, for
    one objdump run."""

    def __init__(self, path, disassembler, reach=LOOKAHEAD_LINES):
        self.disassembler = disassembler
        self._reach = reach
        self._line = 0           # lines read ahead so far
        self._bits = None        # of the last event read ahead
        self._rest = b""         # a block's last, unfinished line
        self._seen = set()       # (bits, hex bytes) looked at
        self._file = None        # a pipe cannot be read twice: then each instruction on its own
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                self._file = open(path, "rb")
        except OSError:
            pass

    def instruction(self, bits, code, line):
        """The Instruction of code in bits-bit code, met at `line` of the file."""
        known = self.disassembler.known(bits, code)
        if known is not None:
            return known
        wanted = {(bits, code): None}
        if self._file is not None:
            self._gather(line + self._reach, wanted)
        return self.disassembler.resolve(list(wanted))[(bits, code)]

    def _gather(self, limit, wanted):
        known, seen = self.disassembler.known, self._seen
        if len(seen) > MAX_CACHED:
            seen.clear()
        while self._line < limit and len(wanted) < BATCH:
            block = self._file.read(LOOKAHEAD_BLOCK)
            if not block:
                self._file.close()
                self._file = None
                return
            block = self._rest + block
            end = block.rfind(b"\n") + 1
            block, self._rest = block[:end], block[end:]
            self._line += block.count(b"\n")
            for found in _SCAN.finditer(block):
                bits, code = found.groups()
                if bits is not None:
                    self._bits = int(bits)
                elif self._bits is not None and (self._bits, code) not in seen:
                    seen.add((self._bits, code))
                    key = (self._bits, bytes.fromhex(code.decode()))
                    if known(*key) is None:
                        wanted[key] = None

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
