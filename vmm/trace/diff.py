"""`vmm trace diff A B`: where two traces of the same guest first part ways.

The traces may come from another backend, another host, or watches of another granularity:
only the instructions at guest-physical addresses both traces watched are compared (all of
them when a trace's watched set was chosen as it ran: its header watches nothing), each
vCPU's in the order they executed, whatever events they fell in (the vCPUs' events may
interleave differently in the two files). Two instructions are the same when their address,
bytes, the registers after them and (when both traces have them) their memory operands are.
The first difference is shown with the instructions before it on that vCPU.
"""
import collections
from operator import itemgetter

from ..errors import BadInput
from ..x86.registers import GENERAL_REGISTERS
from .format import IGNORE_MEMORY_BYTES
from .reader import Insn, Leave, Summary
from .show import insn_line, memory_text, ranges_text

# Instructions of one vCPU the other trace has not reached yet, held at most.
MAX_HELD = 1 << 16


def _common(ranges_a, ranges_b):
    common = []
    for start_a, end_a in ranges_a:
        for start_b, end_b in ranges_b:
            start, end = max(start_a, start_b), min(end_a, end_b)
            if start < end:
                common.append((start, end))
    return sorted(common)


class _Side:
    """One trace's instructions in the common ranges, and where it is in its events."""

    def __init__(self, label, path, records):
        self.label, self.path = label, path
        self.header = next(records)
        self._records = records
        self.cut = None          # the last leave whose event was not recorded to its end
        self.complete = False    # its summary was read

    def instructions(self, common):
        """Its instructions in the common ranges (None: all)."""
        for record in self._records:
            kind = type(record)
            if kind is Insn:
                if common is None:
                    yield record
                    continue
                gpa = record.gpa
                for start, end in common:
                    if start <= gpa < end:
                        yield record
                        break
            elif kind is Leave and record.steps > record.instructions:
                self.cut = record
            elif kind is Summary:
                self.complete = True


def compare(write, side_a, side_b, disassembler, symbols=None, context=3, ignore=frozenset()):
    """Write the comparison of two traces ((path, records from the header on) each); True
    when they diverge."""
    a, b = _Side("A", *side_a), _Side("B", *side_b)
    if a.header.watched and b.header.watched:
        common = _common(a.header.watched, b.header.watched)
        if not common:
            raise BadInput(f"{a.path} and {b.path} watch no common range: nothing to compare")
        ranges = ranges_text(common)
    else:
        common, ranges = None, "the ranges watched as they ran"
    write(f"A: {a.path}\nB: {b.path}\n")
    if a.header.image_sha256 and b.header.image_sha256 and a.header.image_sha256 != b.header.image_sha256:
        write("note: the traces name different images (their sha256 differ)\n")
    kept = [index for index, name in enumerate(GENERAL_REGISTERS) if name not in ignore]
    memory = _memory_compared(ignore)
    registers = itemgetter(*kept) if len(kept) != len(GENERAL_REGISTERS) else None
    # Per vCPU: the instructions one side has read that the other has not yet, and the last
    # equal ones (for context); and how many were compared.
    waiting = ({}, {})
    recent = {}
    compared = {}
    streams = [a.instructions(common), b.instructions(common)]
    live = [True, True]
    held = 0
    while any(live):
        for side in (0, 1):
            if not live[side]:
                continue
            insn = next(streams[side], None)
            if insn is None:
                live[side] = False
                continue
            vcpu = insn.event.vcpu
            other = waiting[1 - side].get(vcpu)
            if not other:
                waiting[side].setdefault(vcpu, collections.deque()).append(insn)
                held += 1
                if held > MAX_HELD:
                    raise BadInput(f"{a.path} and {b.path}: their vCPUs' instructions interleave too differently "
                                   f"to compare within {MAX_HELD} instructions")
                continue
            first = other.popleft()
            held -= 1
            pair = (first, insn) if side == 1 else (insn, first)
            if _differs(*pair, registers, memory):
                _report(write, (a, pair[0]), (b, pair[1]), compared.get(vcpu, 0), ranges,
                        recent.get(vcpu, ()), disassembler, symbols, ignore)
                return True
            recent.setdefault(vcpu, collections.deque(maxlen=context)).append(pair)
            compared[vcpu] = compared.get(vcpu, 0) + 1
    for side in (0, 1):     # what one side holds beyond the other's end
        for vcpu, left in waiting[side].items():
            if left:
                pair = (left[0], None) if side == 0 else (None, left[0])
                _report(write, (a, pair[0]), (b, pair[1]), compared.get(vcpu, 0), ranges,
                        recent.get(vcpu, ()), disassembler, symbols, ignore)
                return True
    total = sum(compared.values())
    write(f"no divergence: {total} instructions compared, all those both traces hold in {ranges}\n")
    return False


