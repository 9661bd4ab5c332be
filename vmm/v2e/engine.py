"""The V2E engine: trap execution of watched pages, trace it instruction by instruction,
then let the guest go back to hardware speed.

    backend (trap exit) -> policy: every vCPU single-stepped, trap disarmed
        -> a Stepper per vCPU: an instruction touching a watched page starts an event
        -> each executed instruction to the recorders -> the last event ends: trap re-armed

The engine intercepts the backend's trap exit on every vCPU's run loop (KVM_EXIT_INTERNAL_ERROR
on stock KVM, KVM_EXIT_EMULATE with the patch). Each event is recorded (registers, the watched
pages), the analyst's callback decides what to do with it, and each executed instruction goes
to the recorders: the JSONL trace writer and the analyst's instruction callback see the same
stream. When no vCPU is in watched code any more, the trap is re-armed and every vCPU runs
at full speed until the next entry.
"""
import datetime
import hashlib
import threading

import kvm_abi as abi

from ..errors import EXIT_OK, VmmError
from ..machine.outcome import Outcome, kvm_error
from ..trace.writer import TraceWriter
from ..version import version
from ..x86.mode import cpu_mode, linear_rip
from ..x86.paging import PAGE_SIZE
from ..x86.registers import CR0_PE, RIP, general_registers_as_dict, special_registers_as_dict
from .backends import NoTrap, select_backend
from .events import Decision, EmulateEvent, Step
from .policy import StepEveryVcpu
from .stepper import REARM_AFTER_STEPS, Stepper, new_instruction_memo
from .watch import WatchSet

DEFAULT_MAX_INSTRUCTIONS = 100_000
# The guest's TSC advances by this many cycles per traced instruction (--tsc-per-step).
DEFAULT_TSC_PER_STEP = 20


def _sync_regs_supported(machine):
    return bool(machine.kvm.check_extension(abi.KVM_CAP_SYNC_REGS) & abi.KVM_SYNC_X86_REGS)


def tsc_offset_supported(vcpu):
    """Whether KVM lets the VMM read and move this vCPU's TSC offset."""
    return vcpu.has_device_attr(abi.KVM_VCPU_TSC_CTRL, abi.KVM_VCPU_TSC_OFFSET)


class CallbackRecorder:
    """The analyst's on_instruction(step) as a recorder (TraceWriter, the JSONL file, is the
    other one): it sees each step as a Step and its answer (a Decision or None) steers the
    trace."""

    def __init__(self, on_instruction):
        self._on_instruction = on_instruction

    def event(self, event, decision, pages):
        pass

    def instruction(self, event, index, rip, gpa, code, values, memory=()):
        return self._on_instruction(Step(event, index, rip, gpa, code, values, tuple(memory)))

    def leave(self, event, reason, rip, instructions, steps, detail=None):
        pass

    def annotate(self, record):
        pass

    def flush(self):
        pass

    def close(self, summary):
        pass


