"""The V2E engine: trap execution of watched pages, trace it instruction by instruction,
then let the guest go back to hardware speed.

It hooks into each vCPU's RunLoop by replacing one handler-table entry: the
backend's trap exit (KVM_EXIT_INTERNAL_ERROR on stock KVM, KVM_EXIT_EMULATE
with the patch).

On an event: record it (registers, every watched page), ask the analyst's
callback what to do, disarm the trap and single-step. While a vCPU traces,
the engine runs it in its own loop: each DEBUG exit is one executed
instruction, with the registers KVM copies into kvm_run (KVM_CAP_SYNC_REGS);
every other exit (I/O, MMIO, HLT) goes to the vCPU's ordinary handlers. When
RIP leaves the watched pages, single-step is switched off, the trap re-armed
and the vCPU handed back to RunLoop, so the guest runs at full speed until
the next entry.
"""
import enum
import functools
import threading

import kvm_abi as abi

from .. import exits
from ..errors import EXIT_OK, VmmError
from ..memory import PAGE_SIZE
from ..runloop import Outcome, kvm_error
from ..vcpu import REG_NAMES as GENERAL_REGISTERS
from . import insn
from ..report import rip_linear
from .backends import CR0_PG, linear_to_physical, select_backend
from .pause import PauseOthers
from .trace import TraceWriter, hexify
from .watch import PAGE_MASK, WatchSet

DEFAULT_MAX_STEPS = 100_000
RIP = GENERAL_REGISTERS.index("rip")
_DEBUG, _IO, _MMIO = abi.KVM_EXIT_DEBUG, abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO
# Decoded instructions are memoised by their bytes, and page translations by (CR3, linear
# page); a guest that generates code or aliases pages without end only makes a table start over.
MAX_MEMOISED_INSTRUCTIONS = 1 << 14
MAX_CACHED_PAGES = 1 << 12
_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
_SEGMENT_FIELDS = ("selector", "base", "limit", "type", "present", "dpl", "db", "s", "l", "g")
_CONTROL = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")
HLT_OPCODE = 0xF4
# Instructions after which CS, the control registers or EFER may differ: the tracer
# re-reads the special registers after them (and after any unexpected jump of RIP, e.g.
# an exception), and otherwise keeps the ones it has.
_MODE_CHANGERS = frozenset((0x9A, 0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xEA, 0xF1, 0xFF,
                            0x0F00, 0x0F01, 0x0F05, 0x0F06, 0x0F07, 0x0F22, 0x0F30, 0x0F34, 0x0F35, 0x0FAA))
_NEAR_BRANCHES = frozenset((*range(0x70, 0x80), 0xC2, 0xC3, 0xE0, 0xE1, 0xE2, 0xE3, 0xE8, 0xE9, 0xEB,
                            *range(0x0F80, 0x0F90)))
# What the tracer does after an instruction, by kind: nothing special (RIP moved to a new
# place unexpectedly: an exception, so re-read the special registers), nothing for a near
# branch, re-read the special registers after a mode changer (or an undecodable
# instruction), halt after HLT.
_ORDINARY, _NEAR_BRANCH, _MODE_CHANGE, _HLT = range(4)
CR0_PE = 1
EFER_LMA = 1 << 10


class Decision(enum.Enum):
    """What the analysis wants for an event (or, from an instruction callback, from now on)."""
    TRACE = "trace"   # record every instruction until execution leaves the watched pages
    SKIP = "skip"     # let the watched code run unrecorded; the trap re-arms when it leaves
    STOP = "stop"     # stop the guest now


def cpu_mode(sregs):
    """'real', 'protected' or 'long', and the code size in bits."""
    if not sregs.cr0 & CR0_PE:
        return "real", 16
    if sregs.efer & EFER_LMA and sregs.cs.l:
        return "long", 64
    return ("long" if sregs.efer & EFER_LMA else "protected"), (32 if sregs.cs.db else 16)


def register_values(regs):
    return {name: getattr(regs, name) for name in GENERAL_REGISTERS}


def _sync_regs_supported(machine):
    return bool(machine.kvm.check_extension(abi.KVM_CAP_SYNC_REGS) & abi.KVM_SYNC_X86_REGS)


def special_register_values(sregs):
    values = {name: {field: getattr(getattr(sregs, name), field) for field in _SEGMENT_FIELDS}
              for name in _SEGMENTS}
    for table in ("gdt", "idt"):
        values[table] = {"base": getattr(sregs, table).base, "limit": getattr(sregs, table).limit}
    values.update({name: getattr(sregs, name) for name in _CONTROL})
    return values


