"""The anti-analysis probe suite (guest_images/probe_*.s, include/probe.inc): watched with
the stock backend, every check prints the line it prints unwatched; where the
architecture fixes the answer, unwatched and watched print that answer; and the trace
records what ran.

Each probe guest prints one line per check, "check: verdict", and ends with status 33.
Its image's header gives the `vmm run` options it needs and the page to watch (its code
under probe lives alone in that page); a line of serial input naming a check runs that
check alone, "list" prints the names. The header reader and the comparison come from the
e2e runner (e2e/rootfs/e2e/probes.py), which runs the same suite under emulated VT-x and
SVM with the patched backend.
"""
import contextlib
import io
import re
import sys

import pytest

from conftest import GUESTS, ROOT
from test_cli import vmm
from vmm.devices.serial import SerialInput
from vmm.trace.reader import read_trace  # noqa: E402
from vmm.v2e import V2E

sys.path.insert(0, str(ROOT / "e2e" / "rootfs" / "e2e"))
from probes import check_lines, first_difference, known_difference, line_verdict, read_header  # noqa: E402

pytestmark = pytest.mark.kvm

PROBES_DONE = 33
RUN_TIMEOUT = 30          # seconds per run: a check that hangs when watched ends with status 124

# The verdict each check prints (a regular expression for the text after "check: ") where
# the architecture or the guest's own set-up fixes it; the rdtsc and hypervisor lines depend
# on the host, so only their form is fixed there, and watched must equal unwatched.
FAULT = "1 {}, ret ok, tf clear, #DB 0"
TIMER = "1 irq, ret in loop, tf clear, #DB 0"
SS_SHADOW_32 = "pop ss then pushf: tf clear, mov ss then pushf: tf clear, #DB 0"
COMMON_CHECKS = {
    "pushf-tf": "clear",
    "trap-flag": re.escape("1 #DB, ret ok, DR6.BS 1"),
    "ss-shadow": SS_SHADOW_32,
    "rdtsc-loop": "normal|slow",
    "rdtsc-cpuid": "normal|slow",
    "debug-regs": "dr0 11110000 dr1 22220000 dr2 33330000 dr3 44440000 dr6 [0-9a-f]{8} dr7 00000700",
    "dr0-breakpoint": re.escape("1 #DB, ret ok, DR6.B0 1"),
    "divide-error": re.escape(FAULT.format("#DE")),
    "invalid-opcode": re.escape(FAULT.format("#UD")),
    "page-fault": re.escape("1 #PF, ret ok, tf clear, cr2 ok, error 0, #DB 0"),
    "invalid-opcode-inpage": re.escape(FAULT.format("#UD")),
    "smc": "next new, later new",
    "page-cross": "a b c, in 44332211, out 88776655",
    "hypervisor": r"(set|clear) \S+",
}


WITH_PAGING = dict(COMMON_CHECKS)
WITHOUT_PAGING = {name: pattern for name, pattern in COMMON_CHECKS.items() if name != "page-fault"}
# ICEBP's #DB sets no DR6 bit (as Bochs's VT-x model shows too).
SOFTINT = {"int3": re.escape(FAULT.format("#BP")), "int-2d": re.escape(FAULT.format("int 2d")),
           "icebp": re.escape("1 #DB, ret ok, DR6.BS 0, faults 0")}
EXPECTED = {     # image: {check: verdict}, the checks in the order the guest runs them
    "probe_real": WITHOUT_PAGING,
    "probe_protected": WITHOUT_PAGING,
    "probe_protected_paging": WITH_PAGING,
    "probe_compat": WITH_PAGING,
    "probe_long": {**WITH_PAGING, "ss-shadow": "mov ss then pushf: tf clear, #DB 0"},   # no POP SS
    "probe_real_timer": {"pit-timer": TIMER, "pit-timer-inpage": TIMER},
    "probe_real_softint": SOFTINT,
    "probe_protected_softint": SOFTINT,
    "probe_long_softint": SOFTINT,
    "probe_compat_softint": SOFTINT,
    "probe_protected_timer": {"lapic-timer": TIMER, "lapic-timer-inpage": TIMER},
    "probe_long_timer": {"lapic-timer": TIMER, "lapic-timer-inpage": TIMER},
    "probe_smp": {"smp-barrier": "cpu0 passed, cpu1 passed"},
}
IMAGES = sorted(path.stem for path in GUESTS.glob("probe_*.bin"))

