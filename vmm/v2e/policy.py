"""How V2E shares a machine's vCPUs while one of them traces.

Disarming the trap (mapping the watched pages back, or clearing the exec-trap marks) is
VM-wide: while one vCPU traces, any other vCPU could run the watched code untrapped and
untraced. So one vCPU traces at a time and the machine's other vCPUs are paused meanwhile.
"""


class ExclusiveTracing:
    def __init__(self, machine):
        self._machine = machine
        self._pause = None

    def begin(self, vcpu):
        """Pause the other vCPUs (after any other tracer's turn) for `vcpu` to trace; False when
        the machine stops in the meantime."""
        pause = self._machine.pause(exempt=vcpu.id)
        if pause is None:
            return False
        self._pause = pause
        return True

    def end(self):
        """Let the other vCPUs run again (nothing when no vCPU traces)."""
        pause, self._pause = self._pause, None
        if pause is not None:
            pause.resume()
