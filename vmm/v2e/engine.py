"""The V2E engine: trap execution of watched pages, trace it instruction by instruction,
then let the guest go back to hardware speed.

It hooks into each vCPU's RunLoop by replacing handler-table entries: the
backend's trap exit (KVM_EXIT_INTERNAL_ERROR on stock KVM, KVM_EXIT_EMULATE
with the patch) and KVM_EXIT_DEBUG for single-steps. Everything else (I/O,
MMIO, HLT) keeps flowing through the ordinary handlers, also while tracing.

On an event: record it (registers, every watched page), ask the analyst's
callback what to do, disarm the trap and single-step. Each DEBUG exit is one
executed instruction; when RIP leaves the watched pages, single-step is
switched off and the trap re-armed, so the guest runs at full speed until the
next entry.
"""
import enum
import functools
import threading

import kvm_abi as abi

from .. import exits
from ..errors import EXIT_OK, VmmError
from ..memory import PAGE_SIZE
from ..runloop import Outcome, kvm_error
from . import insn
from ..report import rip_linear
from .backends import CR0_PG, fetch_address, linear_to_physical, select_backend
from .trace import TraceWriter, hexify
from .watch import PAGE_MASK, WatchSet

DEFAULT_MAX_STEPS = 100_000
GENERAL_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
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
    """One traced instruction: where it was, its bytes, and the registers after it."""

    __slots__ = ("event", "index", "rip", "gpa", "code", "regs")

    def __init__(self, event, index, rip, gpa, code, regs):
        self.event, self.index, self.rip, self.gpa, self.code, self.regs = event, index, rip, gpa, code, regs

    def __repr__(self):
        return f"Step(#{self.event.index}.{self.index}, rip={self.rip:#x}, {self.code.hex(' ')})"


