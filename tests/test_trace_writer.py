"""The trace writer: its template-made insn lines are the records json.dumps would write, they
hold only what changed yet every step's full state comes back, grouped lines keep their
order, the header comes first and page contents are stored once."""
import json
import random

import pytest

from trace_samples import HEADER, PAGE, event, loop_steps, random_steps, summary
from vmm.errors import BadInput
from vmm.trace.reader import TraceReader, read_trace
from vmm.trace.writer import PENDING_INSN_LINES, TraceWriter
from vmm.v2e.events import Decision
from vmm.x86.registers import GENERAL_REGISTERS, RIP

MASK64 = (1 << 64) - 1


def dumped(record):
    return json.dumps(record, separators=(",", ":")) + "\n"


def insn_lines(path):
    return [line for line in path.read_text().splitlines(keepends=True) if line.startswith('{"type":"insn"')]


@pytest.mark.parametrize("before, after, code, expected_regs", [
    # nothing but rip changed, falling through: no regs at all
    ((0,) * 16 + (PAGE, 2), (0,) * 16 + (PAGE + 1, 2), b"\x90", None),
    # two registers and the flags; rip falls through, so it is left out
    ((0,) * 16 + (PAGE, 2), (5, 0, 7) + (0,) * 13 + (PAGE + 3, 0x46), b"\x48\x01\xc0",
     {"rax": "0x5", "rcx": "0x7", "rflags": "0x46"}),
    # a jump: the new rip is written
    ((0,) * 16 + (PAGE, 2), (0,) * 16 + (PAGE - 0x10, 2), b"\xeb\xee", {"rip": "0x1ffff0"}),
    # every register, with 64-bit values
    ((0,) * 16 + (PAGE, 2), tuple(MASK64 - i for i in range(16)) + (0xFFFFFFFFFFFFFFF0, 0x10002), b"\xff\xe0",
     {**{name: f"{MASK64 - i:#x}" for i, name in enumerate(GENERAL_REGISTERS[:16])},
      "rip": "0xfffffffffffffff0", "rflags": "0x10002"}),
    # a branch to itself: rip unchanged, yet written, since it is not rip + length
    ((0,) * 16 + (PAGE, 2), (0,) * 16 + (PAGE, 2), b"\xeb\xfe", {"rip": "0x200000"}),
])
def test_insn_line_is_what_json_dumps_writes(tmp_path, before, after, code, expected_regs):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, HEADER)
    writer.event(event(1, values=before), Decision.TRACE, [(PAGE, bytes(4096))])
    writer.instruction(event(1, values=before), 1, PAGE, PAGE, code, after)
    writer.flush()
    record = {"type": "insn", "event": 1, "step": 1, "rip": f"{PAGE:#x}", "bytes": code.hex()}
    if expected_regs:
        record["regs"] = expected_regs
    assert insn_lines(path) == [dumped(record)]


def test_gpa_and_memory_operands_are_written_when_present(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, HEADER)
    entry = event(1)
    writer.event(entry, Decision.TRACE, [(PAGE, bytes(4096))])
    values = (0,) * 16 + (PAGE + 4, 2)
    # gpa - rip as at the event: no gpa; then another mapping: gpa, once; then memory operands
    writer.instruction(entry, 1, PAGE, PAGE, b"\x90" * 4, values)
    writer.instruction(entry, 2, PAGE + 4, 0x5004, b"\x90", values[:16] + (PAGE + 5, 2))
    writer.instruction(entry, 3, PAGE + 5, 0x5005, b"\x48\x89\x07", values[:16] + (PAGE + 8, 2),
                       ((0x7FF8, 8, bytes(range(8))), (0x9000, 2, None)))
    writer.flush()
    assert insn_lines(path) == [
        dumped({"type": "insn", "event": 1, "step": 1, "rip": "0x200000", "bytes": "90909090"}),
        dumped({"type": "insn", "event": 1, "step": 2, "rip": "0x200004", "gpa": "0x5004", "bytes": "90"}),
        dumped({"type": "insn", "event": 1, "step": 3, "rip": "0x200005", "bytes": "488907",
                "mem": [["0x7ff8", 8, "0001020304050607"], ["0x9000", 2, None]]})]


