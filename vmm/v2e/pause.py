"""Pause every vCPU but one, so that one can trace watched code alone.

Disarming the trap (mapping the watched pages back, or clearing the exec-trap
marks) is VM-wide: while one vCPU traces, any other vCPU could run the watched
code untrapped and untraced. So before the tracer disarms, the others are kicked
out of KVM_RUN and wait in their exit handlers until it re-arms.
"""
import threading

# How often a waiting thread looks at whether the machine has stopped.
POLL_SECONDS = 0.05


class PauseOthers:
    def __init__(self, machine):
        self._machine = machine
        self._condition = threading.Condition()
        self._owner = None     # the vCPU id the others are paused for, or None
        self._waiting = 0      # vCPU threads now waiting in wait_while_paused or pause

    def pause(self, vcpu):
        """Pause every other vCPU (waiting first for any other owner to resume them); returns
        once they all wait, True, or False when the machine stops in the meantime."""
        with self._condition:
            if self._owner is not None:
                self._wait_counted(lambda: self._owner is not None)
            if self._machine.outcome is not None:
                return False
            self._owner = vcpu.id
        others = [other for other in self._machine.vcpus if other is not vcpu]
        for other in others:
            other.kick()
        with self._condition:
            while self._waiting < len(others):
                if self._machine.outcome is not None:
                    self._resume()
                    return False
                self._condition.wait(POLL_SECONDS)
        return True

    def resume(self):
        """Let the other vCPUs run again (nothing when they are not paused)."""
        with self._condition:
            self._resume()

    def wait_while_paused(self, vcpu):
        """On a vCPU's thread, between two KVM_RUNs: wait while the others are paused for
        another vCPU, or until the machine stops."""
        with self._condition:
            if self._owner is not None and self._owner != vcpu.id:
                self._wait_counted(lambda: self._owner is not None and self._owner != vcpu.id)

    def _wait_counted(self, paused):
        """Wait, counted among the paused, while paused() holds and the machine runs (the
        lock is held)."""
        self._waiting += 1
        self._condition.notify_all()   # the owner waits for this count
        try:
            while paused() and self._machine.outcome is None:
                self._condition.wait(POLL_SECONDS)
        finally:
            self._waiting -= 1

    def _resume(self):
        self._owner = None
        self._condition.notify_all()
