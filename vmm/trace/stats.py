"""`vmm trace stats`: what a trace holds, counted in one pass. Each event's line is printed
when its leave is read; the totals keep only what is bounded by the code traced (distinct
instructions and blocks), never by the trace's length.

A basic block here is a dynamic one: a run of instructions executed straight through,
ended by an instruction after which execution did not continue at the next address (a
taken branch, call, return, or an exception) or by the end of the event.
"""
from ..x86.paging import PAGE_MASK, PAGE_SIZE
from .format import plural
from .reader import Event, Header, Insn, Leave, Page, Summary
from .show import header_line


class Statistics:
    def __init__(self, write, path, symbols=None):
        self._write = write
        self._path = path
        self._symbolize = symbols.name if symbols is not None else None
        self.header = self.summary = None
        self.instructions = self.events = 0
        self.counts = {}          # (bits, code) -> executions
        self.sites = {}           # gpa -> instruction length
        self.blocks = {}          # (start rip, last rip, instructions) -> runs
        self._events = {}         # event index -> _Traced, until its leave
        self.page_records = self.page_bytes = self.page_references = 0
        self.memory_accesses = 0
        self.data_pages = set()

    def _name(self, address):
        name = self._symbolize(address) if self._symbolize else None
        return f"{address:#x} <{name}>" if name else f"{address:#x}"

    def run(self, records):
        counts, sites, blocks, events = self.counts, self.sites, self.blocks, self._events
        for record in records:
            kind = type(record)
            if kind is Insn:
                key = (record.event.bits, record.code)
                counts[key] = counts.get(key, 0) + 1
                sites[record.gpa] = len(record.code)
                traced = events[record.event.index]
                if traced.block_start is None:
                    traced.block_start, traced.block_length = record.rip, 0
                traced.block_length += 1
                traced.last_rip = record.rip
                traced.instructions += 1
                if "rip" in record.changed:
                    traced.end_block(blocks)
                if record.memory:
                    self.memory_accesses += len(record.memory)
                    self.data_pages.update(address & PAGE_MASK for address, _, _ in record.memory)
                self.instructions += 1
            elif kind is Header:
                self.header = record
                self._write(header_line(record, self._path) + "\n" + "events:\n")
            elif kind is Event:
                self.events += 1
                self.page_references += len(record.pages)
                events[record.index] = _Traced(record)
            elif kind is Page:
                self.page_records += 1
                self.page_bytes += len(record.data)
            elif kind is Leave:
                traced = events.pop(record.event)
                traced.end_block(blocks)
                self._event_line(traced, record)
            elif kind is Summary:
                self.summary = record
        for traced in events.values():
            traced.end_block(blocks)
            self._event_line(traced, None)
        events.clear()

    def _event_line(self, traced, leave):
        event = traced.event
        line = (f"  event {event.index}: vCPU {event.vcpu}, entered {self._name(event.rip)} ({event.bits}-bit), "
                f"{event.decision}: {plural(traced.instructions, 'instruction')}")
        if leave is not None:
            detail = f" ({leave.detail})" if leave.detail else ""
            line += f" of {plural(leave.steps, 'step')}, {leave.reason}{detail} to {self._name(leave.rip)}"
        else:
            line += ", no leave record (the trace ends)"
        self._write(line + "\n")

    def report(self, disassembler, top):
        """The totals, after run(): code, page contents, hottest blocks, mnemonics."""
        write = self._write
        total = self.instructions
        if self.summary is None:
            write("  (no summary: the trace is incomplete)\n")
        watched = self.header.watched if self.summary is None else [
            (int(start, 16), int(end, 16)) for start, end in self.summary.record["watched"]]
        watched_pages = sum((end - start) // PAGE_SIZE for start, end in watched)
        code_pages = sorted({gpa & PAGE_MASK for gpa in self.sites}
                            | {(gpa + length - 1) & PAGE_MASK for gpa, length in self.sites.items()})
        shown_pages = ", ".join(f"{page:#x}" for page in code_pages[:8]) + (", ..." if len(code_pages) > 8 else "")
        write(f"totals: {plural(self.events, 'event')}, {plural(total, 'instruction')} traced\n")
        write(f"code: {plural(len(self.sites), 'distinct instruction')} ({plural(_covered(self.sites), 'byte')}) in "
              f"{plural(len(code_pages), 'page')}" + (f": {shown_pages}" if code_pages else "")
              + f" (watched at the end: {plural(watched_pages, 'page')}, {watched_pages * 4} KiB)\n")
        write(f"page contents stored: {plural(self.page_records, 'distinct page')} ({self.page_bytes // 1024} KiB) "
              f"for {plural(self.page_references, 'page reference')} by the events\n")
        if self.memory_accesses:
            write(f"memory operands: {plural(self.memory_accesses, 'operand')} accessed in "
                  f"{plural(len(self.data_pages), 'distinct page')}\n")
        if self.blocks:
            write(f"hottest basic blocks (runs straight through; {len(self.blocks)} distinct):\n")
            hottest = sorted(self.blocks.items(), key=lambda item: (-item[1] * item[0][2], item[0]))[:top]
            for (start, last, length), runs in hottest:
                share = 100 * runs * length / total if total else 0
                write(f"  {runs:>9} x {length:<4} = {runs * length:>10} ({share:5.1f}%)  {self._name(start)} .. "
                      f"{self._name(last)}\n")
        if self.counts:
            histogram = {}
            resolved = disassembler.resolve(list(self.counts))
            for key, count in self.counts.items():
                mnemonic = resolved[key].mnemonic or "(no disassembly)"
                histogram[mnemonic] = histogram.get(mnemonic, 0) + count
            write(f"mnemonics ({len(histogram)} distinct):\n")
            for mnemonic, count in sorted(histogram.items(), key=lambda item: (-item[1], item[0])):
                write(f"  {mnemonic:<12} {count:>10} {100 * count / total:6.1f}%\n")


def _covered(sites):
    """Bytes the instructions at these addresses (gpa -> length) cover, overlaps counted once."""
    covered, reached = 0, -1
    for gpa in sorted(sites):
        end = gpa + sites[gpa]
        if end > reached:
            covered += end - max(gpa, reached)
            reached = end
    return covered


class _Traced:
    """An event until its leave: its instructions, and the block it is running."""

    __slots__ = ("event", "instructions", "block_start", "block_length", "last_rip")

    def __init__(self, event):
        self.event = event
        self.instructions = 0
        self.block_start = self.block_length = self.last_rip = None

    def end_block(self, blocks):
        if self.block_start is not None:
            shape = (self.block_start, self.last_rip, self.block_length)
            blocks[shape] = blocks.get(shape, 0) + 1
            self.block_start = None
