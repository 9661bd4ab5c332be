"""`vmm trace show`: a trace as an analyst reads it, like `qemu -d in_asm,cpu` with gdb's
`symbol+offset`: each event with its registers and page dumps, each instruction with its
address, bytes, disassembly and the registers it changed, each leave with its reason.
Streamed: each record is printed as it is read, its disassembly from a disasm.Lookahead on
the same file. Events of different vCPUs interleave as they ran, each switch marked."""
import json
from dataclasses import dataclass

from ..x86.registers import GENERAL_REGISTERS
from .format import plural
from .reader import Event, Header, Insn, Layer, Leave, Page, Summary

_REGISTERS_PER_ROW = 6


@dataclass(slots=True)
class Selection:
    """Which records to show: events by number, instructions by address range [start, end)
    and mnemonic (empty: all), at most max_instructions instructions per event."""

    events: frozenset = frozenset()
    rips: tuple = ()
    mnemonics: frozenset = frozenset()
    max_instructions: int | None = None

    def keeps(self, record, event):
        """Whether a record of event number `event` (None: of the whole trace) passes the event
        and address filters."""
        if event is None:
            return True
        if self.events and event not in self.events:
            return False
        if self.rips and type(record) is Insn:
            return any(start <= record.rip < end for start, end in self.rips)
        return True

    def keeps_mnemonic(self, mnemonic, syntax):
        """Whether an instruction's mnemonic is selected; in AT&T syntax `mov` also selects
        movl, movq... (the operand-size suffix)."""
        if not self.mnemonics or mnemonic in self.mnemonics:
            return True
        return syntax == "att" and mnemonic[-1:] in ("b", "w", "l", "q") and mnemonic[:-1] in self.mnemonics


