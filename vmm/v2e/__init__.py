"""V2E: trap execution of watched guest pages, analyse it instruction by instruction,
and let the guest continue at hardware speed.

    from vmm.v2e import V2E, Decision
    with V2E(machine, [(0x200000, 0x201000)], trace_path="run.jsonl",
             on_event=lambda event: Decision.TRACE) as engine:
        outcome = machine.run(timeout=10)
        engine.finish(outcome)

backends (how a watched page's execution reaches userspace), stepper (driving a vCPU one
instruction at a time), events (what the engine reports), policy (the other vCPUs while one
traces), engine (the wiring). The trace file itself is vmm.trace's.
"""
from .backends import BACKENDS, BackendUnavailable
from .engine import DEFAULT_MAX_INSTRUCTIONS, V2E
from .events import Decision, EmulateEvent, Step
from .watch import WatchSet, parse_watch

__all__ = ["BACKENDS", "BackendUnavailable", "DEFAULT_MAX_INSTRUCTIONS", "V2E", "Decision", "EmulateEvent", "Step",
           "WatchSet", "parse_watch"]