class _Trace:
    """A vCPU's progress through watched code: the instruction about to execute."""

    __slots__ = ("event", "record", "steps", "traced", "rip", "gpa", "code", "opcode",
                 "saved_handlers", "sregs", "bits", "pages")

    def __init__(self, event, record, sregs, bits):
        self.event, self.record = event, record
        self.steps = self.traced = 0
        self.rip = self.gpa = self.code = self.opcode = None
        self.saved_handlers = {}   # exit reason -> the handler wrapped while tracing
        self.sregs, self.bits = sregs, bits
        # (CR3, linear page) -> physical page. A stale entry after the guest edits its page
        # tables only ends or prolongs the trace; the trap catches the next real fetch.
        self.pages = {}


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
        self.events = self.instructions = self.steps = 0
        self._lock = threading.Lock()
        self._active = {}        # vCPU id -> _Trace
        self._previous = {}      # (vCPU id, exit reason) -> the handler the engine replaced
        self._writer = TraceWriter(trace_path) if trace_path else None
        self._started = False
        try:
            self.backend.start()
            self._started = True
            for loop in machine.loops:
                self._hook(loop, self.backend.exit_reason, self._on_trap)
                self._hook(loop, abi.KVM_EXIT_DEBUG, self._on_debug)
        except BaseException:
            self.close()
            raise

    def _hook(self, loop, reason, method):
        self._previous[loop.vcpu.id, reason] = loop.handlers.get(reason, loop._fatal)
        loop.handlers[reason] = functools.partial(method, loop)

    def _pass_on(self, loop, exit):
        self._previous[loop.vcpu.id, exit.reason](exit)

    # -- the trap ------------------------------------------------------------

    def _on_trap(self, loop, exit):
        vcpu = loop.vcpu
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
        target = self.backend.fetch_target(exit, vcpu, regs, sregs)
        if target is None:
            return self._pass_on(loop, exit)
        gpa, gva = target
        if gpa not in self.watch:
            self.machine.stop(kvm_error(f"vCPU {vcpu.id}: the {self.backend.name} backend reported "
                                        f"a fetch from gpa {gpa:#x}, which is not watched"))
            return
        with self._lock:
            self.events += 1
            index = self.events
        mode, bits = cpu_mode(sregs)
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
            return
        trace = _Trace(event, decision is Decision.TRACE, sregs, bits)
        self._next_instruction(trace, vcpu, regs, gpa)
        self._begin(loop, trace)

    def _stop_guest(self, event):
        self.machine.stop(Outcome("analysis-stop", EXIT_OK,
                                  f"the analysis stopped the guest at event {event.index} (rip {event.rip:#x})"))

    # -- single-stepping -----------------------------------------------------

    def _next_instruction(self, trace, vcpu, regs, gpa):
        """Remember the instruction at RIP (gpa known) before it executes."""
        trace.rip, trace.gpa = regs.rip, gpa
        code = self._code_at(vcpu, trace.sregs, regs, gpa)
        decoded = insn.decode(code, trace.bits)
        if decoded is None:
            trace.code, trace.opcode = code, None
        else:
            trace.code, trace.opcode = code[:decoded[0]], decoded[1]

    def _code_at(self, vcpu, sregs, regs, gpa):
        """Up to 15 bytes of code at gpa, following RIP's linear address into the next page."""
        memory = self.machine.memory
        first = min(insn.MAX_LENGTH, PAGE_SIZE - (gpa & (PAGE_SIZE - 1)))
        if not memory.contains(gpa, first):
            return b""
        code = memory.read(gpa, first)
        if first < insn.MAX_LENGTH:
            _, linear = fetch_address(vcpu, regs, sregs)
            next_gpa = linear_to_physical(vcpu, sregs, (linear | (PAGE_SIZE - 1)) + 1)
            if next_gpa is not None and memory.contains(next_gpa, insn.MAX_LENGTH - first):
                code += memory.read(next_gpa, insn.MAX_LENGTH - first)
        return code

    def _on_debug(self, loop, exit):
        trace = self._active.get(loop.vcpu.id)
        if trace is None:
            return self._pass_on(loop, exit)
        regs = loop.vcpu.get_regs()
        if regs.rip == trace.rip and not insn.branches_to_itself(trace.code, trace.opcode, trace.bits):
            # No progress: a rep-string iteration, or a trap KVM reports again or late (VMX
            # repeats it after port I/O; an OUT may already be counted at its I/O exit).
            return
        self._step_done(loop, trace, regs)

    def _on_device_exit(self, loop, handler, exit):
        """I/O and MMIO while tracing. KVM may advance RIP past an OUT (or an MMIO write)
        before exiting and then report no single-step trap for it: count it here."""
        handler(exit)
        trace = self._active.get(loop.vcpu.id)
        if trace is None:
            return
        regs = loop.vcpu.get_regs()
        if regs.rip != trace.rip:
            self._step_done(loop, trace, regs)

    def _step_done(self, loop, trace, regs):
        """The instruction at trace.rip executed; regs are the registers after it."""
        vcpu = loop.vcpu
        trace.steps += 1
        decision = None
        if trace.record:
            trace.traced += 1
            with self._lock:
                self.instructions += 1
            after = register_values(regs)
            if self._writer:
                self._writer.write({"type": "insn", "event": trace.event.index, "step": trace.traced,
                                    "rip": f"{trace.rip:#x}", "gpa": f"{trace.gpa:#x}",
                                    "bytes": trace.code.hex(), "regs": hexify(after)})
            if self.on_instruction:
                decision = self.on_instruction(Step(trace.event, trace.traced, trace.rip, trace.gpa,
                                                    trace.code, after))
            if trace.traced >= self.max_steps:
                trace.record = False
        if decision is Decision.STOP:
            self._end(loop, trace, regs.rip, "stopped by the analysis")
            self._stop_guest(trace.event)
            return
        if decision is Decision.SKIP:
            trace.record = False
        # With single-step on, KVM reports HLT as a DEBUG exit and goes past it: halt here.
        if trace.opcode == HLT_OPCODE:
            self._end(loop, trace, regs.rip, "hlt")
            loop.handlers[abi.KVM_EXIT_HLT](exits.Hlt(abi.KVM_EXIT_HLT))
            return
        opcode = trace.opcode
        if (opcode is None or opcode in _MODE_CHANGERS
                or (regs.rip != trace.rip + len(trace.code) and opcode not in _NEAR_BRANCHES)):
            trace.sregs = vcpu.get_sregs()
            trace.bits = cpu_mode(trace.sregs)[1]
        gpa = self._rip_gpa(trace, vcpu, regs)
        if gpa is None or gpa not in self.watch:
            self._end(loop, trace, regs.rip, "left the watched pages")
            return
        self._next_instruction(trace, vcpu, regs, gpa)

    def _rip_gpa(self, trace, vcpu, regs):
        sregs = trace.sregs
        linear = rip_linear(regs, sregs)
        if not sregs.cr0 & CR0_PG:
            return linear
        key = (sregs.cr3, linear & PAGE_MASK)
        page = trace.pages.get(key)
        if page is None:
            physical = linear_to_physical(vcpu, sregs, linear & PAGE_MASK)
            if physical is None:
                return None
            page = trace.pages[key] = physical
        return page | (linear & (PAGE_SIZE - 1))

    def _begin(self, loop, trace):
        """Disarm the trap (the first vCPU to trace), watch device exits, single-step."""
        with self._lock:
            if not self._active:
                self.backend.disarm()
            self._active[loop.vcpu.id] = trace
        for reason in (abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO):
            handler = loop.handlers[reason]
            trace.saved_handlers[reason] = handler
            loop.handlers[reason] = functools.partial(self._on_device_exit, loop, handler)
        loop.vcpu.set_guest_debug(single_step=True)

    def _end(self, loop, trace, rip, reason):
        """Back to full speed: single-step off, the trap re-armed once no vCPU traces."""
        loop.vcpu.set_guest_debug()
        loop.handlers.update(trace.saved_handlers)
        with self._lock:
            del self._active[loop.vcpu.id]
            self.steps += trace.steps
            if not self._active:
                self.backend.arm()
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
            loop.handlers.update(trace.saved_handlers)
            self.steps += trace.steps
            self._write_leave(trace, trace.rip, "the run ended")
        self._active.clear()
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
