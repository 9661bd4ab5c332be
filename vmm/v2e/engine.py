"""The V2E engine: trap execution of watched pages, trace it instruction by instruction,
then let the guest go back to hardware speed.

    backend (trap exit) -> engine: event, decision -> policy (the other vCPUs)
        -> Stepper drives the vCPU -> each step to the recorders -> back to full speed

The engine intercepts the backend's trap exit on every vCPU's run loop (KVM_EXIT_INTERNAL_ERROR
on stock KVM, KVM_EXIT_EMULATE with the patch). On an event it records the state, asks the
analyst's callback what to do, disarms the trap and hands the vCPU to a Stepper. Each executed
instruction goes to the recorders: the JSONL trace writer and the analyst's instruction
callback see the same stream. When RIP leaves the watched pages the trap is re-armed and the
run loop drives the vCPU at full speed until the next entry.
"""
import datetime
import hashlib
import threading

import kvm_abi as abi

from ..errors import EXIT_OK, VmmError
from ..machine.outcome import Outcome, kvm_error
from ..trace.writer import TraceWriter
from ..version import version
from ..x86.cpuid import vendor
from ..x86.mode import cpu_mode
from ..x86.paging import PAGE_SIZE
from ..x86.registers import CR0_PE, RIP, general_registers_as_dict, special_registers_as_dict
from .backends import select_backend
from .events import Decision, EmulateEvent, Step
from .policy import ExclusiveTracing
from .stepper import Stepper, new_instruction_memo
from .watch import WatchSet

DEFAULT_MAX_STEPS = 100_000
# Why the stepper gave the vCPU back -> the leave record's reason (any other is one already).
_LEAVE_REASONS = {"left the watched pages": "branch-out", "hlt": "halt", "stopped by the analysis": "analysis-stop",
                  "the run ended": "run-ended"}


def _sync_regs_supported(machine):
    return bool(machine.kvm.check_extension(abi.KVM_CAP_SYNC_REGS) & abi.KVM_SYNC_X86_REGS)


class CallbackRecorder:
    """The analyst's on_instruction(step) as a recorder (TraceWriter, the JSONL file, is the
    other one): it sees each step as a Step and its answer (a Decision or None) steers the
    trace."""

    def __init__(self, on_instruction):
        self._on_instruction = on_instruction

    def event(self, event, decision, pages):
        pass

    def instruction(self, event, index, rip, gpa, code, values):
        return self._on_instruction(Step(event, index, rip, gpa, code, values))

    def leave(self, event, reason, rip, instructions, steps):
        pass

    def flush(self):
        pass

    def close(self, summary):
        pass