# What this host's KVM cannot run, even unwatched, recognised by how the run ends.
HOST_LIMITS = (
    (6, re.compile(rb"KVM could not emulate the instruction.*bytes at RIP \(linear 0x[0-9a-f]+\): cf ", re.S),
     "this host's KVM runs unpaged protected mode in its instruction emulator, which cannot emulate "
     "IRET outside real mode: a handler of the guest cannot return (KVM_INTERNAL_ERROR_EMULATION at "
     "its iret); make e2e runs this under VT-x and SVM"),
    (6, re.compile(rb"KVM could not emulate the instruction.*bytes at RIP \(linear 0x[0-9a-f]+\): (cc|cd|f1) ", re.S),
     "this host's KVM fails to emulate the guest's INT3, INT n or ICEBP (KVM_INTERNAL_ERROR_EMULATION at "
     "the instruction, unwatched); make e2e runs this under VT-x and SVM"),
    (4, re.compile(rb"EFER=0x0\s.*bytes at RIP \(linear 0x[0-9a-f]+\): 0f 22 c0 ", re.S),
     "this host's KVM cannot run 32-bit paging: the guest triple-faults at the MOV to CR0 that sets "
     "PG without EFER.LME; make e2e runs this under VT-x and SVM"),
)


def run_probe(image, tmp_path, only=None, watch=False, trace=None):
    """(status, serial output, stderr) of `vmm run` on a probe image, as a process."""
    path = GUESTS / f"{image}.bin"
    options, watch_range = read_header(path.read_bytes())
    command = ["run", str(path), *options, "--timeout", str(RUN_TIMEOUT)]
    if only is not None:
        selection = tmp_path / f"{only}.in"
        selection.write_text(only + "\n")
        command += ["--serial-input", str(selection)]
    if watch:
        command += ["--watch", watch_range, "--backend", "stock"]
    if trace is not None:
        command += ["--trace", str(trace)]
    result = vmm(*command, timeout=2 * RUN_TIMEOUT + 30)
    return result.returncode, result.stdout, result.stderr


def skip_what_the_host_cannot_run(run):
    status, _, stderr = run
    for limit_status, signature, reason in HOST_LIMITS:
        if status == limit_status and signature.search(stderr):
            pytest.skip(reason)


def verdict(line):
    return line.split(": ", 1)[1] if ": " in line else ""


def test_every_probe_image_is_known():
    assert sorted(EXPECTED) == IMAGES, f"expected probe images {sorted(EXPECTED)}, found {IMAGES}"


@pytest.mark.parametrize("image", IMAGES)
def test_watched_the_guest_prints_what_it_prints_unwatched(image, tmp_path):
    """All the checks in one run, unwatched then with the probed page watched."""
    plain = run_probe(image, tmp_path)
    skip_what_the_host_cannot_run(plain)
    assert plain[0] == PROBES_DONE, f"unwatched: status {plain[0]}: {plain[2].decode()[-500:]}"
    names = [line.split(":")[0] for line in check_lines(plain[1])]
    assert names == list(EXPECTED[image]), f"expected the checks {list(EXPECTED[image])}, the guest ran {names}"
    watched = run_probe(image, tmp_path, watch=True)
    difference = first_difference(plain, watched)
    assert difference is None, f"{image}: {difference}\n{watched[2].decode()[-500:]}"


def probe_cases():
    return [pytest.param(image, check, id=f"{image}-{check}")
            for image in IMAGES if image in EXPECTED for check in EXPECTED[image]]


@pytest.mark.parametrize("image, check", probe_cases())
def test_check_alone(image, check, tmp_path):
    """One check unwatched, then watched: the architecture's answer both times, the same
    line, the same status, and a trace that records what ran."""
    plain = run_probe(image, tmp_path, only=check)
    skip_what_the_host_cannot_run(plain)
    lines = check_lines(plain[1])
    assert plain[0] == PROBES_DONE and len(lines) == 1, (
        f"unwatched: status {plain[0]}, lines {lines}: {plain[2].decode()[-500:]}")
    expected = EXPECTED[image][check]
    assert re.fullmatch(expected, verdict(lines[0])), f"unwatched: expected {expected!r}, got {lines[0]!r}"
    trace = tmp_path / "trace.jsonl"
    watched = run_probe(image, tmp_path, only=check, watch=True, trace=trace)
    difference = first_difference(plain, watched)
    assert difference is None, f"{image} {check}: {difference}\n{watched[2].decode()[-500:]}"
    records = read_trace(trace)
    assert records[-1]["events"] >= 1, f"the probed code never ran watched: {records[-1]}"
    trace_check = TRACE_CHECKS.get(check)
    if trace_check:
        trace_check(image, [r for r in records if r["type"] == "insn"])


