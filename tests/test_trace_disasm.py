"""Disassembly with objdump: the text at the instruction's own address, every CPU mode, the
vendor's reading of 64-bit code, batches and the cache, so that a long trace costs a handful
of objdump runs; and symbol+offset names."""
import pytest

from trace_samples import HEADER, PAGE, event
from vmm.trace import disasm
from vmm.trace.disasm import Disassembler, Lookahead, mnemonic_of
from vmm.trace.reader import Insn, TraceReader
from vmm.trace.symbols import SymbolTable
from vmm.trace.writer import TraceWriter
from vmm.v2e.events import Decision

pytestmark = pytest.mark.skipif(Disassembler().problem is not None, reason="needs GNU objdump (binutils)")


def text(code, rip, bits=64, syntax="att", vendor="amd", symbols=None):
    disassembler = Disassembler(syntax, vendor)
    instruction = disassembler.resolve([(bits, bytes.fromhex(code))])[(bits, bytes.fromhex(code))]
    return " ".join(instruction.text(rip, bits, symbols).split())


@pytest.mark.parametrize("code, rip, bits, syntax, expected", [
    ("75fc", 0x200007, 64, "att", "jne 0x200005"),
    ("e8fbffffff", 0xFFFFFFFF81000000, 64, "att", "call 0xffffffff81000000"),
    ("488b0510000000", 0x401000, 64, "att", "mov 0x10(%rip),%rax # 0x401017"),
    ("488b0510000000", 0x401000, 64, "intel", "mov rax,QWORD PTR [rip+0x10] # 0x401017"),
    ("ebfe", 0x7C00, 16, "att", "jmp 0x7c00"),
    ("e9fdff", 0xFFFE, 16, "att", "jmp 0xfffe"),        # IP wraps at 64 KiB
    ("eb10", 0xFFFFFFF8, 32, "att", "jmp 0xa"),         # EIP wraps at 4 GiB
    ("48", 0x1000, 32, "att", "dec %eax"),
    ("f3aa", 0x1000, 64, "att", "rep stos %al,%es:(%rdi)"),
    ("0f05", 0x1000, 64, "intel", "syscall"),
    ("ea00100000", 0x1000, 64, "att", "(bad) (objdump reads 1 of the bytes)"),
])
def test_text_is_at_the_instructions_own_address(code, rip, bits, syntax, expected):
    assert text(code, rip, bits, syntax) == expected


def test_the_vendor_decides_how_64_bit_code_reads():
    assert text("66e90000", 0x1000, vendor="amd") == "jmpw 0x1004"
    assert text("66e900000000", 0x1000, vendor="intel") == "data16 jmp 0x1006"


def test_branch_targets_are_named_by_symbols():
    symbols = SymbolTable([(0x1000, 0x20, "start"), (0x2000, 0, "label")])
    assert text("e8fb0f0000", 0x1000, symbols=symbols.name) == "call 0x2000 <label>"
    assert text("ebfe", 0x1010, symbols=symbols.name) == "jmp 0x1010 <start+0x10>"
    assert text("ebfe", 0x1020, symbols=symbols.name) == "jmp 0x1020"    # past start's 0x20 bytes
    assert text("ebfe", 0x2345, symbols=symbols.name) == "jmp 0x2345 <label+0x345>"
    assert text("ebfe", 0x0FFF, symbols=symbols.name) == "jmp 0xfff"


@pytest.mark.parametrize("words, expected", [("rep stos %al,%es:(%rdi)", "stos"), ("lock incl (%rax)", "incl"),
                                             ("{vex} vpdpbusd %xmm1,%xmm0,%xmm0", "vpdpbusd"), ("rex.W", "rex.W"),
                                             ("data16 jmp 0x26", "jmp"), ("(bad)", "(bad)")])
def test_mnemonics_leave_prefixes_out(words, expected):
    assert mnemonic_of(words) == expected


