"""The V2E engine the debugger works with: the one the command line started (--watch), or one
`monitor v2e watch` starts. One engine at a time watches a machine."""
from ..errors import VmmError
from ..v2e import V2E
from ..trace.format import plural


class Watching:
    def __init__(self, machine, backend, max_instructions, on_event, on_step):
        self._machine = machine
        self._backend = backend
        self._max_instructions = max_instructions
        self._callbacks = {"on_event": on_event, "on_step": on_step, "rearm_after_steps": 0}
        self.engine = None
        self._started_here = False

    def adopt(self, engine):
        """The command line's engine (None without --watch)."""
        self.engine = engine

    def watched(self, gpa):
        return self.engine is not None and gpa in self.engine.watch

    def watch(self, start, end):
        """Start an engine on [start, end) (VmmError when one runs or the range is refused)."""
        if self.engine is not None:
            ranges = ", ".join(f"{low:#x}-{high:#x}" for low, high in self.engine.watch.ranges)
            raise VmmError(f"V2E already watches {ranges}: `monitor v2e unwatch` first")
        self.engine = V2E(self._machine, [(start, end)], backend=self._backend, max_instructions=self._max_instructions,
                          **self._callbacks)
        self._started_here = True

    def unwatch(self, busy=()):
        """Close the engine; `busy`: vCPUs stopped inside one of its events."""
        if self.engine is None:
            raise VmmError("V2E watches nothing")
        tracing = sorted(set(busy) | {loop.vcpu.id for loop in self._machine.loops if loop.driver is not None})
        if tracing:
            raise VmmError(f"V2E is inside an event on vCPU {tracing[0]}: continue until it leaves the watched pages")
        self.engine.close()   # a trace file gets its summary now
        self.engine, self._started_here = None, False

    def status(self):
        engine = self.engine
        if engine is None:
            return "V2E watches nothing"
        ranges = ", ".join(f"{low:#x}-{high:#x}" for low, high in engine.watch.ranges)
        return (f"V2E watches {ranges} ({engine.backend.name} backend): {plural(engine.events, 'event')}, "
                f"{plural(engine.instructions, 'instruction')} traced")

    def close(self):
        if self._started_here:
            self.engine.close()
        self.engine, self._started_here = None, False