@pytest.mark.parametrize("check", sorted(SOFTINT))
def test_watched_a_check_ends_as_it_does_unwatched_even_where_the_host_cannot_run_it(check, tmp_path):
    """Whatever the host does with INT3, INT n and ICEBP (VT-x and SVM run them; this host may
    fail to emulate them), the watched run ends the same way: the same lines, the same
    status (an emulation failure while the vCPUs step is the guest's, not the trap's)."""
    plain = run_probe("probe_long_softint", tmp_path, only=check)
    watched = run_probe("probe_long_softint", tmp_path, only=check, watch=True)
    assert (watched[0], check_lines(watched[1])) == (plain[0], check_lines(plain[1])), (
        f"unwatched: status {plain[0]}, lines {check_lines(plain[1])}; watched: status {watched[0]}, "
        f"lines {check_lines(watched[1])}: {watched[2].decode()[-300:]}")


RDTSC_REPORTS = {"rdtsc-loop": 4, "rdtsc-cpuid": 5}     # include/probe.inc: REPORT_RDTSC_*


@pytest.mark.parametrize("watched", [False, True], ids=["unwatched", "watched"])
@pytest.mark.parametrize("check", sorted(RDTSC_REPORTS))
@pytest.mark.parametrize("image", ["probe_real", "probe_protected", "probe_compat", "probe_long"])
def test_rdtsc_checks_report_their_samples(image, check, watched, machine):
    """The cycle counts behind an rdtsc verdict go to the test-report port, not on the line:
    one report, tagged with the check's number, holding the smallest and largest sample
    (printed: see them with `pytest -rP`)."""
    image_bytes = (GUESTS / f"{image}.bin").read_bytes()
    options, watch_range = read_header(image_bytes)
    start, length = (int(part, 0) for part in watch_range.split("+"))
    output = io.BytesIO()
    vm = machine(serial_output=output, serial_input=SerialInput(io.BytesIO(check.encode() + b"\n")))
    vm.load(image_bytes, mode=options[options.index("--mode") + 1])
    with contextlib.ExitStack() as stack:
        engine = stack.enter_context(V2E(vm, [(start, start + length)], backend="stock")) if watched else None
        outcome = vm.run(timeout=RUN_TIMEOUT)
        if engine:
            engine.finish(outcome)
    assert (outcome.kind, outcome.exit_status) == ("test-exit", PROBES_DONE), outcome.message
    reports = [call.args for call in vm.ucalls.reports]
    assert len(reports) == 1 and reports[0][0] == RDTSC_REPORTS[check], (
        f"expected one report tagged {RDTSC_REPORTS[check]}, got {reports}")
    smallest, largest = reports[0][1:3]
    assert 0 < smallest <= largest, f"samples: smallest {smallest}, largest {largest}"
    print(f"{image} {check} {'watched' if watched else 'unwatched'}: {smallest}-{largest} cycles "
          f"({output.getvalue().decode().strip()})")


# -- what the trace must show, per check ---------------------------------------

def straddling_instruction_is_recorded_with_its_bytes(image, insns):
    """page-cross: `mov $0x44332211, %eax` starts 2 bytes before the probed page and ends in it."""
    page = int(read_header((GUESTS / f"{image}.bin").read_bytes())[1].split("+")[0], 0)
    code = ("66" if image.startswith("probe_real") else "") + "b811223344"
    records = [(r["rip"], r["gpa"], r["bytes"]) for r in insns if int(r["rip"], 16) == page - 2]
    assert records == [(hex(page - 2), hex(page - 2), code)], (
        f"expected one record of {code} at rip = gpa = {page - 2:#x}, got {records}")


def rewritten_code_is_recorded_as_it_ran(image, insns):
    """smc: the rewritten instructions are recorded with their new bytes."""
    codes = [r["bytes"] for r in insns]
    assert "b32a" in codes and "fec1" in codes and "b300" not in codes, (
        f"expected mov $0x2a, %bl (b32a) and inc %cl (fec1), never mov $0, %bl (b300): {codes}")


