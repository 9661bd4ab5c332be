"""Many machines in one process leave nothing behind: file descriptors, threads,
mappings, address space and RSS end where they started (psutil).

The machines run in a fresh process (this file run as a script) with
MALLOC_ARENA_MAX=1, so glibc does not add a malloc arena (64 MiB of address
space, a new mapping) whenever two threads happen to contend.
The default suite runs LEAK_VMS = 200 machines; VMM_LEAK_VMS=1000 runs the
full thousand."""
import gc
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading

import psutil
import pytest

from vmm.machine import Machine
from vmm.v2e import V2E, Decision

pytestmark = pytest.mark.kvm

LEAK_VMS = int(os.environ.get("VMM_LEAK_VMS", "200"))
# Address space and RSS may move by allocator noise; a leak of one guest page
# table set (24 KiB) per machine exceeds this after 200 machines, and a leaked
# mapping per machine (guest RAM, kvm_run) exceeds MAPPINGS_MARGIN.
MEMORY_MARGIN = 2 << 20
MAPPINGS_MARGIN = 4   # two thread stacks, each with its guard page
_STACK_LIMIT = resource.getrlimit(resource.RLIMIT_STACK)[0]
# glibc's default thread stack: RLIMIT_STACK, or 32 MiB on x86-64 when that is unlimited.
THREAD_STACK = threading.stack_size() or (32 << 20 if _STACK_LIMIT == resource.RLIM_INFINITY else _STACK_LIMIT)
CODE_PAGE = 0x100000

# (image, mode, watched, expected outcome kind, expected serial output):
# every CPU mode, every way a run ends that needs no timeout, and V2E
# watching the code page.
MIX = (
    ("hello_real", "real", False, "halt", b"Hello from real mode!\n"),
    ("hello_protected", "protected", False, "halt", b"Hello from protected mode!\n"),
    ("hello_long", "long", False, "halt", b"Hello from long mode!\n"),
    ("triple_fault", "long", False, "triple-fault", b"about to triple fault\n"),
    ("exit_status", "protected", False, "test-exit", b""),
    ("hello_long", "long", True, "halt", b"Hello from long mode!\n"),
    ("hello_protected", "protected", True, "halt", b"Hello from protected mode!\n"),
)
GUESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "guest_images")
IMAGES = {name: open(os.path.join(GUESTS, f"{name}.bin"), "rb").read() for name, *_ in MIX}


def run_one(index, trace_path):
    name, mode, watched, kind, text = MIX[index % len(MIX)]
    output = io.BytesIO()
    with Machine(mem_size=8 << 20, serial_output=output) as vm:
        vm.load(IMAGES[name], mode=mode)
        if watched:
            with V2E(vm, [(CODE_PAGE, CODE_PAGE + 4096)], trace_path=trace_path,
                     on_event=lambda event: Decision.TRACE) as engine:
                outcome = vm.run(timeout=10)
                engine.finish(outcome)
        else:
            outcome = vm.run(timeout=10)
    assert outcome.kind == kind, f"machine {index} ({name}, {mode}): expected {kind!r}, got {outcome!r}"
    assert output.getvalue() == text, f"machine {index} ({name}, {mode}): expected {text!r}, got {output.getvalue()!r}"


def usage(process):
    gc.collect()
    memory = process.memory_info()
    mappings = process.memory_maps(grouped=False)
    return {"fds": process.num_fds(), "threads": process.num_threads(), "mappings": len(mappings),
            "kvm_mappings": sum("kvm" in mapping.path for mapping in mappings),
            "vms": memory.vms, "rss": memory.rss}


def measure(count, trace_path):
    """Usage before and after `count` machines, after a quarter as many to warm up."""
    process = psutil.Process()
    # The first machines fill caches that stay and stop growing: glibc keeps
    # the stack of a finished vCPU thread for the next, CPython its free
    # lists. A leak grows with every machine.
    for index in range(count // 4):
        run_one(index, trace_path)
    before = usage(process)
    for index in range(count):
        run_one(index, trace_path)
    return before, usage(process)


def test_sequential_machines_leave_fds_threads_mappings_and_memory_where_they_were():
    result = subprocess.run([sys.executable, __file__, str(LEAK_VMS)], capture_output=True, text=True,
                            env=dict(os.environ, MALLOC_ARENA_MAX="1"), timeout=600)
    assert result.returncode == 0, f"expected the worker to exit 0, got {result.returncode}: {result.stderr}"
    before, after = json.loads(result.stdout)
    for key in ("fds", "threads", "kvm_mappings"):
        assert after[key] == before[key], (
            f"after {LEAK_VMS} machines expected {key} {before[key]}, got {after[key]}")
    # A new vCPU thread can start before the last one's stack is back in glibc's
    # cache: then the cache holds one more stack (and its guard page) for good.
    assert after["mappings"] - before["mappings"] <= MAPPINGS_MARGIN, (
        f"after {LEAK_VMS} machines expected at most {MAPPINGS_MARGIN} more mappings than "
        f"{before['mappings']}, got {after['mappings']}")
    # The heap may still settle by a few pages; the address space also holds
    # the cached thread stacks just allowed for.
    for key, margin in (("vms", MEMORY_MARGIN + MAPPINGS_MARGIN // 2 * THREAD_STACK), ("rss", MEMORY_MARGIN)):
        assert after[key] - before[key] < margin, (
            f"after {LEAK_VMS} machines expected {key} within {margin >> 10} KiB of "
            f"{before[key] >> 10} KiB, got {after[key] >> 10} KiB")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(measure(int(sys.argv[1]), os.path.join(directory, "trace.jsonl"))))
