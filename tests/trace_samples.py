"""Traces made without a guest, through the real TraceWriter: events as the engine reports
them and instruction streams of known registers, for the trace tests that need no KVM."""
from vmm.trace.writer import TraceWriter
from vmm.v2e.events import Decision, EmulateEvent
from vmm.x86.registers import (CONTROL_REGISTERS, DESCRIPTOR_TABLES, EFER_LMA, GENERAL_REGISTERS, RIP,
                               SEGMENT_FIELDS, SEGMENT_REGISTERS, SYSTEM_SEGMENTS)

PAGE = 0x200000
MASK64 = (1 << 64) - 1
HEADER = {"vmm_version": "0.1.0", "image": None, "image_sha256": None, "watched": [(PAGE, PAGE + 0x1000)],
          "backend": "stock", "cpu_vendor": "amd", "started": "2026-12-01T08:00:00+00:00"}


def special_registers(bits):
    """The special registers as the engine's events carry them, for code of `bits`."""
    sregs = {name: dict.fromkeys(SEGMENT_FIELDS, 0) for name in SEGMENT_REGISTERS + SYSTEM_SEGMENTS}
    sregs.update({table: {"base": 0, "limit": 0xFFFF} for table in DESCRIPTOR_TABLES})
    sregs.update(dict.fromkeys(CONTROL_REGISTERS, 0))
    if bits != 16:
        sregs["cr0"] = 1
    if bits == 64:
        sregs["efer"] = EFER_LMA
        sregs["cs"]["l"] = 1
    elif bits == 32:
        sregs["cs"]["db"] = 1
    return sregs


def event(index, rip=PAGE, gpa=None, bits=64, values=None, vcpu=0):
    values = values or (0,) * 16 + (rip, 2)
    mode = {16: "real", 32: "protected", 64: "long"}[bits]
    gpa = rip if gpa is None else gpa
    return EmulateEvent(index, vcpu, "stock", gpa, rip, rip, mode, dict(zip(GENERAL_REGISTERS, values)),
                        special_registers(bits), gpa & ~0xFFF)


def summary(events, instructions, steps=None, watched=((PAGE, PAGE + 0x1000),), outcome="halt"):
    """A summary as the engine gives it."""
    return {"backend": "stock", "events": events, "instructions": instructions,
            "steps": instructions if steps is None else steps, "max_instructions": 100000, "tsc_per_step": 20,
            "watched": [[f"{start:#x}", f"{end:#x}"] for start, end in watched], "outcome": outcome,
            "exit_status": 0, "message": "the guest halted"}


def loop_steps(turns, start=PAGE, rcx=None):
    """(rip, code, registers after) of `mov $turns, %ecx; 1: dec %ecx; jnz 1b` (64-bit code):
    1 + 2 * turns instructions."""
    values = [0] * 16 + [start, 2]
    rcx = turns if rcx is None else rcx
    values[2], values[16] = rcx, start + 5
    yield start, bytes.fromhex("b9") + turns.to_bytes(4, "little"), tuple(values)
    for _ in range(turns):
        rcx -= 1
        values[2], values[16], values[17] = rcx, start + 7, 0x246 if rcx == 0 else 0x202 | (rcx & 4)
        yield start + 5, b"\xff\xc9", tuple(values)
        values[16] = start + 5 if rcx else start + 9
        yield start + 7, b"\x75\xfc", tuple(values)


def write_loop_trace(path, turns, events=1, complete=True):
    """A trace of `events` events, each running loop_steps(turns) in the watched page."""
    writer = TraceWriter(path, HEADER)
    code = bytearray(0x1000)
    code[:10] = bytes.fromhex("b9") + turns.to_bytes(4, "little") + bytes.fromhex("ffc975fcc3")
    total = 0
    for index in range(1, events + 1):
        entry = event(index)
        writer.event(entry, Decision.TRACE, [(PAGE, bytes(code))])
        count = 0
        for count, (rip, step_code, values) in enumerate(loop_steps(turns), 1):
            writer.instruction(entry, count, rip, rip, step_code, values)
        writer.leave(entry, "branch-out", PAGE + 9, count, count)
        total += count
    if complete:
        writer.close(summary(events, total))
    else:
        writer.flush()
    return total


def random_steps(rng, count, start=PAGE):
    """(rip, gpa, code, registers after) of random instructions from `start`: random registers
    change, sometimes rip jumps (also to itself), sometimes the page mapping moves."""
    values = [rng.getrandbits(64) for _ in range(16)] + [start, 2]
    rip, offset = start, 0
    steps = []
    for _ in range(count):
        code = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 15)))
        for index in rng.sample(range(18), rng.choice((0, 0, 1, 2, 3, 18))):
            if index != RIP:
                values[index] = rng.choice((0, 1, MASK64, rng.getrandbits(64), rng.getrandbits(20)))
        choice = rng.random()
        values[RIP] = rip if choice < 0.05 else rng.getrandbits(64) if choice < 0.3 else rip + len(code)
        if steps and rng.random() < 0.05:
            offset = rng.getrandbits(32) - rip
        steps.append((rip, rip + offset, code, tuple(values)))
        rip = values[RIP]
    return steps
