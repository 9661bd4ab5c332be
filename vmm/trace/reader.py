"""Reading a trace file: a stream of checked records, one line at a time, in constant memory.

Each line must be a JSON object the schema accepts, and the records must make a trace: the
header first; each event's page records right after it; its insn records in order, the
registers and addresses consistent from one to the next, and its leave; page contents
matching their sha256; the summary last, with the totals of what came before. Events of
different vCPUs may interleave (each vCPU traces one event at a time). The first thing wrong
stops the reading with BadInput("PATH:LINE: what is wrong"), except a last line cut short
(a killed run): the reader stops before it and says so in `truncated`.

Every record is yielded as a typed value (Header, Event, Page, Insn, Leave, Summary) that
keeps the line's JSON object in `record`; an Insn has the full registers after it (`regs`,
in GENERAL_REGISTERS order), rebuilt from its event's registers and what each step changed.
"""
import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from ..errors import BadInput
from ..x86.paging import PAGE_MASK
from ..x86.registers import GENERAL_REGISTERS, RIP
from .format import VERSION, schema

# A line holds one record; the longest a writer makes is an event on a 3 GiB watched set (one
# page reference per watched page), well under this.
MAX_LINE = 64 << 20
_REGISTER_INDEX = {name: index for index, name in enumerate(GENERAL_REGISTERS)}
_V1_TYPES = frozenset(("event", "page", "insn", "leave", "summary"))
# Event numbers are given in order but may be written out of order (each vCPU writes its own):
# at most this many may be seen above one still missing.
MAX_EVENTS_AHEAD = 1 << 20
_BITS_OF_MODE = {"real": (16,), "protected": (16, 32), "long": (16, 32, 64)}


@dataclass(slots=True)
class Header:
    line: int
    vmm_version: str
    image: str | None
    image_sha256: str | None
    watched: tuple        # ((start, end), ...)
    backend: str
    cpu_vendor: str
    started: str
    record: dict


@dataclass(slots=True)
class Event:
    line: int
    index: int
    vcpu: int
    backend: str
    gpa: int
    page: int
    gva: int | None
    rip: int
    mode: str
    bits: int
    decision: str
    regs: tuple           # the registers at the event, GENERAL_REGISTERS order
    pages: tuple          # ((gpa, sha256), ...)
    record: dict
    cpl: int | None = None    # None in traces of vmm versions that did not record it
    cr3: int | None = None


@dataclass(slots=True)
class Page:
    line: int
    sha256: str
    data: bytes
    record: dict


@dataclass(slots=True)
class Insn:
    line: int
    event: Event
    step: int
    rip: int
    gpa: int
    code: bytes
    regs: tuple           # the registers after the instruction, GENERAL_REGISTERS order
    changed: dict         # name -> value of what the record wrote (rip only for a jump)
    memory: tuple         # ((linear address, size, bytes or None), ...)
    record: dict

    def expanded(self):
        """The record made self-contained: its event, address, bytes, all the registers after
        it and the names of those it changed, its memory operands."""
        return {"type": "insn", "event": self.event.index, "step": self.step, "rip": f"{self.rip:#x}",
                "gpa": f"{self.gpa:#x}", "bytes": self.code.hex(),
                "regs": {name: f"{value:#x}" for name, value in zip(GENERAL_REGISTERS, self.regs)},
                "changed": [name for name in GENERAL_REGISTERS if name in self.changed],
                "mem": [[f"{address:#x}", size, None if data is None else data.hex()]
                        for address, size, data in self.memory]}


@dataclass(slots=True)
class Leave:
    line: int
    event: int
    reason: str
    detail: str | None
    rip: int
    instructions: int
    steps: int
    record: dict


@dataclass(slots=True)
class Layer:
    line: int
    index: int
    vcpu: int
    rip: int
    gpa: int
    region: int           # the dumped region's guest-physical address
    size: int
    file: str
    record: dict
    cpl: int | None = None    # None in traces of vmm versions that did not record it
    cr3: int | None = None
    gva: int | None = None    # a user-mode layer's region: its linear address (--unpack-user)


