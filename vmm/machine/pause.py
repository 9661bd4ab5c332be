"""Pausing vCPUs: each run loop parks its vCPU between two KVM_RUNs while a pause holds it.

A pause is requested by a debugger, by V2E, or by a vCPU thread for all the others (`exempt`:
the vCPU that keeps running). pause() kicks the vCPUs out of KVM_RUN and returns once every
vCPU it holds is parked. A vCPU thread asking while another pause holds it first parks itself,
counted among the parked, until that pause ends, so two vCPUs asking at once cannot wait for
each other; a pause it asks for that holds itself too (a debugger stop on that vCPU) is not
waited for on its account: it parks at its next turn. Every wait also ends when the machine stops.
"""
import threading

# How often a waiting thread looks at whether the machine has stopped.
POLL_SECONDS = 0.05


class Pause:
    """A granted pause; resume() (or leaving the with block) lets the vCPUs it holds run."""

    __slots__ = ("exempt", "_gate")

    def __init__(self, gate, exempt):
        self.exempt = exempt
        self._gate = gate

    def resume(self):
        self._gate.release(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.resume()


class PauseGate:
    """The pauses of one machine, whose vCPU ids are 0 .. count - 1."""

    def __init__(self, count, stopped):
        self._vcpu_ids = tuple(range(count))
        self._stopped = stopped           # a function: has the machine stopped?
        self._condition = threading.Condition()
        self._pauses = []
        self._parked = set()
        # held[vcpu_id]: whether a pause holds that vCPU. Read without the lock by its run
        # loop before each KVM_RUN, so the common case costs one list index.
        self.held = [False] * count

    def pause(self, exempt=None, kick=None, caller=None):
        """Hold every vCPU but `exempt` (a vCPU id, or None for all); kick(vcpu_id) makes one
        leave KVM_RUN; `caller` is the vCPU whose thread asks (None for any other thread).
        Returns the Pause once the vCPUs it holds, but the caller, are parked, or None if the
        machine stops first."""
        with self._condition:
            if caller is not None:
                self._park_locked(caller)
            if self._stopped():
                return None
            pause = Pause(self, exempt)
            self._pauses.append(pause)
            self._update_held()
        held = [vcpu_id for vcpu_id in self._vcpu_ids if vcpu_id != exempt and vcpu_id != caller]
        if kick is not None:
            for vcpu_id in held:
                kick(vcpu_id)
        with self._condition:
            while not self._parked.issuperset(held):
                if self._stopped():
                    self._release_locked(pause)
                    return None
                self._condition.wait(POLL_SECONDS)
        return pause

    def release(self, pause):
        with self._condition:
            self._release_locked(pause)

    def park(self, vcpu_id):
        """On a vCPU's thread, between two KVM_RUNs: wait while a pause holds this vCPU."""
        with self._condition:
            self._park_locked(vcpu_id)

    def _holds(self, vcpu_id):
        return any(pause.exempt != vcpu_id for pause in self._pauses)

    def _park_locked(self, vcpu_id):
        if not self._holds(vcpu_id):
            return
        self._parked.add(vcpu_id)
        self._condition.notify_all()   # a pauser waits for the parked set
        try:
            while self._holds(vcpu_id) and not self._stopped():
                self._condition.wait(POLL_SECONDS)
        finally:
            self._parked.discard(vcpu_id)

    def _release_locked(self, pause):
        if pause in self._pauses:
            self._pauses.remove(pause)
        self._update_held()
        self._condition.notify_all()

    def _update_held(self):
        for vcpu_id in self._vcpu_ids:
            self.held[vcpu_id] = self._holds(vcpu_id)
