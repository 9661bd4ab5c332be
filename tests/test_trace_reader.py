"""The trace reader on bad input: whatever is wrong, one BadInput naming the file, the line and
what is wrong; a last line cut short ends the reading and is reported, the rest kept."""
import base64
import hashlib
import json

import pytest

from trace_samples import write_loop_trace
from vmm.errors import BadInput
from vmm.trace.reader import Insn, TraceReader, read_trace

pytestmark = pytest.mark.malformed_traces

# write_loop_trace(path, 2, events=2): the lines of the sample trace.
HEADER, EVENT_1, PAGE_1, INSN_1, INSN_2, INSN_3, INSN_4, INSN_5, LEAVE_1, EVENT_2 = range(1, 11)
SUMMARY = 17


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "t.jsonl"
    write_loop_trace(path, 2, events=2)
    return path


def rewrite(path, line, change):
    """Replace line `line` (1-based) with change(its record) as JSON, or with change's text."""
    lines = path.read_text().splitlines(keepends=True)
    replaced = change(json.loads(lines[line - 1]))
    lines[line - 1] = replaced if isinstance(replaced, str) else json.dumps(replaced) + "\n"
    path.write_text("".join(lines))


def fails(path, line, text):
    with pytest.raises(BadInput) as error:
        read_trace(path)
    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(error.value).startswith(where) and text in str(error.value), (
        f"expected {where}...{text}..., got {error.value}")


def test_the_sample_is_valid(sample):
    kinds = [record["type"] for record in read_trace(sample)]
    assert kinds[SUMMARY - 1] == "summary" and len(kinds) == SUMMARY
    assert [kinds[i - 1] for i in (HEADER, EVENT_1, PAGE_1, INSN_1, LEAVE_1, EVENT_2)] == [
        "header", "event", "page", "insn", "leave", "event"]


def with_field(name, value):
    return lambda record: {**record, name: value}


def without(name):
    return lambda record: {key: value for key, value in record.items() if key != name}


def page_data(data):
    return lambda record: {**record, "data": data}


