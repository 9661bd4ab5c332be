"""The trace writer: insn records from a template are the records json.dumps would write,
and grouped insn lines keep their order with the other records."""
import json

import pytest

from vmm.v2e.events import EmulateEvent
from vmm.v2e.trace import PENDING_INSN_LINES, TraceWriter, read_trace
from vmm.x86.registers import GENERAL_REGISTERS


def event(index):
    return EmulateEvent(index, 0, "stock", 0x200000, None, 0x200000, "long", {}, {}, 0x200000)


@pytest.mark.parametrize("values", [tuple(range(18)), (0,) * 18, ((1 << 64) - 1,) * 18,
                                    tuple((0x123456789 * (i + 1)) & ((1 << 64) - 1) for i in range(18))])
def test_insn_line_is_what_json_dumps_writes(tmp_path, values):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path)
    writer.instruction(event(3), 7, 0xFFFFFFFFFFFFFFF0, 0, b"\x0f\x05", values)
    writer.flush()
    record = {"type": "insn", "event": 3, "step": 7, "rip": "0xfffffffffffffff0", "gpa": "0x0", "bytes": "0f05",
              "regs": {name: f"{value:#x}" for name, value in zip(GENERAL_REGISTERS, values)}}
    assert path.read_text() == json.dumps(record, separators=(",", ":")) + "\n"


def test_insn_lines_are_written_in_groups_and_in_order(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path)
    writer.write({"type": "event", "event": 1})
    for step in range(1, PENDING_INSN_LINES):
        writer.instruction(event(1), step, step, step, b"\x90", (0,) * 18)
    assert [r["type"] for r in read_trace(path)] == ["event"], "a partial group went to the file"
    writer.instruction(event(1), PENDING_INSN_LINES, 0, 0, b"\x90", (0,) * 18)
    assert len(read_trace(path)) == 1 + PENDING_INSN_LINES, "a full group did not reach the file"
    writer.instruction(event(1), PENDING_INSN_LINES + 1, 0, 0, b"\x90", (0,) * 18)
    writer.close({"events": 1})
    records = read_trace(path)
    assert [r["type"] for r in records] == ["event"] + ["insn"] * (PENDING_INSN_LINES + 1) + ["summary"]
    assert [r["step"] for r in records[1:-1]] == list(range(1, PENDING_INSN_LINES + 2))