def breakpointed_instruction_is_recorded_once(image, insns):
    """dr0-breakpoint: the instruction at DR0 runs once (the breakpoint fires before it)."""
    writes = [r for r in insns if r["bytes"] == "0f23c0"]          # mov %eax/%rax, %dr0
    assert writes, "no record of the mov to DR0"
    target = int(writes[0]["regs"]["rax"], 16)
    runs = [r["step"] for r in insns if int(r["rip"], 16) == target]
    assert len(runs) == 1, f"the instruction at {target:#x} ran once, the trace records it {len(runs)} times"


def faulting_instruction_is_not_recorded(*codes):
    def check(image, insns):
        """A fault does not complete its instruction."""
        recorded = [(r["rip"], r["bytes"]) for r in insns if r["bytes"] in codes]
        assert not recorded, f"faulting instructions recorded as executed: {recorded}"
    return check


TRACE_CHECKS = {
    "page-cross": straddling_instruction_is_recorded_with_its_bytes,
    "smc": rewritten_code_is_recorded_as_it_ran,
    "dr0-breakpoint": breakpointed_instruction_is_recorded_once,
    "divide-error": faulting_instruction_is_not_recorded("f7f1", "66f7f1"),     # div %ecx
    "invalid-opcode": faulting_instruction_is_not_recorded("0f0b"),            # ud2
    "invalid-opcode-inpage": faulting_instruction_is_not_recorded("0f0b"),
}


@pytest.mark.parametrize("plain, watched, expected, vm86", [
    ("divide-error: 1 #DE, ret ok, tf clear, #DB 0", "divide-error: 1 #DE, ret ok, tf clear, #DB 0", "PASS", False),
    ("divide-error: 1 #DE, ret ok, tf clear, #DB 0", "divide-error: 1 #DE, ret ok, tf set, #DB 0", "KNOWN", False),
    ("divide-error: 1 #DE, ret ok, tf clear, #DB 0", "divide-error: 2 #DE, ret ok, tf set, #DB 0", "FAIL", False),
    ("divide-error: 1 #DE, ret ok, tf set, #DB 0", "divide-error: 1 #DE, ret ok, tf clear, #DB 0", "FAIL", False),
    ("rdtsc-cpuid: slow", "rdtsc-cpuid: normal", "KNOWN", False),
    ("rdtsc-cpuid: normal", "rdtsc-cpuid: slow", "FAIL", False),
    ("trap-flag: 1 #DB, ret ok, DR6.BS 1", "trap-flag: 0 #DB, ret 0x00000000, DR6.BS 0", "FAIL", False),
    ("pit-timer: 0 irq, ret 0x00000000, tf clear, #DB 0", "pit-timer: 1 irq, ret in loop, tf set, #DB 0",
     "SKIP", False),
    ("pit-timer: 1 irq, ret in loop, tf clear, #DB 0", "pit-timer: 0 irq, ret 0x00000000, tf clear, #DB 0",
     "FAIL", False),
    ("trap-flag: 1 #DB, ret ok, DR6.BS 0", "trap-flag: 1 #DB, ret ok, DR6.BS 1", "FAIL", False),
    ("trap-flag: 1 #DB, ret ok, DR6.BS 0", "trap-flag: 1 #DB, ret ok, DR6.BS 1", "KNOWN", True),
    ("dr0-breakpoint: 1 #DB, ret ok, DR6.B0 0", "dr0-breakpoint: 1 #DB, ret ok, DR6.B0 1", "KNOWN", True),
    ("trap-flag: 1 #DB, ret ok, DR6.BS 1", "trap-flag: 1 #DB, ret ok, DR6.BS 0", "FAIL", True),
    ("trap-flag: 1 #DB, ret ok, DR6.BS 0", "trap-flag: 2 #DB, ret ok, DR6.BS 1", "FAIL", True),
])
def test_the_e2e_suite_names_only_the_documented_differences_known(plain, watched, expected, vm86):
    """Inside VT-x/SVM machines (make e2e), a pushed frame holding single-step's TF and an
    unwatched run that is already slow are reported as KNOWN, as is, where KVM runs real mode
    in vm86 (vm86), a guest's own #DB whose DR6 bits only the watched run sets; a timer check
    whose unwatched run saw no interrupt is SKIP (no reference); any other difference fails."""
    check, verdict_, detail = line_verdict(plain.split(":")[0], plain, watched, vm86)
    assert verdict_ == expected, f"{plain!r} -> {watched!r}: expected {expected}, got {verdict_} ({detail})"
    if expected != "SKIP":
        assert (known_difference(plain, watched, vm86) is not None) == (expected == "KNOWN")