BAD = [
    # (line, how it changes, what the error says[, the line it names when not that one])
    (EVENT_1, lambda record: {"type": "event"}, 'event record: missing "event"'),
    (EVENT_1, without("regs"), 'event record: missing "regs"'),
    (EVENT_1, with_field("regs", {"rax": "0x1"}), 'event record: regs: missing "rbx"'),
    (EVENT_1, with_field("bits", 48), "event record: bits: expected one of 16, 32, 64, got 48"),
    (EVENT_1, with_field("mode", "real"), "event 1: 64-bit code in real mode"),
    (EVENT_2, with_field("event", 1), "event 1 appears twice"),
    (LEAVE_1, lambda record: "", "event 2 on vCPU 0 begins before event 1, the vCPU's previous one, has its leave",
     LEAVE_1),
    (EVENT_1, with_field("backend", "patched"), "event 1: backend patched, but the header says stock"),
    (EVENT_1, with_field("pages", [["0x200800", "0" * 64]]), "page 0x200800 is not page aligned"),
    (PAGE_1, page_data("!!!"), "page record: data: expected the contents in base64"),
    (PAGE_1, page_data("AAA"), "page record: data is not valid base64"),
    (PAGE_1, page_data(base64.b64encode(bytes(4095)).decode()), "data holds 4095 bytes, size says 4096"),
    (PAGE_1, page_data(base64.b64encode(b"\1" + bytes(4095)).decode()), "the data does not match its sha256"),
    (PAGE_1, with_field("sha256", hashlib.sha256(b"x").hexdigest()), "no event just before refers to it"),
    (PAGE_1, lambda record: {"type": "leave", "event": 1, "reason": "halt", "rip": "0x0", "instructions": 0,
                             "steps": 0}, "event 1 refers to page contents"),
    (INSN_1, with_field("regs", {"rax": 5}), "insn record: regs.rax: expected a number as a lower-case hex "
                                             "string such as 0x1f, 64 bits at most, got an integer 5"),
    (INSN_1, with_field("regs", {"rax": "0x1" + "0" * 16}), "insn record: regs.rax: expected a number"),
    (INSN_1, with_field("regs", {"eax": "0x1"}), 'insn record: regs: unknown field "eax"'),
    (INSN_1, with_field("bytes", "9"), "insn record: bytes: expected instruction bytes in lower-case hex"),
    (INSN_1, with_field("bytes", "90" * 16), "insn record: bytes: expected instruction bytes"),
    (INSN_1, with_field("step", 2), "event 1: step 2 after step 0"),
    (INSN_1, with_field("step", "1"), 'insn record: step: expected an integer, got a string "1"'),
    (INSN_1, with_field("event", 2), "an insn record of event 2, which is not an event being traced"),
    (INSN_2, with_field("rip", "0x200006"), "rip 0x200006, but the previous instruction went on at 0x200005"),
    (INSN_2, with_field("mem", [["0x10", 2, "00"]]), "memory operand at 0x10 holds 1 bytes, size says 2"),
    (INSN_2, with_field("mem", [["0x10", 2]]), "insn record: mem[0]: 2 items, at least 3 needed"),
    (LEAVE_1, with_field("instructions", 4), "event 1 left after 4 instructions, but 5 insn records came before"),
    (LEAVE_1, with_field("steps", 1), "event 1: 1 steps, fewer than its 5 instructions"),
    (LEAVE_1, with_field("reason", "left"), "leave record: reason: expected one of"),
    (LEAVE_1, lambda record: json.dumps(record) + "\n" + json.dumps(record) + "\n",
     "a leave record for event 1, which is not an event being traced", LEAVE_1 + 1),
    (EVENT_2, lambda record: {"type": "insn", "event": 1, "step": 6, "rip": "0x200009", "bytes": "90"},
     "an insn record of event 1, which is not an event being traced"),
    (SUMMARY, with_field("watched", 5), "summary record: watched: expected an array, got an integer 5"),
    (SUMMARY, with_field("events", 3), "the summary counts 3 events and 10 instructions, the trace holds 2 and 10"),
    (SUMMARY, with_field("backend", "patched"), "the summary's backend patched is not the header's stock"),
    (SUMMARY, lambda record: json.dumps(record) + "\n" + json.dumps(record) + "\n", "a record after the summary",
     SUMMARY + 1),
    (INSN_3, lambda record: {"type": "header"}, "a second header record"),
    (INSN_3, lambda record: {"type": "foo"}, 'type: expected one of "header", "event", "page", "insn"'),
    (INSN_3, lambda record: "[1]\n", "expected an object, got an array [1]"),
    (INSN_3, lambda record: '{"type": "insn", "step": NaN}\n', "not a JSON record"),
    (INSN_3, lambda record: "[" * 100000 + "]" * 100000 + "\n", "not a JSON record"),
    (INSN_3, lambda record: '{"type": "insn", "step": ' + "9" * 5000 + "}\n", "not a JSON record"),
    (INSN_3, lambda record: "\xff\xfe\n", "not a JSON record"),
    (INSN_3, lambda record: "\n", "not a JSON record"),
    (HEADER, with_field("watched", [["0x200800", "0x201000"]]), "is not a non-empty page-aligned range"),
    (HEADER, with_field("cpu_vendor", 5), "header record: cpu_vendor: expected the host CPU's vendor"),
    (HEADER, with_field("version", 3), "a trace in format version 3; this vmm reads version 2"),
    (HEADER, lambda record: {"type": "event", "event": 1}, "a trace in format version 1 (no header record)"),
    (HEADER, lambda record: {"kind": "header"}, "not a trace: the first record is not a header record"),
    (HEADER, lambda record: "[]\n", "not a trace: the first record is not a JSON object"),
]


