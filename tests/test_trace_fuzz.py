"""`vmm trace show|stats|diff` on mutated traces: bytes flipped, lines cut, dropped, doubled or
swapped, fields given other types and values. Whatever the damage, the answer is the output
and at most one `vmm:` line with a documented status, never a traceback or an internal error.
VMM_TRACE_FUZZ=N runs N mutations per command (default 150)."""
import contextlib
import io
import json
import os
import random

import pytest

from trace_samples import HEADER, PAGE, event, random_steps, summary
from vmm.cli import main
from vmm.trace.writer import TraceWriter
from vmm.v2e.events import Decision
from vmm.x86.registers import GENERAL_REGISTERS

pytestmark = pytest.mark.malformed_traces

MUTATIONS = int(os.environ.get("VMM_TRACE_FUZZ", "150"))
STATUSES = {"show": {0, 2}, "stats": {0, 2}, "diff": {0, 1, 2}}


def sample(path, rng):
    """A valid trace with every kind of record and field: pages shared and new, jumps, gpa
    changes, memory operands, a skipped event, a leave with a detail, the summary."""
    writer = TraceWriter(path, dict(HEADER, watched=[(PAGE, PAGE + 0x2000)]))
    pages = [(PAGE, bytes(range(256)) * 16), (PAGE + 0x1000, bytes(4096))]
    total = steps = 0
    for index in range(1, 4):
        entry = event(index)
        decision = Decision.UNRECORDED if index == 2 else Decision.TRACE
        writer.event(entry, decision, pages)
        count = 0
        if decision is Decision.TRACE:
            for count, (rip, gpa, code, values) in enumerate(random_steps(rng, 40), 1):
                memory = ((rng.getrandbits(48), 8, rng.randbytes(8)),) if count % 7 == 0 else ()
                writer.instruction(entry, count, rip, gpa, code, values, memory)
        writer.leave(entry, "fault" if index == 3 else "branch-out", 0x100000, count, count + 1,
                     "#PF" if index == 3 else None)
        total, steps = total + count, steps + count + 1
        pages = [(PAGE, bytes(4096)), (PAGE + 0x1000, bytes(4096))]
    writer.annotate({"type": "layer", "layer": 1, "vcpu": 0, "entry": {"gpa": "0x201000", "gva": "0x201000",
                                                                       "rip": "0x201000"},
                     "mode": "long", "bits": 64, "regs": {name: "0x0" for name in GENERAL_REGISTERS}, "cr3": "0x2000",
                     "region": {"gpa": "0x201000", "size": 4096, "sha256": "0" * 64, "file": "layer-1-0x201000.bin"},
                     "pages_written": ["0x201000"], "last_writer_rip": None, "backend": "stock"})
    writer.close(summary(3, total, steps, watched=[(PAGE, PAGE + 0x2000)]))


def other_value(rng):
    return rng.choice([None, True, False, 0, -1, 1 << 64, 2 ** 70, 1.5, "", "0x", "0x" + "f" * 17, "!!!",
                       "zz", [], [None], {}, {"type": "insn"}, "0x1", 4096, "a" * 300])


def mutate_json(record, rng):
    """Change one value somewhere in the record (or drop or add a key)."""
    containers = []

    def walk(value):
        if isinstance(value, dict):
            containers.append(value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            containers.append(value)
            for item in value:
                walk(item)
    walk(record)
    target = rng.choice(containers)
    if isinstance(target, dict):
        key = rng.choice(list(target) or ["type"])
        action = rng.random()
        if action < 0.2:
            target.pop(key, None)
        elif action < 0.3:
            target["extra"] = other_value(rng)
        else:
            target[key] = other_value(rng)
    elif target:
        target[rng.randrange(len(target))] = other_value(rng)
    else:
        target.append(other_value(rng))
    return record


def mutate(data, rng):
    lines = data.splitlines(keepends=True)
    choice = rng.randrange(8)
    if choice == 0:                                   # flip bytes
        data = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        return bytes(data)
    if choice == 1:                                   # cut anywhere
        return data[:rng.randrange(len(data))]
    if choice == 2:                                   # drop a line
        del lines[rng.randrange(len(lines))]
    elif choice == 3:                                 # double a line
        at = rng.randrange(len(lines))
        lines.insert(at, lines[at])
    elif choice == 4:                                 # swap two lines
        a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[a], lines[b] = lines[b], lines[a]
    else:                                             # change a field
        at = rng.randrange(len(lines))
        lines[at] = json.dumps(mutate_json(json.loads(lines[at]), rng)).encode() + b"\n"
    return b"".join(lines)


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(map(str, args)))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", ["show", "stats", "diff"])
def test_mutated_traces_give_output_and_one_line_never_a_traceback(tmp_path, monkeypatch, command):
    rng = random.Random(f"trace-fuzz-{command}")
    original = tmp_path / "original.jsonl"
    sample(original, rng)
    assert run("trace", command, original, *([original] if command == "diff" else []))[0] == 0
    data = original.read_bytes()
    mutated = tmp_path / "mutated.jsonl"
    outcomes = {}
    for number in range(MUTATIONS):
        mutated.write_bytes(mutate(data, rng))
        # objdump for one run in ten: the rest without it (its parsing is not what is fuzzed)
        monkeypatch.setenv("OBJDUMP", "objdump" if number % 10 == 0 else "/nonexistent/objdump")
        args = ["trace", command, mutated] + ([original] if command == "diff" else [])
        if command == "show":
            args += rng.choice([[], ["--json"], ["--syntax", "intel", "--mnemonic", "mov"], ["--event", "3"]])
        status, _, stderr = run(*args)
        errors = [line for line in stderr.splitlines() if not line.startswith("vmm: warning: ")]
        assert status in STATUSES[command], f"mutation {number}: status {status}: {stderr}"
        assert "Traceback" not in stderr and "internal error" not in stderr, f"mutation {number}: {stderr}"
        assert len(errors) == (status == 2) and all(line.startswith("vmm: ") for line in errors), (
            f"mutation {number}: expected {'one error line' if status == 2 else 'no error'}, got {stderr!r}")
        outcomes[status] = outcomes.get(status, 0) + 1
    assert outcomes.get(2, 0) > MUTATIONS // 2, f"the mutations were mostly harmless: {outcomes}"