def _hexdump(data, base):
    """Rows of 16 bytes, trailing all-zero rows left out."""
    end = len(data.rstrip(b"\0"))
    lines = []
    for offset in range(0, (end + 15) // 16 * 16, 16):
        row = data[offset:offset + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"    {base + offset:08x}  {row.hex(' '):<47}  |{text}|")
    omitted = len(data) - (end + 15) // 16 * 16
    if omitted > 0:
        lines.append(f"    ({omitted} more zero bytes)")
    return lines


def memory_text(memory):
    """Memory operands as `[0x7ff8:8]=0x200070` (values up to 8 bytes as little-endian numbers)."""
    parts = []
    for address, size, data in memory:
        if data is None:
            value = "?"
        elif size <= 8:
            value = f"{int.from_bytes(data, 'little'):#x}"
        else:
            value = data.hex()
        parts.append(f"[{address:#x}:{size}]={value}")
    return " ".join(parts)


def ranges_text(ranges):
    """Watched ranges ((start, end) numbers) as text."""
    return ", ".join(f"{start:#x}-{end:#x}" for start, end in ranges) or "nothing"


def header_line(header, path):
    image = "no image named" if header.image is None else (
        f"image {header.image}" + (f" (sha256 {header.image_sha256[:16]}...)" if header.image_sha256 else ""))
    return (f"trace {path}: format version {header.record['version']} from vmm {header.vmm_version}, started "
            f"{header.started}; {image}; {header.backend} backend, {header.cpu_vendor} CPU, watched "
            f"{ranges_text(header.watched)}")


def event_line(event, symbolize=None):
    gva = "gva unknown" if event.gva is None else f"gva {event.gva:#x}"
    name = symbolize(event.rip) if symbolize else None
    where = f"{event.rip:#x} <{name}>" if name else f"{event.rip:#x}"
    privilege = "" if event.cpl is None else f"CPL {event.cpl}, cr3 {event.cr3:#x}, "
    return (f"event {event.index}: vCPU {event.vcpu} executes watched page {event.page:#x} at rip "
            f"{where} (gpa {event.gpa:#x}, {gva}; {event.mode} mode, {event.bits}-bit code, {privilege}"
            f"{event.backend} backend) -> {event.decision}")


def leave_line(leave):
    detail = f" ({leave.detail})" if leave.detail else ""
    return (f"  leave: {leave.reason}{detail} at rip {leave.rip:#x} after {leave.instructions} traced of "
            f"{leave.steps} stepped instructions")


def layer_line(layer):
    privilege = "" if layer.cpl is None else f", CPL {layer.cpl}, cr3 {layer.cr3:#x}"
    start = f"linear {layer.gva:#x}" if layer.gva is not None else f"{layer.region:#x}"
    return (f"layer {layer.index}: vCPU {layer.vcpu} runs code it wrote at rip {layer.rip:#x} (gpa {layer.gpa:#x}"
            f"{privilege}); {layer.size} bytes from {start} dumped to {layer.file}")


def summary_line(summary, header):
    ranges = ranges_text((int(start, 16), int(end, 16)) for start, end in summary.record["watched"])
    return (f"summary: {plural(summary.events, 'event')}, {plural(summary.instructions, 'instruction')} traced, "
            f"{header.backend} backend, watched {ranges}; run ended: {summary.outcome} "
            f"(exit status {summary.exit_status}): {summary.message}")


def insn_line(insn, instruction, symbolize=None):
    """`  #STEP  RIP  BYTES  DISASSEMBLY  changed registers  memory operands`."""
    text = instruction.text(insn.rip, insn.event.bits, symbolize) if instruction else ""
    changes = " ".join(f"{name}={value:#x}" for name, value in insn.changed.items() if name != "rip")
    if insn.memory:
        changes = f"{changes} {memory_text(insn.memory)}".lstrip()
    return f"  #{insn.step:<6} {insn.rip:>#10x}  {insn.code.hex(' '):<23} {text:<34} {changes}".rstrip()


def expanded_insn(insn, instruction, symbolize=None):
    """An insn record made self-contained, with its disassembly and symbol (the `shown_insn` of
    the schema): for --json."""
    return {**insn.expanded(), "asm": instruction.text(insn.rip, insn.event.bits, symbolize) if instruction else "",
            "symbol": symbolize(insn.rip) if symbolize else None}


class Show:
    """Prints a trace through write(text): run(records) once, then finish(). `disassembly` is a
    disasm.Lookahead on the same file."""

    def __init__(self, write, path, disassembly, symbols=None, selection=None, as_json=False, pages=True):
        self._write = write
        self._path = path
        self._disassembly = disassembly
        self._syntax = disassembly.disassembler.syntax
        self._symbolize = symbols.name if symbols is not None else None
        self._selection = selection or Selection()
        self._json = as_json
        self._pages = pages
        self.header = None
        self._page_refs = {}         # sha256 -> gpa, for the last event's page records
        self._first_stored = {}      # sha256 -> the event that stored it
        # Per event until its leave: the record, the instructions shown, the symbol of the last.
        self._events, self._shown, self._symbols = {}, {}, {}
        self._current = None         # the event the last line shown belongs to
        self.ended = False           # the summary was shown

    def run(self, records):
        selection = self._selection
        limit = selection.max_instructions
        instruction_of = self._disassembly.instruction
        shown = self._shown
        latest = 0                   # the last event record's number (its page records follow it)
        for record in records:
            kind = type(record)
            if kind is Insn:
                event = record.event.index
                if not selection.keeps(record, event):
                    continue
                count = shown.get(event, 0)
                if limit is not None and count > limit:
                    continue
                instruction = instruction_of(record.event.bits, record.code, record.line)
                if selection.mnemonics and not selection.keeps_mnemonic(instruction.mnemonic, self._syntax):
                    continue
                shown[event] = count + 1
                if limit is not None and count == limit:
                    if not self._json:
                        self._switch_to(record.event)
                        self._write("  ...\n")
                    continue
                self._instruction(record, instruction)
                continue
            if kind is Event:
                event = latest = record.index
                self._events[event] = record
            elif kind is Page:
                event = latest
                self._first_stored.setdefault(record.sha256, event)
            elif kind is Leave:
                event = record.event
                shown.pop(event, None)
                self._symbols.pop(event, None)
            else:
                event = None
            if selection.keeps(record, event):
                self._other(record)
            if kind is Leave:
                self._events.pop(event, None)

    def _switch_to(self, event):
        """Before a line of `event`: say whose it is when the line before was another event's
        (events of different vCPUs interleave)."""
        if self._current != event.index:
            if self._current is not None:
                self._write(f"  (event {event.index}, vCPU {event.vcpu})\n")
            self._current = event.index

    def _instruction(self, insn, instruction):
        if self._json:
            self._write(json.dumps(expanded_insn(insn, instruction, self._symbolize), separators=(",", ":")) + "\n")
            return
        self._switch_to(insn.event)
        if self._symbolize is not None:
            name = self._symbolize(insn.rip)
            base = name.split("+", 1)[0] if name else None
            if base is not None and base != self._symbols.get(insn.event.index):
                self._write(f"  <{base}>:\n")
            self._symbols[insn.event.index] = base
        self._write(insn_line(insn, instruction, self._symbolize) + "\n")

    def _other(self, record):
        if self._json:
            if type(record) is not Page or self._pages:
                self._write(json.dumps(record.record, separators=(",", ":")) + "\n")
            if type(record) is Header:
                self.header = record
            self.ended = self.ended or type(record) is Summary
            return
        kind = type(record)
        if kind is Header:
            self.header = record
            self._write(header_line(record, self._path) + "\n")
        elif kind is Event:
            self._begin(record)
        elif kind is Page:
            if self._pages:
                gpa = self._page_refs.get(record.sha256, 0)
                self._write(f"  page {gpa:#x}: {len(record.data)} bytes, sha256 {record.sha256[:16]}...\n")
                self._write("".join(line + "\n" for line in _hexdump(record.data, gpa)))
        elif kind is Leave:
            event = self._events.get(record.event)
            if event is not None:
                self._switch_to(event)
            self._write(leave_line(record) + "\n")
        elif kind is Layer:
            self._current = None
            self._write(layer_line(record) + "\n")
        elif kind is Summary:
            self.ended = True
            self._write(summary_line(record, self.header) + "\n")

    def _begin(self, event):
        self._current = event.index
        lines = [event_line(event, self._symbolize)]
        for row in range(0, len(GENERAL_REGISTERS), _REGISTERS_PER_ROW):
            lines.append("  " + " ".join(f"{name}={value:#x}" for name, value in
                                         zip(GENERAL_REGISTERS[row:row + _REGISTERS_PER_ROW],
                                             event.regs[row:row + _REGISTERS_PER_ROW])))
        self._page_refs = {}
        earlier = []
        for gpa, digest in event.pages:
            self._page_refs.setdefault(digest, gpa)
            if digest in self._first_stored:
                earlier.append((gpa, digest))
        if self._pages:
            for gpa, digest in earlier[:4]:
                lines.append(f"  page {gpa:#x}: as at event {self._first_stored[digest]} "
                             f"(sha256 {digest[:16]}...)")
            if len(earlier) > 4:
                lines.append(f"  {plural(len(earlier) - 4, 'more page')} as at earlier events")
        self._write("".join(line + "\n" for line in lines))

    def finish(self):
        """After run(): the note for a trace without its summary."""
        if not self.ended and not self._json:
            self._write("(no summary: the trace is incomplete)\n")

