"""The trace writer: the V2E engine's JSON Lines recorder (format 2, docs/trace-format.md).

The header record is written and flushed when the writer is made, so even the trace of a
killed run says what it is. Page contents are written once per distinct sha256 and events
refer to them. An insn record holds only what its instruction changed. With the C helper
(vmm.fastpath) its line is made there, from the registers before and after packed as bytes;
else from an f-string compiled for the set of registers that changed (found by comparing the
register tuples in C, with map), so a step costs no per-register Python work. Both write the
same bytes.

Every vCPU may trace an event at the same time, each from its own thread: each event keeps
its own registers to compare with, and insn lines go to one shared list without a lock
(list.append, and the flush's slice and del of what it wrote, are each one step under the
GIL), handed to the file in groups; the other records, flush() and close() write what waits
first, under the lock.
"""
import base64
import hashlib
import json
import struct
import threading
from operator import ne
from types import SimpleNamespace

from .. import fastpath
from ..errors import BadInput
from ..x86.mode import cpu_mode
from ..x86.registers import GENERAL_REGISTERS, RIP
from .format import FORMAT, VERSION, hex_or_none

# insn lines wait in memory in groups of this many (about 25 KiB on a register-only loop).
PENDING_INSN_LINES = 256

# With the C helper, the common insn line (no gpa or mem field) comes from vmm_insn_line, which
# reads the registers packed like this, with these names.
_REGISTERS = struct.Struct(f"<{len(GENERAL_REGISTERS)}Q")
_LINE_ROOM = 1024   # each event's line buffer: more than the longest such line
_insn_line = None
if fastpath.lib is not None:
    _NAME_STRINGS = [fastpath.ffi.new("char[]", name.encode()) for name in GENERAL_REGISTERS]
    if fastpath.lib.vmm_insn_setup(fastpath.ffi.new("char *[]", _NAME_STRINGS), len(GENERAL_REGISTERS), RIP) == 0:
        _insn_line = fastpath.lib.vmm_insn_line
        _unpack = fastpath.ffi.unpack


def _insn_formatter(mask, falls_through, fields=False):
    """An insn line whose changed registers are the non-zero bytes of mask (GENERAL_REGISTERS
    order), as a function (the line's start up to its step, step, rip, [the gpa field,] bytes
    in hex, registers after[, the mem field]) -> line, the bracketed ones when `fields`: an
    f-string compiled for that mask, which reads the changed values by index and writes them
    with hex() (no tuple built, no template or format spec parsed per line). When the
    instruction falls through, the new rip is implied (rip + length) and not written. The
    source is made of the register names only."""
    written = ['"%s":"{h(values[%d])}"' % (name, index)
               for index, (name, changed) in enumerate(zip(GENERAL_REGISTERS, mask))
               if changed and not (name == "rip" and falls_through)]
    registers = ',"regs":{{' + ",".join(written) + "}}" if written else ""
    if fields:
        return eval("lambda start, step, rip, gpa, code, values, memory, h=hex: "   # noqa: S307 - constants only
                    "f'{start}{step},\"rip\":\"{h(rip)}\"{gpa},\"bytes\":\"{code}\"" + registers
                    + "{memory}}}\\n'")
    return eval("lambda start, step, rip, code, values, h=hex: "   # noqa: S307 - constants only
                "f'{start}{step},\"rip\":\"{h(rip)}\",\"bytes\":\"{code}\"" + registers + "}}\\n'")


def _code_bits(sregs):
    """The code size (16, 32, 64) from the special registers as the event carries them."""
    return cpu_mode(SimpleNamespace(cr0=sregs["cr0"], efer=sregs["efer"], cs=SimpleNamespace(**sregs["cs"])))[1]


def _hex_tree(values):
    return {name: _hex_tree(value) if isinstance(value, dict) else f"{value:#x}" for name, value in values.items()}


def _memory_field(memory):
    """The mem field of an insn line: (linear address, size, bytes after or None) per operand."""
    return ',"mem":' + json.dumps(
        [[f"{address:#x}", size, None if data is None else data.hex()] for address, size, data in memory],
        separators=(",", ":"))


class _EventState:
    """What an event's next insn record is written against: the registers after the previous
    record (a tuple, or packed for the C helper) and its gpa - rip; and the start of its insn
    lines, up to the step (and the C helper's line buffer)."""

    __slots__ = ("previous", "packed", "offset", "start", "start_bytes", "line")

    def __init__(self, previous, offset, index):
        self.previous, self.offset = previous, offset
        self.start = f'{{"type":"insn","event":{index},"step":'
        self.packed = self.start_bytes = self.line = None
        if _insn_line is not None:
            self.packed = _REGISTERS.pack(*previous)
            self.start_bytes = self.start.encode()
            self.line = fastpath.ffi.new("char[]", _LINE_ROOM)


