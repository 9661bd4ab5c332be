#!/usr/bin/env python3
"""V2E benchmark (a script, not a test): events per second, traced instructions per second,
and what the stock backend costs per watched data access and per event.

Each scenario runs a small long-mode guest built here as machine code: a loader at
0x100000 and, where needed, code in the watched page at 0x200000.

    python tests/bench/bench_v2e.py [--events N] [--accesses N] [--loop N] [--json PATH]
"""
import argparse
import json
import os
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from vmm.machine import Machine  # noqa: E402
from vmm.v2e import V2E, Decision  # noqa: E402

WATCHED = 0x200000
MEM = 4 << 20


def counted_loop(count, body):
    """mov $count, %ecx; body; dec %ecx; jnz body; hlt"""
    back = -(len(body) + 4)
    return b"\xb9" + struct.pack("<I", count) + body + b"\xff\xc9\x75" + struct.pack("<b", back) + b"\xf4"


def data_access_guest(count):
    return counted_loop(count, bytes.fromhex("890425") + struct.pack("<I", WATCHED)), b""   # mov %eax, WATCHED


def event_guest(count):
    return counted_loop(count, bytes.fromhex("b8") + struct.pack("<I", WATCHED) + b"\xff\xd0"), b"\xc3"


def trace_guest(loop):
    loader = bytes.fromhex("b8") + struct.pack("<I", WATCHED) + b"\xff\xd0\xf4"   # call WATCHED; hlt
    payload = b"\xb9" + struct.pack("<I", loop) + b"\xff\xc9\x75\xfc\xc3"         # 1 + 2 * loop + 1 instructions
    return loader, payload


def run(guest, watch, trace_path=None, on_event=None):
    """Seconds the guest takes to halt, and the engine's counters."""
    loader, payload = guest
    with Machine(mem_size=MEM) as machine:
        machine.load(loader, mode="long")
        machine.memory.write(WATCHED, payload)
        if not watch:
            start = time.perf_counter()
            outcome = machine.run(timeout=600)
            elapsed = time.perf_counter() - start
            counters = {}
        else:
            with V2E(machine, [(WATCHED, WATCHED + 0x1000)], backend="stock", trace_path=trace_path,
                     max_instructions=1 << 40, on_event=on_event) as engine:
                start = time.perf_counter()
                outcome = machine.run(timeout=600)
                elapsed = time.perf_counter() - start
                engine.finish(outcome)
                counters = engine.summary(outcome)
        if outcome.kind != "halt":
            raise SystemExit(f"bench guest ended with {outcome.kind}: {outcome.message}")
    return elapsed, counters


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="entries into the watched page")
    parser.add_argument("--accesses", type=int, default=20000, help="data writes to the watched page")
    parser.add_argument("--loop", type=int, default=10000, help="turns of the traced loop (2 instructions each)")
    parser.add_argument("--json", default="bench_v2e.json", metavar="PATH", help="where to write the results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        trace_file = os.path.join(scratch, "bench.jsonl")

        plain, _ = run(data_access_guest(args.accesses), watch=False)
        watched, counters = run(data_access_guest(args.accesses), watch=True)
        assert counters["watched_data_writes"] == args.accesses, counters
        rows.append(("watched data accesses/s", args.accesses / watched, "access/s"))
        rows.append(("stock cost per watched data access", (watched - plain) / args.accesses * 1e6, "us"))

        plain, _ = run(event_guest(args.events), watch=False)
        skipped, counters = run(event_guest(args.events), watch=True, on_event=lambda event: Decision.UNRECORDED)
        assert counters["events"] == args.events, counters
        traced, counters = run(event_guest(args.events), watch=True, trace_path=trace_file)
        assert (counters["events"], counters["instructions"]) == (args.events, args.events), counters
        rows.append(("events/s (1-instruction payload, traced to a file)", args.events / traced, "event/s"))
        rows.append(("stock cost per event (traced, 1 instruction)", (traced - plain) / args.events * 1e6, "us"))
        rows.append(("stock cost per event (skipped, 1 step)", (skipped - plain) / args.events * 1e6, "us"))

        instructions = 2 * args.loop + 2
        traced, counters = run(trace_guest(args.loop), watch=True, trace_path=trace_file)
        assert counters["instructions"] == instructions, counters
        rows.append(("traced instructions/s (to a file)", instructions / traced, "insn/s"))
        unrecorded, counters = run(trace_guest(args.loop), watch=True)
        rows.append(("traced instructions/s (no file)", instructions / unrecorded, "insn/s"))
        stepped, counters = run(trace_guest(args.loop), watch=True, on_event=lambda event: Decision.UNRECORDED)
        assert counters["steps"] == instructions, counters
        rows.append(("single-steps/s (skipped, not recorded)", instructions / stepped, "step/s"))

    width = max(len(name) for name, _, _ in rows)
    print(f"{'measure':<{width}}  {'value':>12}  unit")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>12.1f}  {unit}")
    results = {"parameters": {"events": args.events, "accesses": args.accesses, "loop": args.loop},
               "results": [{"measure": name, "value": round(value, 3), "unit": unit} for name, value, unit in rows]}
    with open(args.json, "w") as output:
        json.dump(results, output, indent=2)
        output.write("\n")
    print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