class V2E:
    """Watch guest-physical ranges of a machine and analyse every execution of them.

    on_event(event) -> Decision or None (None: TRACE); on_instruction(step) -> Decision or
    None, where UNRECORDED stops recording this event and STOP stops the guest. Use it as a
    context manager, or call finish(outcome) after Machine.run and close(). image_path and
    image (its bytes), when given, name the guest image in the trace's header.
    """

    def __init__(self, machine, ranges, backend="auto", trace_path=None,
                 max_instructions=DEFAULT_MAX_INSTRUCTIONS, on_event=None, on_instruction=None,
                 tsc_per_step=DEFAULT_TSC_PER_STEP, rearm_after_steps=REARM_AFTER_STEPS, on_step=None,
                 image_path=None, image=None):
        """backend None: no trap; nothing is watched until trace_region() says so.
        rearm_after_steps: instructions the vCPUs are stepped outside watched code before the
        trap is armed again (0: at once; a debugger wants its own breakpoints back).
        on_step(vcpu_id, values): every instruction any vCPU is stepped through, watched or
        not (a debugger's own single-step ends there). image_path, image: what the trace's
        header names as the traced image."""
        if max_instructions < 1:
            raise VmmError(f"the instruction budget must be at least 1, got {max_instructions}")
        if not 0 <= tsc_per_step < 1 << 32:
            raise VmmError(f"the TSC cycles per traced instruction must be between 0 and 2^32, got {tsc_per_step}")
        real_mode = not machine.vcpus[0].get_sregs().cr0 & CR0_PE
        self.machine = machine
        self.watch = WatchSet(ranges, machine.memory, "real" if real_mode else "protected",
                              allow_empty=backend is None)
        self.backend = NoTrap() if backend is None else select_backend(backend, machine, self.watch)
        self.max_instructions = max_instructions
        self.tsc_per_step = tsc_per_step
        self.rearm_after_steps = rearm_after_steps
        self._on_step = on_step
        self.on_event = on_event
        self.events = self.steps = 0
        self._traced = 0            # instructions recorded by events that ended
        self._memo = new_instruction_memo()
        # With KVM_CAP_SYNC_REGS a step's registers come with the exit, without an ioctl.
        self._sync_regs = _sync_regs_supported(machine)
        self._tsc_offsets = tsc_offset_supported(machine.vcpus[0])
        self._lock = threading.Lock()
        self._policy = StepEveryVcpu(machine, self.backend, self._new_stepper)
        self._recorders = []
        self._regions = {}          # vCPU id -> pages trace_region() watches until its event ends
        if trace_path:
            self._recorders.append(TraceWriter(trace_path, self._trace_header(image_path, image)))
        if on_instruction:
            self._recorders.append(CallbackRecorder(on_instruction))
        self._interceptions = []
        self._started = False
        try:
            self.backend.start()
            self._started = True
            for loop in machine.loops:
                if self.backend.exit_reason is not None:
                    self._interceptions.append(self._intercept_trap(loop))
        except BaseException:
            self.close()
            raise

    def _trace_header(self, image_path, image):
        return {"vmm_version": version(), "image": image_path,
                "image_sha256": None if image is None else hashlib.sha256(image).hexdigest(),
                "watched": self.watch.ranges, "backend": self.backend.name,
                "cpu_vendor": self.machine.cpu_vendor,
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def _intercept_trap(self, loop):
        interception = loop.intercept(self.backend.exit_reason,
                                      lambda exit: self._on_trap(loop, interception, exit))
        return interception

    def _new_stepper(self, loop):
        return Stepper(self, loop, self.machine.memory, self.watch.pages, self._memo, self._sync_regs,
                       self.tsc_per_step, self.machine.machine_type == "pc", self.machine.cpu_vendor,
                       self.rearm_after_steps, self._on_step)

    @property
    def instructions(self):
        """Instructions recorded so far, by every event."""
        with self._lock:
            return self._traced + sum(s.traced for s in self._active_steppers())

    def _active_steppers(self):
        return [s for s in (self._policy.steppers or {}).values() if s.event is not None]

    # -- the trap ------------------------------------------------------------

    def _on_trap(self, loop, interception, exit):
        vcpu = loop.vcpu
        stepper = self._policy.stepper_of(vcpu.id)
        if stepper is not None and stepper.exit_while_stepping:
            # The trap is off while the vCPUs step: this is the guest's own emulation failure.
            interception.pass_on(exit)
            return
        values, sregs = vcpu.register_reader(False)(), vcpu.get_sregs()
        target = self.backend.fetch_target(exit, vcpu, values[RIP], sregs)
        if target is None:
            interception.pass_on(exit)
            return
        gpa, _ = target
        if gpa not in self.watch:
            self.machine.stop(kvm_error(f"vCPU {vcpu.id}: the {self.backend.name} backend reported "
                                        f"a fetch from gpa {gpa:#x}, which is not watched"))
            return
        # Every vCPU single-steps while the trap is disarmed; this one's Stepper has begun the
        # event at the trapped instruction (or the machine is stopping).
        self._policy.start(vcpu)

    def trace_region(self, loop, pages):
        """From loop's vCPU thread: watch `pages` until the event that starts at the instruction
        about to execute ends (the caller knows that instruction lies in them)."""
        self.watch.add(pages)
        with self._lock:
            self._regions.setdefault(loop.vcpu.id, set()).update(pages)
        stepper = self._policy.start(loop.vcpu)
        if stepper is not None and stepper.event is None:
            stepper.reposition()

    def annotate(self, record):
        """Write a record of another kind (an unpacking layer, say) into the trace."""
        for recorder in self._recorders:
            recorder.annotate(record)

    # -- the steppers' engine ------------------------------------------------

    def event_starts(self, stepper):
        """The instruction stepper is about to run touches a watched page: a new event."""
        vcpu = stepper.vcpu
        with self._lock:
            self.events += 1
            index = self.events
        sregs = vcpu.get_sregs()
        event = EmulateEvent(index, vcpu.id, self.backend.name, stepper.gpa, linear_rip(stepper.rip, sregs),
                             stepper.rip, cpu_mode(sregs)[0], general_registers_as_dict(stepper.values),
                             special_registers_as_dict(sregs), stepper.watched_page)
        # Begun before the callback: while it runs (a debugger may hold the vCPU there) the
        # event is under way, so no other vCPU re-arms the trap, and its time is hidden too.
        stepper.begin(event, True)
        decision = (self.on_event(event) if self.on_event else None) or Decision.TRACE
        stepper.record = decision is Decision.TRACE
        if self._recorders:
            memory = self.machine.memory
            pages = [(page, memory.read(page, PAGE_SIZE)) for page in sorted(self.watch.pages)]
            for recorder in self._recorders:
                recorder.event(event, decision, pages)
        if decision is Decision.STOP:
            self._stop_guest(event)
            stepper.end(stepper.rip, "analysis-stop")

    def instruction(self, stepper, values, memory):
        """A recorded instruction (values: the registers after it; memory: its memory operands
        as (linear address, size, bytes after it or None)): hand it to the recorders, get the
        analysis's word on it, apply the budget; False when the trace has ended."""
        decision = None
        for recorder in self._recorders:
            answer = recorder.instruction(stepper.event, stepper.traced, stepper.rip, stepper.gpa,
                                          stepper.code, values, memory)
            if answer is not None:
                decision = answer
        if stepper.traced >= self.max_instructions or decision is Decision.UNRECORDED or decision is Decision.STOP:
            stepper.record = False
            for recorder in self._recorders:   # what was recorded is complete: make it visible now
                recorder.flush()
        if decision is Decision.STOP:
            event = stepper.event
            stepper.end(values[RIP], "analysis-stop")
            self._stop_guest(event)
            return False
        return True

    def event_ends(self, stepper, event, rip, reason, detail):
        """An event ended: record the leave."""
        with self._lock:
            self.steps += stepper.steps
            self._traced += stepper.traced
        if stepper.steps > stepper.traced and reason == "branch-out":
            reason = "budget"
        for recorder in self._recorders:
            recorder.leave(event, reason, rip, stepper.traced, stepper.steps, detail)
        with self._lock:
            region = self._regions.pop(stepper.vcpu.id, None)
        if region:
            self.watch.discard(region)

    def idle(self, stepper):
        """A vCPU has run unwatched code for a while: with no vCPU in watched code, re-arm."""
        if self.machine.outcome is None:
            self._policy.stop_if_idle(stepper.vcpu)

    def tsc_offset(self, vcpu):
        """The vCPU's TSC offset, or None when KVM does not let the VMM move it."""
        if not self._tsc_offsets:
            return None
        return vcpu.get_device_attr(abi.KVM_VCPU_TSC_CTRL, abi.KVM_VCPU_TSC_OFFSET)

    def set_tsc_offset(self, vcpu, offset):
        vcpu.set_device_attr(abi.KVM_VCPU_TSC_CTRL, abi.KVM_VCPU_TSC_OFFSET, offset & ((1 << 64) - 1))

    def _stop_guest(self, event):
        self.machine.stop(Outcome("analysis-stop", EXIT_OK,
                                  f"the analysis stopped the guest at event {event.index} (rip {event.rip:#x})"))

    # -- the end -------------------------------------------------------------

    def summary(self, outcome=None):
        outcome = outcome or self.machine.outcome
        return {"backend": self.backend.name, "events": self.events, "instructions": self.instructions,
                "steps": self.steps + sum(s.steps for s in self._active_steppers()),
                "max_instructions": self.max_instructions, "tsc_per_step": self.tsc_per_step,
                "watched": [[f"{start:#x}", f"{end:#x}"] for start, end in self.watch.ranges],
                **self.backend.counters(),
                "outcome": outcome.kind if outcome else "unfinished",
                "exit_status": outcome.exit_status if outcome else None,
                "message": outcome.message if outcome else "the run did not finish"}

    def finish(self, outcome=None):
        """Close the trace file with its summary (after the run: no vCPU thread is running)."""
        for stepper in self._policy.abandon():
            if stepper.event is not None:
                event, stepper.event = stepper.event, None
                with self._lock:
                    self.steps += stepper.steps
                    self._traced += stepper.traced
                for recorder in self._recorders:
                    recorder.leave(event, "run-ended", stepper.rip, stepper.traced, stepper.steps)
        if self._recorders:
            summary = self.summary(outcome)
            for recorder in self._recorders:
                recorder.close(summary)
            self._recorders = []
        self._regions = {}          # vCPU id -> pages trace_region() watches until its event ends

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