@dataclass(slots=True)
class Summary:
    line: int
    events: int
    instructions: int
    steps: int
    outcome: str
    exit_status: int | None
    message: str
    record: dict


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _decode(line):
    """The JSON value a line holds (ValueError when it holds anything else)."""
    text = line.decode("utf-8")
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return _DECODER.decode(text)    # leading blanks, or not JSON: decode() says which
    if end != len(text) and not text[end:].isspace():
        raise ValueError("more than one JSON value")
    return value


class TraceReader:
    """Iterate over it for the records of the trace at path (once). After the iteration:
    `complete` (the summary was read) and `truncated` ((line, message) or None)."""

    def __init__(self, path):
        self.path = str(path)
        self.header = None
        self.complete = False
        self.truncated = None
        self._check = schema().validator()

    def __iter__(self):
        try:
            trace = open(self.path, "rb")
        except FileNotFoundError:
            raise BadInput(f"{self.path}: no such file") from None
        except OSError as error:
            raise BadInput(f"{self.path}: {error.strerror}") from None
        with trace:
            yield from self._records(trace)

    def _fail(self, line, what):
        raise BadInput(f"{self.path}:{line}: {what}")

    # -- lines ---------------------------------------------------------------

    def _lines(self, trace):
        """(line number, JSON object) for each line; the last line, if cut short, ends the
        stream with `truncated` set."""
        number = 0
        while True:
            try:
                line = trace.readline(MAX_LINE + 1)
            except OSError as error:
                raise BadInput(f"{self.path}: {error.strerror}") from None
            if not line:
                if number == 0:
                    raise BadInput(f"{self.path}: empty, not a trace file")
                return
            number += 1
            if len(line) > MAX_LINE:
                self._fail(number, f"a line longer than {MAX_LINE:,} bytes: not a trace record")
            try:
                record = _decode(line)
            except (ValueError, RecursionError):
                if not line.endswith(b"\n") and number > 1:
                    self.truncated = (number, "the last line is cut short (the run was killed while writing it?)")
                    return
                self._fail(number, "not a JSON record")
            yield number, record

    # -- records -------------------------------------------------------------

    def _records(self, trace):
        lines = self._lines(trace)
        for number, record in lines:
            self.header = self._header(number, record)
            yield self.header
            break
        state = _State()
        handlers = {"event": self._event, "page": self._page, "insn": self._insn, "leave": self._leave,
                    "layer": self._layer, "summary": self._summary}
        check = self._check
        for number, record in lines:
            if type(record) is dict and record.get("type") == "header":
                self._fail(number, "a second header record")
            problem = check(record)
            if problem is not None:
                kind = record.get("type") if isinstance(record, dict) else None
                known = isinstance(kind, str) and (kind in handlers or kind == "header")
                self._fail(number, f"{kind} record: {problem}" if known else str(problem))
            kind = record["type"]
            if state.summary:
                self._fail(number, "a record after the summary")
            if state.awaited and kind != "page":
                self._fail(number, f"event {state.last_event} refers to page contents "
                                   f"{min(state.awaited)[:16]}... that no page record holds")
            yield handlers[kind](number, record, state)
        if state.awaited:   # the pages of the last event never came (a killed run)
            return
        self.complete = state.summary

    def _header(self, number, record):
        if not isinstance(record, dict):
            self._fail(number, "not a trace: the first record is not a JSON object")
        kind = record.get("type")
        if kind != "header":
            if isinstance(kind, str) and kind in _V1_TYPES:
                self._fail(number, f"a trace in format version 1 (no header record), which this vmm no longer "
                                   f"reads; it reads version {VERSION}: record the run again with `vmm run --trace`")
            self._fail(number, "not a trace: the first record is not a header record")
        version = record.get("version")
        if type(version) is int and version != VERSION:
            self._fail(number, f"a trace in format version {version}; this vmm reads version {VERSION}")
        problem = self._check(record)
        if problem is not None:
            self._fail(number, f"header record: {problem}")
        watched = tuple((int(start, 16), int(end, 16)) for start, end in record["watched"])
        for start, end in watched:
            if end <= start or start & ~PAGE_MASK or end & ~PAGE_MASK:
                self._fail(number, f"header record: watched range {start:#x}-{end:#x} is not a non-empty "
                                   f"page-aligned range")
        return Header(number, record["vmm_version"], record["image"], record["image_sha256"], watched,
                      record["backend"], record["cpu_vendor"], record["started"], record)

    def _event(self, number, record, state):
        index, vcpu = record["event"], record["vcpu"]
        if index < state.unseen or index in state.seen_ahead:
            self._fail(number, f"event {index} appears twice")
        if vcpu in state.by_vcpu:
            self._fail(number, f"event {index} on vCPU {vcpu} begins before event {state.by_vcpu[vcpu]}, "
                               f"the vCPU's previous one, has its leave record")
        if len(state.seen_ahead) >= MAX_EVENTS_AHEAD:
            self._fail(number, f"event {index}: more than {MAX_EVENTS_AHEAD} events after event {state.unseen}, "
                               f"which never came")
        if record["backend"] != self.header.backend:
            self._fail(number, f"event {index}: backend {record['backend']}, but the header says "
                               f"{self.header.backend}")
        if record["bits"] not in _BITS_OF_MODE[record["mode"]]:
            self._fail(number, f"event {index}: {record['bits']}-bit code in {record['mode']} mode")
        pages = tuple((int(gpa, 16), digest) for gpa, digest in record["pages"])
        seen = set()
        for gpa, _ in pages:
            if gpa & ~PAGE_MASK or gpa in seen:
                self._fail(number, f"event {index}: page {gpa:#x} is not page aligned or appears twice")
            seen.add(gpa)
        regs = record["regs"]
        values = tuple(int(regs[name], 16) for name in GENERAL_REGISTERS)
        gva = record["gva"]
        cr3 = record.get("cr3")
        if cr3 is not None and int(cr3, 16) != int(record["sregs"]["cr3"], 16):
            self._fail(number, f"event {index}: cr3 {cr3} is not the sregs' {record['sregs']['cr3']}")
        cpl = record.get("cpl")
        if cpl is not None and record["mode"] == "real" and cpl != 0:
            self._fail(number, f"event {index}: CPL {cpl} in real mode")
        event = Event(number, index, vcpu, record["backend"], int(record["gpa"], 16), int(record["page"], 16),
                      None if gva is None else int(gva, 16), int(record["rip"], 16), record["mode"],
                      record["bits"], record["decision"], values, pages, record, cpl,
                      None if cr3 is None else int(cr3, 16))
        state.begin(event)
        return event

    def _page(self, number, record, state):
        digest = record["sha256"]
        if digest not in state.awaited:
            where = "stored before" if digest in state.stored else "no event just before refers to it"
            self._fail(number, f"page record {digest[:16]}...: {where}")
        try:
            data = base64.b64decode(record["data"], validate=True)
        except (binascii.Error, ValueError):
            self._fail(number, "page record: data is not valid base64")
        if len(data) != record["size"]:
            self._fail(number, f"page record: data holds {len(data)} bytes, size says {record['size']}")
        if hashlib.sha256(data).hexdigest() != digest:
            self._fail(number, f"page record: the data does not match its sha256 {digest[:16]}...")
        state.awaited.discard(digest)
        state.stored.add(digest)
        return Page(number, digest, data, record)

    def _insn(self, number, record, state):
        index = record["event"]
        traced = state.open.get(index)
        if traced is None or traced.event.decision != "trace":
            self._fail(number, f"an insn record of event {index}, which is not an event being traced")
        step = record["step"]
        if step != traced.steps + 1:
            self._fail(number, f"event {index}: step {step} after step {traced.steps}")
        rip = int(record["rip"], 16)
        if rip != traced.next_rip:
            self._fail(number, f"event {index} step {step}: rip {rip:#x}, but the previous instruction "
                               f"went on at {traced.next_rip:#x}")
        code = bytes.fromhex(record["bytes"])
        gpa = record.get("gpa")
        if gpa is None:
            gpa = rip + traced.offset
        else:
            gpa = int(gpa, 16)
            traced.offset = gpa - rip
        values = traced.values
        changed = {}
        written = record.get("regs")
        if written:
            for name, text in written.items():
                values[_REGISTER_INDEX[name]] = changed[name] = int(text, 16)
        if "rip" not in changed:
            values[RIP] = rip + len(code)
        traced.next_rip = values[RIP]
        memory = ()
        if "mem" in record:
            memory = tuple(self._memory_operand(number, operand) for operand in record["mem"])
        traced.steps = step
        state.instructions += 1
        return Insn(number, traced.event, step, rip, gpa, code, tuple(values), changed, memory, record)

    def _memory_operand(self, number, operand):
        address, size, data = operand
        data = None if data is None else bytes.fromhex(data)
        if data is not None and len(data) != size:
            self._fail(number, f"insn record: memory operand at {address} holds {len(data)} bytes, size says {size}")
        return int(address, 16), size, data

    def _leave(self, number, record, state):
        index = record["event"]
        traced = state.open.get(index)
        if traced is None:
            self._fail(number, f"a leave record for event {index}, which is not an event being traced")
        if record["instructions"] != traced.steps:
            self._fail(number, f"event {index} left after {record['instructions']} instructions, but "
                               f"{traced.steps} insn records came before")
        if record["steps"] < record["instructions"]:
            self._fail(number, f"event {index}: {record['steps']} steps, fewer than its "
                               f"{record['instructions']} instructions")
        state.end(traced.event)
        return Leave(number, index, record["reason"], record.get("detail"), int(record["rip"], 16),
                     record["instructions"], record["steps"], record)

    def _layer(self, number, record, state):
        entry, region = record["entry"], record["region"]
        gva = region.get("gva")
        return Layer(number, record["layer"], record["vcpu"], int(entry["rip"], 16), int(entry["gpa"], 16),
                     int(region["gpa"], 16), region["size"], region["file"], record, record.get("cpl"),
                     int(record["cr3"], 16), None if gva is None else int(gva, 16))

    def _summary(self, number, record, state):
        if state.open:
            self._fail(number, f"the summary comes before event {min(state.open)} has its leave record")
        if (record["events"], record["instructions"]) != (state.events, state.instructions):
            self._fail(number, f"the summary counts {record['events']} events and {record['instructions']} "
                               f"instructions, the trace holds {state.events} and {state.instructions}")
        if state.seen_ahead:
            self._fail(number, f"event {state.unseen} is missing")
        if record["backend"] != self.header.backend:
            self._fail(number, f"the summary's backend {record['backend']} is not the header's {self.header.backend}")
        state.summary = True
        return Summary(number, record["events"], record["instructions"], record["steps"], record["outcome"],
                       record["exit_status"], record["message"], record)