@pytest.mark.parametrize("case", BAD, ids=[f"{case[0]}:{case[2][:40]}" for case in BAD])
def test_bad_records_name_their_line(sample, case):
    line, change, text = case[:3]
    rewrite(sample, line, change)
    fails(sample, case[3] if len(case) > 3 else line, text)


def test_a_file_that_is_not_a_trace(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\x7fELF\x02\x01\x01")
    fails(path, 1, "not a JSON record")
    path.write_bytes(b"")
    fails(path, None, "empty, not a trace file")
    fails(tmp_path / "missing.jsonl", None, "no such file")
    fails(tmp_path, None, "Is a directory")


def test_an_overlong_line_is_refused_without_reading_it_whole(sample, monkeypatch):
    from vmm.trace import reader
    monkeypatch.setattr(reader, "MAX_LINE", 1000)
    fails(sample, EVENT_1, "a line longer than 1,000 bytes")


@pytest.mark.parametrize("cut", [1, 10, 40])
def test_a_last_line_cut_short_is_reported_and_the_rest_read(sample, cut):
    text = sample.read_bytes()
    lines = text.splitlines(keepends=True)
    sample.write_bytes(b"".join(lines[:INSN_4 - 1]) + lines[INSN_4 - 1][:cut])
    reader = TraceReader(sample)
    steps = [record.step for record in reader if isinstance(record, Insn)]
    assert steps == [1, 2, 3], steps
    assert reader.truncated == (INSN_4, "the last line is cut short (the run was killed while writing it?)")
    assert not reader.complete
    fails(sample, INSN_4, "the last line is cut short")


def test_a_trace_without_its_summary_is_read_as_incomplete(sample):
    lines = sample.read_text().splitlines(keepends=True)
    sample.write_text("".join(lines[:INSN_3]))
    reader = TraceReader(sample)
    assert len(list(reader)) == INSN_3 and reader.truncated is None and not reader.complete


def test_events_of_different_vcpus_may_interleave(tmp_path):
    """Each vCPU traces its own event at the same time: their records interleave, each event's
    registers rebuilt from its own."""
    from trace_samples import HEADER, PAGE, event, loop_steps, summary
    from vmm.trace.writer import TraceWriter
    from vmm.v2e.events import Decision
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, HEADER)
    events = [event(1, vcpu=0), event(2, vcpu=1, values=(7,) * 16 + (PAGE, 2))]
    streams = [list(loop_steps(3)), list(loop_steps(3, rcx=9))]
    for entry in reversed(events):     # numbered in order, written in any order
        writer.event(entry, Decision.TRACE, [(PAGE, bytes(4096))])
    for step in range(len(streams[0])):
        for entry, steps in zip(events, streams):
            rip, code, values = steps[step]
            writer.instruction(entry, step + 1, rip, rip, code, values)
    for entry in events:
        writer.leave(entry, "branch-out", PAGE + 9, len(streams[0]), len(streams[0]))
    writer.close(summary(2, 2 * len(streams[0])))
    read = {1: [], 2: []}
    for record in TraceReader(path):
        if isinstance(record, Insn):
            read[record.event.index].append(record.regs)
    assert read == {1: [values for _, _, values in streams[0]], 2: [values for _, _, values in streams[1]]}
    order = [json.loads(line).get("event") for line in path.read_text().splitlines()]
    # header, event 2 and its page, event 1, then the instructions of 1 and 2 in turn
    assert order[:4] == [None, 2, None, 1] and order[4:4 + 14] == [1, 2] * 7, order


def test_a_missing_event_number_is_found_at_the_summary(tmp_path):
    from trace_samples import HEADER, PAGE, event, summary
    from vmm.trace.writer import TraceWriter
    from vmm.v2e.events import Decision
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, HEADER)
    for index in (1, 3):
        writer.event(event(index), Decision.UNRECORDED, [(PAGE, bytes(4096))])
        writer.leave(event(index), "branch-out", 0x100000, 0, 1)
    writer.close(summary(2, 0, 2))
    fails(path, 7, "event 2 is missing")