def distinct_trace(path, count, repeats):
    """A trace of `count` distinct 5-byte instructions (mov $n, %eax), run `repeats` times."""
    writer = TraceWriter(path, HEADER)
    entry = event(1)
    writer.event(entry, Decision.TRACE, [(PAGE, bytes(4096))])
    step, values = 0, [0] * 16 + [PAGE, 2]
    for _ in range(repeats):
        for n in range(count):
            rip = PAGE + (step * 5) % 4000
            step += 1
            values[0], values[16] = n, PAGE + (step * 5) % 4000    # the next one's address
            writer.instruction(entry, step, rip, rip, b"\xb8" + n.to_bytes(4, "little"), tuple(values))
    writer.flush()
    return step


def show_all(path, disassembler):
    lookahead = Lookahead(path, disassembler)
    texts = [lookahead.instruction(record.event.bits, record.code, record.line).text(record.rip, 64)
             for record in TraceReader(path) if isinstance(record, Insn)]
    lookahead.close()
    return texts


def test_a_long_trace_costs_one_objdump_run_per_batch(tmp_path):
    path = tmp_path / "t.jsonl"
    count = disasm.BATCH + 100
    distinct_trace(path, count, 3)
    disassembler = Disassembler()
    texts = show_all(path, disassembler)
    assert disassembler.runs == 2, f"expected 2 objdump runs for {count} distinct instructions, got {disassembler.runs}"
    assert [" ".join(t.split()) for t in texts[:3]] == ["mov $0x0,%eax", "mov $0x1,%eax", "mov $0x2,%eax"]
    assert texts[count:2 * count] == texts[:count]


def test_the_lookahead_reaches_only_so_far(tmp_path, monkeypatch):
    """New instructions far apart: gathered within `reach` lines of the reader each time."""
    path = tmp_path / "t.jsonl"
    distinct_trace(path, 40, 1)
    monkeypatch.setattr(disasm, "LOOKAHEAD_BLOCK", 256)
    disassembler = Disassembler()
    lookahead = Lookahead(path, disassembler, reach=10)
    texts = [lookahead.instruction(r.event.bits, r.code, r.line).text(r.rip, 64)
             for r in TraceReader(path) if isinstance(r, Insn)]
    assert 2 <= disassembler.runs <= 8, disassembler.runs
    assert [" ".join(t.split()) for t in texts] == [f"mov ${n:#x},%eax" for n in range(40)]


def test_the_cache_starts_over_past_its_bound(monkeypatch):
    monkeypatch.setattr(disasm, "MAX_CACHED", 10)
    disassembler = Disassembler()
    keys = [(64, b"\xb8" + n.to_bytes(4, "little")) for n in range(25)]
    found = disassembler.resolve(keys[:8])
    found.update(disassembler.resolve(keys[8:]))
    assert len(found) == 25 and len(disassembler._cache) <= 17
    assert " ".join(found[keys[20]].text(0, 64).split()) == "mov $0x14,%eax"


def test_a_failing_objdump_is_a_problem_not_an_error(tmp_path):
    fake = tmp_path / "objdump"
    fake.write_text("#!/bin/sh\necho 'objdump: broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    disassembler = Disassembler(objdump=str(fake))
    (instruction,) = disassembler.resolve([(64, b"\x90")]).values()
    assert instruction.text(0, 64) == "" and disassembler.problem == f"{fake} failed: objdump: broken: no disassembly"


def test_symbols_are_read_only_from_regular_files(tmp_path):
    from types import SimpleNamespace

    from vmm.errors import BadInput
    from vmm.trace import symbols
    header = SimpleNamespace(image="/dev/zero", image_sha256="0" * 64)
    assert symbols.from_header(header) == (None, None)
    with pytest.raises(BadInput, match="not a regular file"):
        symbols.from_file("/dev/zero")
    with pytest.raises(BadInput, match="no section headers|not an ELF file"):
        (tmp_path / "flat.bin").write_bytes(b"\x90" * 64)
        symbols.from_file(tmp_path / "flat.bin")