def _memory_compared(ignore):
    """What of the memory operands is compared: all of them, or (with `--ignore mem`) their
    addresses and sizes, not the bytes there."""
    if IGNORE_MEMORY_BYTES in ignore:
        return lambda memory: [(address, size) for address, size, _ in memory]
    return lambda memory: memory


def _differs(a, b, registers, memory):
    if a.rip != b.rip or a.code != b.code:
        return True
    if (a.regs != b.regs) if registers is None else (registers(a.regs) != registers(b.regs)):
        return True
    return bool(a.memory and b.memory and memory(a.memory) != memory(b.memory))


def _where(side, insn):
    if insn is None:
        return f"{side.label}: the trace has no more instructions there" + (
            " (it ends without its summary)" if not side.complete else "")
    event = insn.event
    return (f"{side.label}: event {event.index} (vCPU {event.vcpu}, entered at {event.rip:#x}), step {insn.step}, "
            f"line {insn.line}")


def _report(write, side_a, side_b, compared, ranges, recent, disassembler, symbols, ignore):
    (a, insn_a), (b, insn_b) = side_a, side_b
    symbolize = symbols.name if symbols is not None else None
    shown = [insn for pair in recent for insn in pair] + [insn for insn in (insn_a, insn_b) if insn is not None]
    resolved = disassembler.resolve(list({(insn.event.bits, insn.code): None for insn in shown}))

    def line(insn):
        return insn_line(insn, resolved[(insn.event.bits, insn.code)], symbolize)

    vcpu = (insn_a or insn_b).event.vcpu
    write(f"the traces diverge at vCPU {vcpu}'s instruction {compared + 1} of those both hold in {ranges}:\n")
    write(f"  {_where(a, insn_a)}\n  {_where(b, insn_b)}\n")
    if recent:
        write("before it, the same in both (A's steps):\n")
        for previous, _ in recent:
            write(line(previous) + "\n")
    for side, insn in ((a, insn_a), (b, insn_b)):
        write(f"{side.label}:\n" + (line(insn) if insn is not None else "  (nothing)") + "\n")
    if insn_a is not None and insn_b is not None:
        write("differs: " + "; ".join(_differences(insn_a, insn_b, ignore)) + "\n")
    for side in (a, b):
        cut = side.cut
        if cut is not None:
            write(f"note: {side.label} recorded {cut.instructions} of the {cut.steps} instructions of its event "
                  f"{cut.event} ({cut.reason}): what follows it there was not recorded\n")


def _differences(a, b, ignore):
    if a.rip != b.rip:
        return [f"address (A {a.rip:#x}, B {b.rip:#x})"]
    if a.code != b.code:
        return [f"bytes (A {a.code.hex(' ')}, B {b.code.hex(' ')})"]
    found = [f"{name} (A {value_a:#x}, B {value_b:#x})"
             for name, value_a, value_b in zip(GENERAL_REGISTERS, a.regs, b.regs)
             if value_a != value_b and name not in ignore]
    memory = _memory_compared(ignore)
    if a.memory and b.memory and memory(a.memory) != memory(b.memory):
        found.append(f"memory operands (A {memory_text(a.memory)}, B {memory_text(b.memory)})")
    return found