@pytest.mark.parametrize("seed", range(5))
def test_every_steps_full_state_comes_back_from_the_changes(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, HEADER)
    start = tuple([rng.getrandbits(64) for _ in range(16)] + [PAGE, 2])
    entry = event(1, values=start)
    writer.event(entry, Decision.TRACE, [(PAGE, bytes(4096))])
    steps = random_steps(rng, 2000)
    for index, (rip, gpa, code, values) in enumerate(steps, 1):
        writer.instruction(entry, index, rip, gpa, code, values)
    writer.leave(entry, "branch-out", steps[-1][3][RIP], len(steps), len(steps))
    writer.close(summary(1, len(steps)))
    read = [(r.rip, r.gpa, r.code, r.regs) for r in TraceReader(path) if type(r).__name__ == "Insn"]
    assert len(read) == len(steps)
    for number, (got, wanted) in enumerate(zip(read, steps), 1):
        assert got == wanted, f"step {number}: expected {wanted}, got {got}"
    written = sum(len(line) for line in insn_lines(path)) / len(steps)
    full = len(json.dumps({name: f"{MASK64:#x}" for name in GENERAL_REGISTERS}))
    assert written < full, f"{written:.0f} bytes per insn record: no smaller than the full registers ({full})"


def test_insn_lines_are_written_in_groups_and_in_order(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, HEADER)
    entry = event(1)
    writer.event(entry, Decision.TRACE, [(PAGE, bytes(4096))])
    steps = list(loop_steps(PENDING_INSN_LINES))
    for index, (rip, code, values) in enumerate(steps[:PENDING_INSN_LINES - 1], 1):
        writer.instruction(entry, index, rip, rip, code, values)
    assert insn_lines(path) == [], "a partial group went to the file"
    rip, code, values = steps[PENDING_INSN_LINES - 1]
    writer.instruction(entry, PENDING_INSN_LINES, rip, rip, code, values)
    assert len(insn_lines(path)) == PENDING_INSN_LINES, "a full group did not reach the file"
    for index, (rip, code, values) in enumerate(steps[PENDING_INSN_LINES:], PENDING_INSN_LINES + 1):
        writer.instruction(entry, index, rip, rip, code, values)
    writer.leave(entry, "branch-out", PAGE + 9, len(steps), len(steps))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in records] == ["header", "event", "page"] + ["insn"] * len(steps) + ["leave"]
    assert [r["step"] for r in records if r["type"] == "insn"] == list(range(1, len(steps) + 1))


def test_the_header_is_first_and_on_disk_at_once(tmp_path):
    path = tmp_path / "t.jsonl"
    TraceWriter(path, dict(HEADER, image="/guests/a.elf", image_sha256="ab" * 32))
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record == {"type": "header", "format": "v2e-vmm trace", "version": 2, "vmm_version": "0.1.0",
                      "image": "/guests/a.elf", "image_sha256": "ab" * 32, "watched": [["0x200000", "0x201000"]],
                      "backend": "stock", "cpu_vendor": "amd", "started": "2026-12-01T08:00:00+00:00"}


def test_page_contents_are_stored_once_per_sha256(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, dict(HEADER, watched=[(PAGE, PAGE + 0x2000)]))
    same, other = bytes(4096), b"\xc3" + bytes(4095)
    for index, pages in enumerate([[(PAGE, same), (PAGE + 0x1000, same)], [(PAGE, same), (PAGE + 0x1000, other)],
                                   [(PAGE, other), (PAGE + 0x1000, same)]], 1):
        writer.event(event(index), Decision.UNRECORDED, pages)
        writer.leave(event(index), "branch-out", 0x100000, 0, 1)
    writer.close(summary(3, 0, 3, watched=[(PAGE, PAGE + 0x2000)]))
    records = read_trace(path)
    assert [r["type"] for r in records] == ["header", "event", "page", "leave", "event", "page", "leave",
                                            "event", "leave", "summary"]
    stored = [r["sha256"] for r in records if r["type"] == "page"]
    assert [[digest for _, digest in r["pages"]] for r in records if r["type"] == "event"] == [
        [stored[0], stored[0]], [stored[0], stored[1]], [stored[1], stored[0]]]


def test_close_writes_the_summary_last_once(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, HEADER)
    writer.close(summary(0, 0))
    writer.close({"backend": "stock"})
    assert [r["type"] for r in read_trace(path)] == ["header", "summary"]


def test_a_synthetic_loop_trace_reads_back(tmp_path):
    from trace_samples import write_loop_trace
    path = tmp_path / "t.jsonl"
    total = write_loop_trace(path, 3, events=2)
    assert [r["type"] for r in read_trace(path)] == (
        ["header", "event", "page"] + ["insn"] * 7 + ["leave", "event"] + ["insn"] * 7 + ["leave", "summary"])
    assert total == 14


def test_an_unwritable_path_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="cannot write the trace"):
        TraceWriter(tmp_path / "missing" / "t.jsonl", HEADER)
