"""The fuzz harness: seeded random guests, one run each, classified outcomes.

A case is a byte string loaded as the guest image in one CPU mode, with or
without V2E watching the page it starts in, run with a short timeout. A run
passes when it ends in an Outcome (halt, test-exit, triple fault, KVM error,
timeout, ...) within a second of its timeout and no Python exception escapes.
"""
import io
import random
import time
import traceback

from vmm.x86.boot import DEFAULT_LOAD_ADDR, MODES
from vmm.errors import VmmError
from vmm.machine import Machine
from vmm.v2e import V2E, Decision

MEM_SIZE = 4 << 20
MAX_STEPS = 200          # instructions V2E records per event
LATE_BY_AT_MOST = 1.0    # seconds a run may exceed its timeout

# Instructions that reach the VMM or end runs, spliced into the random bytes
# so that a useful share of cases do more than fault at once.
INTERESTING = (
    b"\xf4",                  # hlt
    b"\xe6\xf4",              # out %al, $0xf4 (test-exit)
    b"\xba\xf8\x03\xee",      # mov $0x3f8, %dx; out %al, %dx (mode-dependent immediate size)
    b"\xec", b"\xed", b"\xee", b"\xef",   # in/out through %dx
    b"\xf3\x6e", b"\xf3\x6c", b"\xf3\x6f", b"\xf3\x6d",   # rep outsb/insb/outsd/insd
    b"\xf3\xaa", b"\xf3\xab",  # rep stos
    b"\x0f\x0b",              # ud2
    b"\xcd\x03", b"\xcc",     # int $3, int3
    b"\x0f\x01\xc1",          # vmcall
    b"\x0f\x22\xd8",          # mov %eax, %cr3
    b"\x0f\x30", b"\x0f\x32", # wrmsr, rdmsr
    b"\xeb\xfe",              # jmp . (spin until the timeout)
    b"\xfa", b"\xfb",         # cli, sti
    b"\x0f\xa2",              # cpuid
)


class Case:
    __slots__ = ("index", "mode", "watched", "image")

    def __init__(self, index, mode, watched, image):
        self.index, self.mode, self.watched, self.image = index, mode, watched, image

    def __repr__(self):
        return f"Case({self.index}, {self.mode}, watched={self.watched}, image={self.image.hex()})"


def generate(seed, count, watch=True):
    """`count` cases from `seed`: the same seed always gives the same cases."""
    rng = random.Random(seed)
    for index in range(count):
        parts = []
        for _ in range(rng.randint(1, 24)):
            if rng.random() < 0.3:
                parts.append(rng.choice(INTERESTING))
            else:
                parts.append(rng.randbytes(rng.randint(1, 16)))
        image = b"".join(parts)
        yield Case(index, rng.choice(MODES), watch and rng.random() < 0.3, image)


def classify(outcome):
    """A short name for an outcome: its kind, and for KVM errors the exit that caused it."""
    if outcome.kind == "kvm-error":
        detail = outcome.message.split(": ", 1)[-1]
        return f"kvm-error {detail.split(':', 1)[0].split(' (', 1)[0]}"
    return outcome.kind


def run_case(case, timeout):
    """(class, seconds the run took, detail): class is the outcome's; 'ESCAPED ...' or 'LATE' are failures."""
    elapsed = 0.0
    try:
        with Machine(mem_size=MEM_SIZE, serial_output=io.BytesIO()) as vm:
            vm.load(case.image, mode=case.mode)
            if case.watched:
                page = DEFAULT_LOAD_ADDR[case.mode] & ~0xFFF
                with V2E(vm, [(page, page + 4096)], max_instructions=MAX_STEPS,
                         on_event=lambda event: Decision.TRACE) as engine:
                    started = time.monotonic()
                    outcome = vm.run(timeout=timeout)
                    elapsed = time.monotonic() - started
                    engine.finish(outcome)
            else:
                started = time.monotonic()
                outcome = vm.run(timeout=timeout)
                elapsed = time.monotonic() - started
    except VmmError as error:
        return f"vmm-error {type(error).__name__}", elapsed, str(error)
    except Exception as error:  # noqa: BLE001 - the harness's whole point is to catch escapes
        return f"ESCAPED {type(error).__name__}", elapsed, traceback.format_exc()
    if elapsed > timeout + LATE_BY_AT_MOST:
        return "LATE", elapsed, f"{outcome!r} after {elapsed:.2f} s"
    return classify(outcome), elapsed, outcome.message


def is_failure(kind):
    return kind.startswith("ESCAPED") or kind == "LATE" or kind.startswith("vmm-error")
