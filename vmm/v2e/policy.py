"""How V2E shares a machine's vCPUs while watched code runs.

Disarming the trap (mapping the watched pages back, or clearing the exec-trap marks) is
VM-wide. So while it is disarmed every vCPU is single-stepped by its own Stepper, and any
vCPU whose next instruction touches a watched page traces it as its own event: no vCPU waits
for another (watched code may wait for another vCPU), and no watched instruction runs
untraced. The switches happen with the other vCPUs parked (Machine.pause), so none runs
between the two states: a trap arms steppers on every vCPU before the trap is disarmed; the
last event to end re-arms the trap before the steppers let go.
"""
import threading


class StepEveryVcpu:
    """The stepping state of one engine: None while the trap is armed, else every vCPU's
    Stepper."""

    def __init__(self, machine, backend, make_stepper):
        self._machine = machine
        self._backend = backend
        self._make_stepper = make_stepper   # loop -> a Stepper, not attached yet
        self._lock = threading.RLock()
        self.steppers = None

    @property
    def stepping(self):
        return self.steppers is not None

    def stepper_of(self, vcpu_id):
        steppers = self.steppers
        return None if steppers is None else steppers.get(vcpu_id)

    def start(self, vcpu):
        """From vcpu's thread at a trap: step every vCPU, then disarm. Returns its Stepper (it
        has begun the event when the trapped instruction is watched), or None when the machine
        stops first."""
        with self._lock:
            if self.steppers is not None:
                return self.steppers[vcpu.id]
        pause = self._machine.pause(exempt=vcpu.id)
        if pause is None:
            return None
        with pause, self._lock:
            if self.steppers is None:
                self.steppers = {loop.vcpu.id: self._make_stepper(loop) for loop in self._machine.loops}
                for stepper in self.steppers.values():
                    stepper.attach()
                self._backend.disarm()
            stepper = self.steppers[vcpu.id]
        # Its event starts here, on its own thread, with the others running again (theirs
        # start on their threads before their next KVM_RUN).
        if stepper.needs_prepare:
            stepper.prepare()
        return stepper

    def tracing(self):
        """Whether any vCPU traces an event now."""
        with self._lock:
            return self.steppers is not None and any(s.event is not None for s in self.steppers.values())

    def stop_if_idle(self, vcpu):
        """From vcpu's thread after an event ended: when no vCPU traces, re-arm the trap and stop
        stepping every vCPU (the others parked meanwhile)."""
        if self.tracing():
            return
        pause = self._machine.pause(exempt=vcpu.id)
        if pause is None:
            return
        with pause, self._lock:
            if self.steppers is None or any(s.event is not None for s in self.steppers.values()):
                return
            self._backend.arm()
            for stepper in self.steppers.values():
                stepper.detach()
            self.steppers = None

    def abandon(self):
        """After the run (no vCPU thread runs): forget the steppers; returns them."""
        with self._lock:
            steppers, self.steppers = self.steppers or {}, None
        for stepper in steppers.values():
            stepper.abandon()
        return list(steppers.values())
