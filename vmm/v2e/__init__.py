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
import importlib

# Each name is imported from its module when first asked for: `vmm run` without --watch does
# not wait for the engine (and the instruction decoder).
_HOMES = {"BACKENDS": "backends", "BackendUnavailable": "backends", "DEFAULT_MAX_INSTRUCTIONS": "engine",
          "V2E": "engine", "Decision": "events", "EmulateEvent": "events", "Step": "events",
          "WatchSet": "watch", "parse_watch": "watch"}
__all__ = list(_HOMES)


def __getattr__(name):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
