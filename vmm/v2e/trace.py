"""The V2E trace file: JSON Lines, one record per line, flushed as written (insn records
in groups of 64, when recording stops, and with the next record of another type).

Records ("type" field):
  event    an entry into the watched pages: event number, vCPU, backend, gpa, gva, rip,
           CPU mode, general registers ("regs"), segment/control registers ("sregs"),
           and what the analysis decided ("decision": trace, skip or stop)
  page     a watched page's contents at that event (base64 "data", "sha256")
  insn     one traced instruction: "step", its "rip"/"gpa", its "bytes" (hex),
           and the general registers after it ("regs")
  leave    the end of an event: why ("reason"), where execution went ("rip"), and
           how many instructions were traced and stepped
  summary  the last record: counts, watched ranges, backend, and how the run ended
Addresses and register values are hex strings ("0x1f"), so 64-bit values survive any
JSON reader; counts are numbers.
"""
import base64
import hashlib
import json
import threading

from ..errors import BadInput
from ..x86.registers import GENERAL_REGISTERS

FORMAT_VERSION = 1
# An insn record as json.dumps(record, separators=(",", ":")) writes it, as a %-template:
# one per traced instruction, where json.dumps and hexify would cost more than the step.
_INSN_LINE = ('{"type":"insn","event":%d,"step":%d,"rip":"%#x","gpa":"%#x","bytes":"%s","regs":{'
              + ",".join(f'"{name}":"%#x"' for name in GENERAL_REGISTERS) + "}}\n")
# insn records wait in memory in groups of this many lines (about 30 KiB).
PENDING_INSN_LINES = 64


def hexify(mapping):
    return {name: f"{value:#x}" for name, value in mapping.items()}


def _hexify_nested(values):
    return {name: hexify(value) if isinstance(value, dict) else f"{value:#x}" for name, value in values.items()}