class V2E:
    """Watch guest-physical ranges of a machine and analyse every execution of them.

    on_event(event) -> Decision or None (None: TRACE); on_instruction(step) -> Decision or
    None, where SKIP stops recording this event and STOP stops the guest. Use it as a
    context manager, or call finish(outcome) after Machine.run and close(). image_path and
    image (its bytes), when given, name the guest image in the trace's header.
    """

    def __init__(self, machine, ranges, backend="auto", trace_path=None, max_steps=DEFAULT_MAX_STEPS,
                 on_event=None, on_instruction=None, image_path=None, image=None):
        if max_steps < 1:
            raise VmmError(f"the instruction budget must be at least 1, got {max_steps}")
        real_mode = not machine.vcpus[0].get_sregs().cr0 & CR0_PE
        self.machine = machine
        self.watch = WatchSet(ranges, machine.memory, "real" if real_mode else "protected")
        self.backend = select_backend(backend, machine, self.watch)
        self.max_steps = max_steps
        self.on_event = on_event
        self.events = self.steps = 0
        self._traced = 0            # instructions recorded by traces that ended
        self._memo = new_instruction_memo()
        # With KVM_CAP_SYNC_REGS a step's registers come with the exit, without an ioctl.
        self._sync_regs = _sync_regs_supported(machine)
        self._lock = threading.Lock()
        self._policy = ExclusiveTracing(machine)
        self._active = {}           # vCPU id -> Stepper
        self._recorders = []
        if trace_path:
            self._recorders.append(TraceWriter(trace_path, self._trace_header(image_path, image)))
        if on_instruction:
            self._recorders.append(CallbackRecorder(on_instruction))
        self.records_steps = bool(self._recorders)   # read by the steppers
        self._interceptions = []
        self._started = False
        try:
            self.backend.start()
            self._started = True
            for loop in machine.loops:
                self._interceptions.append(self._intercept_trap(loop))
        except BaseException:
            self.close()
            raise

    def _trace_header(self, image_path, image):
        return {"vmm_version": version(), "image": image_path,
                "image_sha256": None if image is None else hashlib.sha256(image).hexdigest(),
                "watched": self.watch.ranges, "backend": self.backend.name,
                "cpu_vendor": vendor(self.machine.kvm.supported_cpuid()),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def _intercept_trap(self, loop):
        interception = loop.intercept(self.backend.exit_reason,
                                      lambda exit: self._on_trap(loop, interception, exit))
        return interception

    @property
    def instructions(self):
        """Instructions recorded so far, by every event."""
        with self._lock:
            return self._traced + sum(stepper.traced for stepper in self._active.values())

    # -- the trap ------------------------------------------------------------

    def _on_trap(self, loop, interception, exit):
        vcpu = loop.vcpu
        values, sregs = vcpu.register_reader(False)(), vcpu.get_sregs()
        target = self.backend.fetch_target(exit, vcpu, values[RIP], sregs)
        if target is None or vcpu.id in self._active:   # the trap is disarmed while this vCPU traces
            interception.pass_on(exit)
            return
        gpa, gva = target
        if gpa not in self.watch:
            self.machine.stop(kvm_error(f"vCPU {vcpu.id}: the {self.backend.name} backend reported "
                                        f"a fetch from gpa {gpa:#x}, which is not watched"))
            return
        # The trap is disarmed VM-wide while this vCPU traces: the others are paused meanwhile,
        # so none runs watched code unseen. (While waiting, this vCPU's registers stay as they are.)
        if not self._policy.begin(vcpu):
            return   # the machine is stopping
        try:
            self._event(loop, values, sregs, gpa, gva)
        except BaseException:
            self._policy.end()
            raise

    def _event(self, loop, values, sregs, gpa, gva):
        """Record the event, ask the analysis, then hand the vCPU to a Stepper."""
        vcpu = loop.vcpu
        with self._lock:
            self.events += 1
            index = self.events
        event = EmulateEvent(index, vcpu.id, self.backend.name, gpa, gva, values[RIP], cpu_mode(sregs)[0],
                             general_registers_as_dict(values), special_registers_as_dict(sregs))
        decision = (self.on_event(event) if self.on_event else None) or Decision.TRACE
        if self._recorders:
            memory = self.machine.memory
            pages = [(page, memory.read(page, PAGE_SIZE)) for page in sorted(self.watch.pages)]
            for recorder in self._recorders:
                recorder.event(event, decision, pages)
        if decision is Decision.STOP:
            self._stop_guest(event)
            self._policy.end()
            return
        stepper = Stepper(loop, self.machine.memory, self.watch.pages, self._memo, self, event,
                          decision is Decision.TRACE, self._sync_regs, self.max_steps)
        with self._lock:
            self.backend.disarm()
            self._active[vcpu.id] = stepper
        stepper.start(values[RIP], sregs, gpa)

    def _stop_guest(self, event):
        self.machine.stop(Outcome("analysis-stop", EXIT_OK,
                                  f"the analysis stopped the guest at event {event.index} (rip {event.rip:#x})"))

    # -- the stepper's sink --------------------------------------------------

    def instruction(self, stepper, values):
        """A recorded instruction (values: the registers after it): hand it to the recorders,
        get the analysis's word on it, apply the budget; False when the trace has ended."""
        decision = None
        for recorder in self._recorders:
            answer = recorder.instruction(stepper.event, stepper.traced, stepper.rip, stepper.gpa,
                                          stepper.code, values)
            if answer is not None:
                decision = answer
        if stepper.traced >= self.max_steps or decision is Decision.SKIP or decision is Decision.STOP:
            stepper.record = False
            for recorder in self._recorders:   # what was recorded is complete: make it visible now
                recorder.flush()
        if decision is Decision.STOP:
            stepper.stop(values[RIP], "stopped by the analysis")
            self._stop_guest(stepper.event)
            return False
        return True

    def left(self, stepper, rip, reason):
        """The stepper gave its vCPU back: re-arm, let the other vCPUs run, record the leave."""
        with self._lock:
            del self._active[stepper.loop.vcpu.id]
            self.steps += stepper.steps
            self._traced += stepper.traced
            self.backend.arm()
        self._policy.end()
        self._record_leave(stepper, rip, reason)

    def _record_leave(self, stepper, rip, reason):
        reason = _LEAVE_REASONS.get(reason, reason)
        if reason == "branch-out" and stepper.traced >= self.max_steps and stepper.steps > stepper.traced:
            reason = "budget"
        for recorder in self._recorders:
            recorder.leave(stepper.event, reason, rip, stepper.traced, stepper.steps)

    # -- the end -------------------------------------------------------------

    def summary(self, outcome=None):
        outcome = outcome or self.machine.outcome
        return {"backend": self.backend.name, "events": self.events, "instructions": self.instructions,
                "steps": self.steps + sum(stepper.steps for stepper in self._active.values()),
                "max_steps": self.max_steps,
                "watched": [[f"{start:#x}", f"{end:#x}"] for start, end in self.watch.ranges],
                **self.backend.counters(),
                "outcome": outcome.kind if outcome else "unfinished",
                "exit_status": outcome.exit_status if outcome else None,
                "message": outcome.message if outcome else "the run did not finish"}

    def finish(self, outcome=None):
        """Close the trace file with its summary (after the run: no vCPU thread is running)."""
        for vcpu_id, stepper in list(self._active.items()):
            stepper.abandon()
            with self._lock:
                self.steps += stepper.steps
                self._traced += stepper.traced
                del self._active[vcpu_id]
            self._record_leave(stepper, stepper.rip, "the run ended")
        self._policy.end()
        if self._recorders:
            summary = self.summary(outcome)
            for recorder in self._recorders:
                recorder.close(summary)
            self._recorders = []

    def close(self):
        self.finish()
        if self._started:
            self.backend.stop()
            self._started = False
        for interception in self._interceptions:
            interception.restore()
        self._interceptions = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
