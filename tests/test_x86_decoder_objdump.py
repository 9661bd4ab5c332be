"""The x86 decoder against GNU objdump (binutils), instruction by instruction: the host's
libc .text (and a sample of libcrypto's), instruction sets generated for 16-, 32- and
64-bit code (assembled with GNU as, whose listing is a second oracle for lengths), and
random bytes in every mode, with `-M intel64` and `-M amd64` in 64-bit mode.

Compared at every instruction start objdump reports: the length; with `-M intel`, the
memory operands (how many, the size keyword, base, index, scale, displacement, RIP-relative,
segment) and relative branch targets. What objdump prints that is not a statement about one
instruction is handled by the explicit rules in decoder/objdump.py, each counted in the
summary line a test prints.

Also swept: every opcode of every map under each mandatory prefix, W, vector length and
broadcast, with a memory and a register ModRM.

Sized to take about 25 s of CPU here; VMM_DECODER_FULL=1 compares all of libcrypto, ten
times more random bytes and the sweep in every mode.
"""
import os
import pathlib
import random
import shutil

import pytest

from decoder.forms import assemble, generate, opcode_sweep
from decoder.objdump import OBJDUMP, Comparison, disassemble, section_bytes
from vmm.x86.decoder import MAX_LENGTH, decode

pytestmark = pytest.mark.skipif(OBJDUMP is None, reason="needs GNU objdump (binutils) as the oracle")
FULL = os.environ.get("VMM_DECODER_FULL") == "1"
MODES = [(16, "intel"), (32, "intel"), (64, "intel"), (64, "amd")]
# Enough random bytes for more than 100,000 instruction starts in every mode.
RANDOM_BYTES = 3_300_000 if FULL else 330_000
LIBCRYPTO_WINDOWS = 4                                   # 64 KiB windows spread over .text, unless FULL
LIBCRYPTO_WINDOW = 0x10000


def _library(*names):
    for directory in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64"):
        for name in names:
            path = pathlib.Path(directory) / name
            if path.exists():
                return path
    return None


LIBC = _library("libc.so.6")
LIBCRYPTO = _library("libcrypto.so.3", "libcrypto.so.1.1")


def _check(comparison, minimum):
    print(comparison.summary())
    assert comparison.counts.get("instructions", 0) >= minimum, (
        f"expected at least {minimum} instructions compared, got {comparison.summary()}")
    assert not comparison.disagreements, (
        f"expected no disagreement with objdump, got {comparison.counts['disagreements']}:\n"
        + "\n".join(comparison.disagreements))


def _compare_section(path, start=None, stop=None):
    address, data = section_bytes(path, ".text")
    comparison = Comparison(path.name if start is None else f"{path.name} {start:#x}-{stop:#x}", 64, "intel")
    lines = disassemble(path, 64, "intel", section=".text", start=start, stop=stop)
    if stop is not None:
        # Where --stop-address cuts an instruction, objdump prints its bytes as they come.
        lines = [line for line in lines if line.address + MAX_LENGTH <= stop]
    comparison.compare(lines, lambda at: data[at - address:at - address + MAX_LENGTH])
    return comparison, len(data)


@pytest.mark.skipif(LIBC is None, reason="no libc.so.6 on this host")
def test_libc_text_agrees_with_objdump():
    comparison, size = _compare_section(LIBC)
    _check(comparison, size // 8)
    assert comparison.counts["sizes compared"] > comparison.counts["instructions"] // 5, comparison.summary()


@pytest.mark.skipif(LIBCRYPTO is None, reason="no libcrypto on this host")
def test_libcrypto_text_agrees_with_objdump():
    address, data = section_bytes(LIBCRYPTO, ".text")
    windows = [None] if FULL else [address + len(data) * part // LIBCRYPTO_WINDOWS
                                   for part in range(LIBCRYPTO_WINDOWS)]
    for start in windows:
        if start is None:
            comparison, _ = _compare_section(LIBCRYPTO)
        else:
            comparison, _ = _compare_section(LIBCRYPTO, start, start + LIBCRYPTO_WINDOW)
        _check(comparison, LIBCRYPTO_WINDOW // 8)


@pytest.mark.parametrize("bits, vendor", MODES)
def test_random_bytes_agree_with_objdump(bits, vendor, tmp_path):
    data = random.Random(f"x86 decoder, {bits}-bit").randbytes(RANDOM_BYTES)
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    lines = disassemble(path, bits, vendor, binary=True)
    assert len(lines) > 100_000, f"expected more than 100,000 instruction starts, objdump gave {len(lines)}"
    comparison = Comparison("random bytes", bits, vendor)
    comparison.compare(lines, lambda at: data[at:at + MAX_LENGTH])
    _check(comparison, 80_000)


@pytest.fixture(scope="module")
def assembled(tmp_path_factory):
    if shutil.which("as") is None:
        pytest.skip("needs the GNU assembler (binutils) to build the instruction sets")
    directory = tmp_path_factory.mktemp("x86-forms")
    return {bits: assemble(generate(bits), directory, f"forms{bits}") for bits in (16, 32, 64)}


@pytest.mark.parametrize("bits, vendor", MODES)
def test_generated_instruction_sets_agree_with_objdump(bits, vendor, assembled):
    path, rows = assembled[bits]
    address, data = section_bytes(path, ".text")
    comparison = Comparison("generated forms", bits, vendor)
    comparison.compare(disassemble(path, bits, vendor), lambda at: data[at - address:at - address + MAX_LENGTH])
    _check(comparison, len(rows))
    assert comparison.counts["sizes compared"] > 2000, comparison.summary()
    assert comparison.counts["addresses compared"] > 2000, comparison.summary()


@pytest.mark.parametrize("bits", (16, 32, 64))
def test_generated_instruction_lengths_agree_with_the_assembler(bits, assembled):
    """Decoding each source line's bytes one instruction after another ends exactly at the
    end of the line (FWAIT-prefixed forms such as fstsw are two instructions)."""
    _, rows = assembled[bits]
    wrong = []
    for address, code, text in rows:
        position = 0
        while position < len(code):
            insn = decode(code[position:], bits)
            if insn is None:
                break
            position += insn.length
        if position != len(code):
            wrong.append(f"{address:#x} `{text}` {code.hex(' ')}: decoding stops at {position}, expected {len(code)}")
    assert len(rows) > 3000, f"expected more than 3000 assembled lines, got {len(rows)}"
    assert not wrong, f"expected every line's instructions to end at the line's end, got:\n" + "\n".join(wrong[:20])


SWEEP_MODES = MODES if FULL else [(64, "intel")]


@pytest.mark.parametrize("bits, vendor", SWEEP_MODES)
def test_opcode_space_sweep_agrees_with_objdump(bits, vendor, tmp_path):
    if shutil.which("as") is None:
        pytest.skip("needs the GNU assembler (binutils) to label the swept encodings")
    path, _ = assemble(opcode_sweep(bits), tmp_path, "sweep", listing=False)
    address, data = section_bytes(path, ".text")
    comparison = Comparison("opcode sweep", bits, vendor)
    comparison.compare(disassemble(path, bits, vendor), lambda at: data[at - address:at - address + MAX_LENGTH])
    _check(comparison, 100_000)
    assert comparison.counts["sizes compared"] > 100_000, comparison.summary()