class _Traced:
    """An event whose insn and leave records may still come, and where its next one starts."""

    __slots__ = ("event", "steps", "values", "next_rip", "offset")

    def __init__(self, event):
        self.event = event
        self.steps = 0
        self.values = list(event.regs)       # the registers after the previous record
        self.next_rip = event.rip
        self.offset = event.gpa - event.rip


class _State:
    """What the records so far imply about the next one."""

    def __init__(self):
        self.events = self.instructions = 0
        self.open = {}               # event index -> _Traced, until its leave
        self.by_vcpu = {}            # vCPU -> the index of its open event
        self.unseen = 1              # the lowest event number not seen yet
        self.seen_ahead = set()      # the event numbers seen above it
        self.last_event = None       # the number of the last event record
        self.awaited = set()         # page contents it refers to, not yet stored
        self.stored = set()
        self.summary = False

    def begin(self, event):
        self.events += 1
        index = event.index
        if index == self.unseen:
            self.unseen += 1
            while self.unseen in self.seen_ahead:
                self.seen_ahead.remove(self.unseen)
                self.unseen += 1
        else:
            self.seen_ahead.add(index)
        self.open[index] = _Traced(event)
        self.by_vcpu[event.vcpu] = index
        self.last_event = index
        self.awaited = {digest for _, digest in event.pages if digest not in self.stored}

    def end(self, event):
        del self.open[event.index]
        del self.by_vcpu[event.vcpu]


def read_trace(path):
    """Every record of a trace, checked, as a list of dicts: for tests and small scripts (the
    vmm trace commands stream with TraceReader instead). Records are as in the file, but for
    insn records, made self-contained (Insn.expanded)."""
    reader = TraceReader(path)
    records = [record.expanded() if type(record) is Insn else record.record for record in reader]
    if reader.truncated:
        line, what = reader.truncated
        raise BadInput(f"{reader.path}:{line}: {what}")
    return records


def page_bytes(record):
    """The contents a page record holds."""
    return base64.b64decode(record["data"])