class TraceWriter:
    """Writes one trace file. The engine calls event() when an event starts, then from the
    same vCPU's thread instruction() for each traced instruction and leave() at its end, and
    close(summary) when the run is over; flush() makes what is recorded visible.

    header: vmm_version, image (path or None), image_sha256 (or None), watched [(start, end)]
    as numbers, backend, cpu_vendor and started (ISO 8601)."""

    def __init__(self, path, header):
        self.path = path
        try:
            self._file = open(path, "wb")
        except OSError as error:
            raise BadInput(f"{path}: cannot write the trace: {error.strerror}") from None
        self._lock = threading.Lock()
        self._pending = []          # lines not yet handed to the file (always this list)
        self._stored = set()        # sha256 of the page contents already written
        self._events = {}           # event index -> _EventState, until its leave
        # The hot path's line formatters by mask: [jumps, falls through] (indexed by a bool);
        # those with the gpa and mem fields, by (mask, falls through).
        self._formatters = ({}, {})
        self._field_formatters = {}
        self._write({"type": "header", "format": FORMAT, "version": VERSION,
                     "vmm_version": header["vmm_version"], "image": header["image"],
                     "image_sha256": header["image_sha256"],
                     "watched": [[f"{start:#x}", f"{end:#x}"] for start, end in header["watched"]],
                     "backend": header["backend"], "cpu_vendor": header["cpu_vendor"], "started": header["started"]})

    # -- the recorder interface ----------------------------------------------

    def event(self, event, decision, pages):
        """The event record (the full register state), then a page record for each of the
        watched pages' contents (gpa, bytes) not written before."""
        digests = [(gpa, hashlib.sha256(data).hexdigest(), data) for gpa, data in pages]
        record = {
            "type": "event", "event": event.index, "vcpu": event.vcpu_id, "backend": event.backend,
            "gpa": f"{event.gpa:#x}", "page": f"{event.page:#x}", "gva": hex_or_none(event.gva),
            "rip": f"{event.rip:#x}", "mode": event.mode, "bits": _code_bits(event.sregs),
            "cpl": event.cpl, "cr3": f"{event.cr3:#x}", "decision": decision.value, "regs": _hex_tree(event.regs), "sregs": _hex_tree(event.sregs),
            "pages": [[f"{gpa:#x}", digest] for gpa, digest, _ in digests]}
        self._events[event.index] = _EventState(tuple(event.regs[name] for name in GENERAL_REGISTERS),
                                                event.gpa - event.rip, event.index)
        with self._lock:   # which contents are new, and the records in order, decided together
            new = []
            for _, digest, data in digests:
                if digest not in self._stored:
                    self._stored.add(digest)
                    new.append({"type": "page", "sha256": digest, "size": len(data),
                                "data": base64.b64encode(data).decode("ascii")})
            self._write_locked(record, *new)

    def instruction(self, event, index, rip, gpa, code, values, memory=()):
        """An insn record; values: the registers after it, in GENERAL_REGISTERS order; memory:
        (linear address, size, bytes after) per memory operand. The hot path: one template
        lookup and one %-format."""
        state = self._events[event.index]
        if _insn_line is not None and gpa - rip == state.offset and not memory:
            packed = _REGISTERS.pack(*values)
            start = state.start_bytes
            line = _unpack(state.line, _insn_line(state.line, _LINE_ROOM, start, len(start), index, rip, code,
                                                  len(code), state.packed, packed))
            state.previous, state.packed = values, packed
        else:
            mask = bytes(map(ne, values, state.previous))
            state.previous = values
            if _insn_line is not None:
                state.packed = _REGISTERS.pack(*values)
            formatter = self._formatters[values[RIP] == rip + len(code)].get(mask)
            if formatter is None or gpa - rip != state.offset or memory:
                line = self._uncommon_line(state, index, rip, gpa, code, values, memory, mask)
            else:
                line = formatter(state.start, index, rip, code.hex(), values)
            line = line.encode()
        pending = self._pending
        pending.append(line)
        if len(pending) >= PENDING_INSN_LINES:
            with self._lock:
                self._write_pending()

    def leave(self, event, reason, rip, instructions, steps, detail=None):
        record = {"type": "leave", "event": event.index, "reason": reason}
        if detail is not None:
            record["detail"] = detail
        record.update(rip=f"{rip:#x}", instructions=instructions, steps=steps)
        self._events.pop(event.index, None)
        self._write(record)

    def annotate(self, record):
        """A record of another analysis, in order with the rest (a layer of vmm run --unpack)."""
        self._write(record)

    def flush(self):
        with self._lock:
            self._write_pending()

    def close(self, summary):
        """Write the summary as the last record and close the file (later calls do nothing)."""
        with self._lock:
            if self._file is None:
                return
            self._write_locked({"type": "summary", **summary})
            self._file.close()
            self._file = None

    # -- the rest --------------------------------------------------------------

    def _uncommon_line(self, state, index, rip, gpa, code, values, memory, mask):
        """An insn line off the hot path: a new set of changed registers, a new gpa - rip, memory
        operands, or a branch to itself (a new rip equal to the old one: written, not implied)."""
        falls_through = values[RIP] == rip + len(code)
        if not mask[RIP] and not falls_through:
            mask = mask[:RIP] + b"\1" + mask[RIP + 1:]
        elif mask not in self._formatters[falls_through]:
            self._formatters[falls_through][mask] = _insn_formatter(mask, falls_through)
        gpa_field = ""
        if gpa - rip != state.offset:
            state.offset = gpa - rip
            gpa_field = f',"gpa":"{gpa:#x}"'
        memory_field = _memory_field(memory) if memory else ""
        key = (mask, falls_through)
        formatter = self._field_formatters.get(key)
        if formatter is None:
            formatter = self._field_formatters[key] = _insn_formatter(mask, falls_through, fields=True)
        return formatter(state.start, index, rip, gpa_field, code.hex(), values, memory_field)

    def _write(self, *records):
        with self._lock:
            self._write_locked(*records)

    def _write_locked(self, *records):
        # One extend of a list: no other thread's line can come between these records.
        self._pending.extend([(json.dumps(record, separators=(",", ":")) + "\n").encode() for record in records])
        self._write_pending()

    def _write_pending(self):
        """Write and flush the waiting lines (the lock is held). Lines other threads append
        meanwhile stay for the next time."""
        pending = self._pending
        count = len(pending)
        if self._file is not None and count:
            self._file.write(b"".join(pending[:count]))
            self._file.flush()
        del pending[:count]