class EmulateEvent:
    """One entry into the watched pages, whichever backend trapped it."""

    __slots__ = ("index", "vcpu_id", "backend", "gpa", "gva", "rip", "mode", "regs", "sregs")

    def __init__(self, index, vcpu_id, backend, gpa, gva, rip, mode, regs, sregs):
        self.index, self.vcpu_id, self.backend = index, vcpu_id, backend
        self.gpa, self.gva, self.rip, self.mode = gpa, gva, rip, mode
        self.regs, self.sregs = regs, sregs

    @property
    def page(self):
        return self.gpa & ~(PAGE_SIZE - 1)

    def __repr__(self):
        gva = "None" if self.gva is None else f"{self.gva:#x}"
        return (f"EmulateEvent(#{self.index}, vcpu={self.vcpu_id}, backend={self.backend}, "
                f"gpa={self.gpa:#x}, gva={gva}, rip={self.rip:#x})")


class Step:
    """One traced instruction: where it was, its bytes, and the registers after it
    (values: a tuple in GENERAL_REGISTERS order; regs: the same as a dict)."""

    __slots__ = ("event", "index", "rip", "gpa", "code", "values")

    def __init__(self, event, index, rip, gpa, code, values):
        self.event, self.index, self.rip, self.gpa, self.code, self.values = event, index, rip, gpa, code, values

    @property
    def regs(self):
        return dict(zip(GENERAL_REGISTERS, self.values))

    def __repr__(self):
        return f"Step(#{self.event.index}.{self.index}, rip={self.rip:#x}, {self.code.hex(' ')})"


class _Trace:
    """A vCPU's progress through watched code: the instruction about to execute, and what
    the tracer keeps between steps (the special registers, the current code page)."""

    __slots__ = ("event", "record", "steps", "traced", "rip", "gpa", "code", "next_rip", "kind", "self_branch",
                 "sregs", "bits", "flat_rip", "cs_base", "paging", "decoded",
                 "pages", "linear_page", "page_gpa", "page_view")

    def __init__(self, event, record):
        self.event, self.record = event, record
        self.steps = self.traced = 0
        # The instruction at rip: its bytes, where it goes when it does not branch, its kind,
        # and whether it is a branch to itself (which makes no progress yet executes).
        self.rip = self.gpa = self.code = self.next_rip = self.kind = self.self_branch = None
        # (CR3, linear page) -> physical page. A stale entry after the guest edits its page
        # tables only ends or prolongs the trace; the trap catches the next real fetch.
        self.pages = {}
        # The watched page RIP is in: its linear and physical address and a view of its RAM.
        self.linear_page = self.page_gpa = self.page_view = None