class TraceWriter:
    """Appends records to a JSON Lines file; safe to call from several vCPU threads. It is the
    engine's JSONL recorder: event(), instruction() and leave() take what the engine reports."""

    def __init__(self, path):
        self.path = path
        try:
            self._file = open(path, "w", encoding="ascii")
        except OSError as error:
            raise BadInput(f"{path}: cannot write the trace: {error.strerror}") from None
        self._lock = threading.Lock()
        self._pending = []   # insn lines not yet handed to the file

    def write(self, record):
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._pending.append(line)
            self._write_pending()

    def event(self, event, decision, pages):
        """An event record, then a page record for each (gpa, contents) in `pages`."""
        self.write({
            "type": "event", "event": event.index, "vcpu": event.vcpu_id, "backend": event.backend,
            "page": f"{event.page:#x}", "gpa": f"{event.gpa:#x}",
            "gva": None if event.gva is None else f"{event.gva:#x}",
            "rip": f"{event.rip:#x}", "mode": event.mode, "decision": decision.value,
            "regs": hexify(event.regs), "sregs": _hexify_nested(event.sregs)})
        for gpa, data in pages:
            self.page(event.index, gpa, data)

    def instruction(self, event, step, rip, gpa, code, values):
        """An insn record; values are the registers in GENERAL_REGISTERS order. Unlike the other
        records it is written in groups: flush(), the next other record or close() writes it."""
        line = _INSN_LINE % ((event.index, step, rip, gpa, code.hex()) + values)
        with self._lock:
            self._pending.append(line)
            if len(self._pending) >= PENDING_INSN_LINES:
                self._write_pending()

    def leave(self, event, reason, rip, instructions, steps, detail=None):
        """Why the event ended: branch-out, fault, interrupt, halt, budget, analysis-stop or
        run-ended, with a detail (the exception's name, the vector) when there is one."""
        record = {"type": "leave", "event": event.index, "reason": reason, "rip": f"{rip:#x}",
                  "instructions": instructions, "steps": steps}
        if detail is not None:
            record["detail"] = detail
        self.write(record)

    def flush(self):
        with self._lock:
            self._write_pending()

    def _write_pending(self):
        """Write and flush the waiting lines (the lock is held)."""
        if self._file is not None:
            self._file.write("".join(self._pending))
            self._file.flush()
        self._pending.clear()

    def page(self, event, gpa, data):
        self.write({"type": "page", "event": event, "gpa": f"{gpa:#x}", "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "encoding": "base64", "data": base64.b64encode(data).decode("ascii")})

    def annotate(self, record):
        self.write(record)

    def close(self, summary):
        """Write the summary as the last record and close the file (later calls do nothing)."""
        self.write(dict(summary, type="summary", version=FORMAT_VERSION))
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_trace(path):
    """The records of a trace file as dicts; BadInput names the first bad line."""
    records = []
    try:
        with open(path, encoding="ascii") as trace:
            for number, line in enumerate(trace, 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    raise BadInput(f"{path}:{number}: not a JSON record") from None
                if not isinstance(record, dict) or "type" not in record:
                    raise BadInput(f"{path}:{number}: a record without a type")
                records.append(record)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a trace file (not ASCII text)") from None
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror}") from None
    if not records:
        raise BadInput(f"{path}: empty, not a trace file")
    return records


def page_bytes(record):
    """The contents of a page record."""
    return base64.b64decode(record["data"])


# -- vmm trace show --------------------------------------------------------------

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


def plural(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_trace(records, max_instructions=None):
    """The readable form of a trace, as a list of lines."""
    lines = []
    previous = {}
    shown = {}
    for record in records:
        kind = record["type"]
        if kind == "event":
            previous = dict(record["regs"])
            gva = record.get("gva")
            where = f"gva {gva}" if gva is not None else "gva unknown"
            lines.append(f"event {record['event']}: vCPU {record['vcpu']} executes watched page "
                         f"{record['page']} at rip {record['rip']} (gpa {record['gpa']}, {where}; "
                         f"{record['mode']} mode, {record['backend']} backend) -> {record['decision']}")
            regs = record["regs"]
            names = [name for name in GENERAL_REGISTERS if name in regs]
            for row in range(0, len(names), 6):
                lines.append("  " + " ".join(f"{name}={regs[name]}" for name in names[row:row + 6]))
        elif kind == "page":
            data = page_bytes(record)
            lines.append(f"  page {record['gpa']}: {record['size']} bytes, sha256 {record['sha256'][:16]}...")
            lines.extend(_hexdump(data, int(record["gpa"], 16)))
        elif kind == "insn":
            count = shown.get(record["event"], 0)
            shown[record["event"]] = count + 1
            if max_instructions is not None and count >= max_instructions:
                if count == max_instructions:
                    lines.append("  ...")
                previous = dict(record["regs"])
                continue
            changed = [f"{name}={value}" for name, value in record["regs"].items()
                       if name != "rip" and previous.get(name) != value]
            previous = dict(record["regs"])
            code = bytes.fromhex(record["bytes"]).hex(" ")
            lines.append(f"  #{record['step']:<5} {record['rip']:>10}  {code:<24} {' '.join(changed)}".rstrip())
        elif kind == "leave":
            lines.append(f"  leave: {record['reason']} at rip {record['rip']} after "
                         f"{record['instructions']} traced of {record['steps']} stepped instructions")
        elif kind == "summary":
            ranges = ", ".join(f"{start}-{end}" for start, end in record["watched"])
            lines.append(f"summary: {plural(record['events'], 'event')}, "
                         f"{plural(record['instructions'], 'instruction')} traced, "
                         f"{record['backend']} backend, watched {ranges}; run ended: {record['outcome']} "
                         f"(exit status {record['exit_status']}): {record['message']}")
    if not records or records[-1]["type"] != "summary":
        lines.append("(no summary: the trace is incomplete)")
    return lines