class V2E:
    """Watch guest-physical ranges of a machine and analyse every execution of them.

    on_event(event) -> Decision or None (None: TRACE); on_instruction(step) -> Decision or
    None, where SKIP stops recording this event and STOP stops the guest. Use it as a
    context manager, or call finish(outcome) after Machine.run and close().
    """

    def __init__(self, machine, ranges, backend="auto", trace_path=None, max_steps=DEFAULT_MAX_STEPS,
                 on_event=None, on_instruction=None):
        if max_steps < 1:
            raise VmmError(f"the instruction budget must be at least 1, got {max_steps}")
        real_mode = not machine.vcpus[0].get_sregs().cr0 & CR0_PE
        self.machine = machine
        self.watch = WatchSet(ranges, machine.memory, "real" if real_mode else "protected")
        self.backend = select_backend(backend, machine, self.watch)
        self.max_steps = max_steps
        self.on_event = on_event
        self.on_instruction = on_instruction
        self.events = self.steps = 0
        self._traced = 0            # instructions recorded by traces that ended
        self._decoded = {16: {}, 32: {}, 64: {}}   # bits -> {code bytes: (code, opcode)}
        # With KVM_CAP_SYNC_REGS a step's registers come with the exit, without an ioctl.
        self._sync_regs = _sync_regs_supported(machine)
        self._lock = threading.Lock()
        self._pause = PauseOthers(machine)   # one vCPU traces at a time, the others wait
        self._active = {}        # vCPU id -> _Trace
        self._previous = {}      # (vCPU id, exit reason) -> the handler the engine replaced
        self._writer = TraceWriter(trace_path) if trace_path else None
        self._started = False
        try:
            self.backend.start()
            self._started = True
            for loop in machine.loops:
                self._hook(loop, self.backend.exit_reason, self._on_trap)
                self._hook(loop, abi.KVM_EXIT_INTR, self._on_interrupt)
        except BaseException:
            self.close()
            raise

    def _hook(self, loop, reason, method):
        self._previous[loop.vcpu.id, reason] = loop.handlers.get(reason, loop._fatal)
        loop.handlers[reason] = functools.partial(method, loop)

    def _pass_on(self, loop, exit):
        self._previous[loop.vcpu.id, exit.reason](exit)

    @property
    def instructions(self):
        """Instructions recorded so far, by every event."""
        with self._lock:
            return self._traced + sum(trace.traced for trace in self._active.values())

    # -- the trap ------------------------------------------------------------

    def _on_trap(self, loop, exit):
        vcpu = loop.vcpu
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
        target = self.backend.fetch_target(exit, vcpu, regs, sregs)
        if target is None:
            return self._pass_on(loop, exit)
        gpa, gva = target
        if vcpu.id in self._active:   # the trap is disarmed while this vCPU traces
            return self._pass_on(loop, exit)
        if gpa not in self.watch:
            self.machine.stop(kvm_error(f"vCPU {vcpu.id}: the {self.backend.name} backend reported "
                                        f"a fetch from gpa {gpa:#x}, which is not watched"))
            return
        # The trap is disarmed VM-wide while this vCPU traces: the others wait meanwhile, so
        # none runs watched code unseen. (While waiting, this vCPU's registers stay as they are.)
        if not self._pause.pause(vcpu):
            return   # the machine is stopping
        try:
            self._event(loop, regs, sregs, gpa, gva)
        except BaseException:
            self._pause.resume()
            raise

    def _event(self, loop, regs, sregs, gpa, gva):
        """Record the event, ask the analysis, then trace (the other vCPUs are paused)."""
        vcpu = loop.vcpu
        with self._lock:
            self.events += 1
            index = self.events
        mode = cpu_mode(sregs)[0]
        event = EmulateEvent(index, vcpu.id, self.backend.name, gpa, gva, regs.rip, mode,
                             register_values(regs), special_register_values(sregs))
        decision = (self.on_event(event) if self.on_event else None) or Decision.TRACE
        if self._writer:
            self._writer.write({
                "type": "event", "event": index, "vcpu": vcpu.id, "backend": self.backend.name,
                "page": f"{event.page:#x}", "gpa": f"{gpa:#x}", "gva": None if gva is None else f"{gva:#x}",
                "rip": f"{regs.rip:#x}", "mode": mode, "decision": decision.value,
                "regs": hexify(event.regs), "sregs": _hexify_nested(event.sregs)})
            for page in sorted(self.watch.pages):
                self._writer.page(index, page, self.machine.memory.read(page, PAGE_SIZE))
        if decision is Decision.STOP:
            self._stop_guest(event)
            self._pause.resume()
            return
        trace = _Trace(event, decision is Decision.TRACE)
        self._load_sregs(trace, sregs)
        linear = rip_linear(regs, sregs)
        trace.linear_page, trace.page_gpa = linear & PAGE_MASK, gpa & PAGE_MASK
        trace.page_view = self.machine.memory.view(trace.page_gpa, PAGE_SIZE)
        self._next_instruction(trace, vcpu, regs.rip, linear)
        self._begin(loop, trace)
        self._single_step(loop, trace)

    def _on_interrupt(self, loop, exit):
        """A kick: this vCPU waits here while another traces."""
        self._pause.wait_while_paused(loop.vcpu)
        self._pass_on(loop, exit)

    def _stop_guest(self, event):
        self.machine.stop(Outcome("analysis-stop", EXIT_OK,
                                  f"the analysis stopped the guest at event {event.index} (rip {event.rip:#x})"))

    # -- single-stepping -----------------------------------------------------

    def _load_sregs(self, trace, sregs):
        """Take new special registers: CPU mode, CS base, paging; forget the code page."""
        trace.sregs = sregs
        trace.bits = cpu_mode(sregs)[1]
        trace.flat_rip = trace.bits == 64
        trace.cs_base = sregs.cs.base
        trace.paging = bool(sregs.cr0 & CR0_PG)
        trace.decoded = self._decoded[trace.bits]
        trace.linear_page = trace.page_view = None

    def _next_instruction(self, trace, vcpu, rip, linear):
        """Remember the instruction at RIP (linear, in trace's code page) before it executes."""
        offset = linear & ~PAGE_MASK
        trace.rip, trace.gpa = rip, trace.page_gpa | offset
        if offset <= PAGE_SIZE - insn.MAX_LENGTH:
            code = trace.page_view[offset:offset + insn.MAX_LENGTH].tobytes()
        else:
            code = self._code_across_pages(trace, vcpu, linear)
        decoded = trace.decoded.get(code) or self._decode(trace, code)
        trace.code, length, trace.kind, trace.self_branch = decoded
        trace.next_rip = rip + length

    def _decode(self, trace, code):
        """(instruction bytes, length, kind, branches to itself) of the code at RIP, memoised
        by the 15 bytes read there, so a loop is decoded once and rewritten code again."""
        length_and_opcode = insn.decode(code, trace.bits)
        if length_and_opcode is None:
            decoded = (code, len(code), _MODE_CHANGE, False)
        else:
            length, opcode = length_and_opcode
            kind = (_HLT if opcode == HLT_OPCODE else _MODE_CHANGE if opcode in _MODE_CHANGERS
                    else _NEAR_BRANCH if opcode in _NEAR_BRANCHES else _ORDINARY)
            decoded = (code[:length], length, kind, insn.branches_to_itself(code[:length], opcode, trace.bits))
        if len(trace.decoded) >= MAX_MEMOISED_INSTRUCTIONS:
            trace.decoded.clear()
        trace.decoded[code] = decoded
        return decoded

    def _code_across_pages(self, trace, vcpu, linear):
        """Up to 15 bytes at linear, whose page ends within 15 bytes: the rest comes from the
        next linear page, wherever that is mapped."""
        memory = self.machine.memory
        code = trace.page_view[linear & ~PAGE_MASK:].tobytes()
        rest = insn.MAX_LENGTH - len(code)
        next_gpa = (linear_to_physical(vcpu, trace.sregs, (linear | ~PAGE_MASK) + 1) if trace.paging
                    else (linear | ~PAGE_MASK) + 1)
        if next_gpa is not None and memory.contains(next_gpa, rest):
            code += memory.read(next_gpa, rest)
        return code

    def _single_step(self, loop, trace):
        """Run the vCPU one instruction at a time until the trace ends or the machine stops.

        Every traced instruction is a KVM_RUN, so this loop, not RunLoop's, runs the vCPU
        while it traces: DEBUG exits are steps; the other exits go to the vCPU's handlers.
        The common step (recorded, an ordinary instruction or a near branch, the same code
        page) stays in this function; everything else is a method call.
        """
        vcpu, machine, handlers, fatal = loop.vcpu, self.machine, loop.handlers, loop._fatal
        read_rip, read_regs = vcpu.rip_reader(self._sync_regs), vcpu.register_reader(self._sync_regs)
        records = self._writer or self.on_instruction
        max_steps = self.max_steps
        while machine.outcome is None:
            exit = vcpu.run()
            reason = exit.reason
            if reason == _DEBUG:
                rip, = read_rip()
                if rip == trace.rip and not trace.self_branch:
                    # No progress: a rep-string iteration, or a trap KVM reports again or late
                    # (VMX repeats it after port I/O; an OUT may already be counted at its exit).
                    continue
            else:
                handlers.get(reason, fatal)(exit)
                # KVM may advance RIP past an OUT (or an MMIO write) before exiting and then
                # report no single-step trap for it: count it here.
                if (reason != _IO and reason != _MMIO) or machine.outcome is not None:
                    continue
                rip, = read_rip()
                if rip == trace.rip:
                    continue
            # The instruction at trace.rip executed.
            trace.steps += 1
            if trace.record:
                trace.traced += 1
                if (records or trace.traced >= max_steps) and not self._recorded(loop, trace, read_regs()):
                    return
            kind = trace.kind
            if kind >= _MODE_CHANGE or (kind == _ORDINARY and rip != trace.next_rip):
                if kind == _HLT:
                    # With single-step on, KVM reports HLT as a DEBUG exit and goes past it.
                    self._end(loop, trace, rip, "hlt")
                    handlers[abi.KVM_EXIT_HLT](exits.Hlt(abi.KVM_EXIT_HLT))
                    return
                self._load_sregs(trace, vcpu.get_sregs())
            # report.rip_linear, from the fields _load_sregs kept rather than the cdata sregs
            linear = rip if trace.flat_rip else (trace.cs_base + rip) & 0xFFFFFFFF
            if linear & PAGE_MASK != trace.linear_page and not self._enter_page(trace, vcpu, linear & PAGE_MASK):
                self._end(loop, trace, rip, "left the watched pages")
                return
            self._next_instruction(trace, vcpu, rip, linear)

    def _recorded(self, loop, trace, values):
        """Write a recorded instruction (values: the registers after it), get the analysis's
        word on it, apply the budget; False when the trace has ended."""
        if self._writer:
            self._writer.instruction(trace.event.index, trace.traced, trace.rip, trace.gpa, trace.code, values)
        decision = None
        if self.on_instruction:
            decision = self.on_instruction(Step(trace.event, trace.traced, trace.rip, trace.gpa,
                                                trace.code, values))
        if trace.traced >= self.max_steps or decision is Decision.SKIP or decision is Decision.STOP:
            trace.record = False
            if self._writer:   # what was recorded is complete: make it visible now
                self._writer.flush()
        if decision is Decision.STOP:
            self._end(loop, trace, values[RIP], "stopped by the analysis")
            self._stop_guest(trace.event)
            return False
        return True

    def _enter_page(self, trace, vcpu, linear_page):
        """Make linear_page the trace's code page; False when it is not a watched page."""
        page = linear_page
        if trace.paging:
            key = (trace.sregs.cr3, linear_page)
            page = trace.pages.get(key)
            if page is None:
                page = linear_to_physical(vcpu, trace.sregs, linear_page)
                if page is None:
                    return False
                if len(trace.pages) >= MAX_CACHED_PAGES:
                    trace.pages.clear()
                trace.pages[key] = page
        if page not in self.watch.pages:
            return False
        trace.linear_page, trace.page_gpa = linear_page, page
        trace.page_view = self.machine.memory.view(page, PAGE_SIZE)
        return True

    def _begin(self, loop, trace):
        """Disarm the trap and single-step (the other vCPUs are paused)."""
        with self._lock:
            self.backend.disarm()
            self._active[loop.vcpu.id] = trace
        if self._sync_regs:
            loop.vcpu.sync_regs(True)
        loop.vcpu.set_guest_debug(single_step=True)

    def _end(self, loop, trace, rip, reason):
        """Back to full speed: single-step off, the trap re-armed, the other vCPUs resumed."""
        loop.vcpu.set_guest_debug()
        loop.vcpu.sync_regs(False)
        trace.page_view = None
        with self._lock:
            del self._active[loop.vcpu.id]
            self.steps += trace.steps
            self._traced += trace.traced
            self.backend.arm()
        self._pause.resume()
        self._write_leave(trace, rip, reason)

    def _write_leave(self, trace, rip, reason):
        if trace.steps > trace.traced and reason == "left the watched pages":
            reason += " (instruction budget reached or recording skipped)"
        if self._writer:
            self._writer.write({"type": "leave", "event": trace.event.index, "reason": reason,
                                "rip": f"{rip:#x}", "instructions": trace.traced, "steps": trace.steps})

    # -- the end -------------------------------------------------------------

    def summary(self, outcome=None):
        outcome = outcome or self.machine.outcome
        return {"backend": self.backend.name, "events": self.events, "instructions": self.instructions,
                "steps": self.steps + sum(t.steps for t in self._active.values()),
                "max_steps": self.max_steps,
                "watched": [[f"{start:#x}", f"{end:#x}"] for start, end in self.watch.ranges],
                **self.backend.counters(),
                "outcome": outcome.kind if outcome else "unfinished",
                "exit_status": outcome.exit_status if outcome else None,
                "message": outcome.message if outcome else "the run did not finish"}

    def finish(self, outcome=None):
        """Close the trace file with its summary (after the run: no vCPU thread is running)."""
        for vcpu_id, trace in list(self._active.items()):
            loop = next(loop for loop in self.machine.loops if loop.vcpu.id == vcpu_id)
            loop.vcpu.sync_regs(False)
            trace.page_view = None
            with self._lock:
                self.steps += trace.steps
                self._traced += trace.traced
                del self._active[vcpu_id]
            self._write_leave(trace, trace.rip, "the run ended")
        self._pause.resume()
        if self._writer:
            self._writer.close(self.summary(outcome))
            self._writer = None

    def close(self):
        self.finish()
        if self._started:
            self.backend.stop()
            self._started = False
        for (vcpu_id, reason), handler in self._previous.items():
            loop = next(loop for loop in self.machine.loops if loop.vcpu.id == vcpu_id)
            loop.handlers[reason] = handler
        self._previous.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hexify_nested(values):
    return {name: hexify(value) if isinstance(value, dict) else f"{value:#x}" for name, value in values.items()}
