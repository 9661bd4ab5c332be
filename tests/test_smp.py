"""SMP: application processors come up through INIT/SIPI from the in-kernel LAPIC,
every CPU reports its APIC id, any ending stops all vCPU threads, and V2E traces
every execution of watched code on every vCPU."""
import collections
import threading
import time

import pytest

import kvm_abi
from conftest import GUESTS
from test_cli import assert_one_line_error, vmm
from vmm.errors import EXIT_BAD_INPUT
from vmm.kvm import libc
from vmm.trace.reader import read_trace
from vmm.v2e import V2E

pytestmark = pytest.mark.kvm

SMP_STATUS = (0x10 << 1) | 1
SHARED_CODE = 0x101000             # smp.s: shared_code, alone in its page
CALLS_PER_CPU = 25
SHARED_CODE_INSTRUCTIONS = 9       # mov; dec, jnz three times; lock incl; ret


def smp_output(cpus):
    lines = [b"smp: fw_cfg reports %d" % cpus]
    lines += [b"cpu with apic id %d online" % apic_id for apic_id in range(cpus)]
    lines.append(b"smp: all %d cpus reported" % cpus)
    lines.append(b"smp: calls of the shared code: %d" % (cpus * CALLS_PER_CPU))
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_every_cpu_reports_its_apic_id(cpus):
    result = vmm("run", str(GUESTS / "smp.elf"), "--smp", str(cpus), "--timeout", "20")
    assert result.stdout == smp_output(cpus), result.stderr.decode()
    assert result.returncode == SMP_STATUS, f"expected {SMP_STATUS}, got {result.returncode}: {result.stderr}"


def test_application_processors_wait_for_sipi(machine):
    vm = machine(vcpus=3, machine_type="pc")
    states = []
    for vcpu in vm.vcpus:
        state = libc.ffi.new("struct kvm_mp_state *")
        libc.ioctl(vcpu.fd, kvm_abi.KVM_GET_MP_STATE, state)
        states.append(state.mp_state)
    assert states == [kvm_abi.KVM_MP_STATE_RUNNABLE] + [kvm_abi.KVM_MP_STATE_UNINITIALIZED] * 2


@pytest.mark.parametrize("name, kind", [("forever", "timeout"), ("triple_fault", "triple-fault")])
def test_any_ending_stops_every_vcpu_thread(machine, name, kind):
    before = {thread.name for thread in threading.enumerate()}
    vm = machine(vcpus=4, machine_type="pc")
    vm.load((GUESTS / f"{name}.bin").read_bytes(), mode="long")
    outcome = vm.run(timeout=1.0)
    assert outcome.kind == kind, f"expected {kind}, got {outcome}"
    left = {thread.name for thread in threading.enumerate()} - before
    assert not left, f"vCPU threads still running: {left}"


@pytest.mark.parametrize("args, text", [
    (["guest_images/hello_long.bin", "--smp", "2"], "--smp needs --machine pc"),
    (["guest_images/smp.elf", "--smp", "0"], "vCPU count must be between 1 and 64"),
    (["guest_images/smp.elf", "--smp", "two"], "invalid vCPU count"),
])
def test_smp_option_errors(args, text):
    assert_one_line_error(vmm("run", *args), EXIT_BAD_INPUT, text)


@pytest.mark.parametrize("cpus", [2, 4])
def test_every_call_on_every_cpu_is_one_traced_event(cpus, tmp_path):
    """All CPUs call the watched code at once. While the trap is disarmed every vCPU is
    single-stepped, so no call runs untraced and none waits for another: each call is an
    event of its own vCPU, whose records (event, page, its instructions in order, leave) are
    complete, though events of different vCPUs may interleave in the file (the page contents,
    the same at every call, are stored once)."""
    path = tmp_path / "smp.jsonl"
    result = vmm("run", str(GUESTS / "smp.elf"), "--smp", str(cpus), "--watch", hex(SHARED_CODE),
                 "--trace", str(path), "--timeout", "30")
    assert result.stdout == smp_output(cpus), result.stderr.decode()
    assert result.returncode == SMP_STATUS, f"expected {SMP_STATUS}, got {result.returncode}: {result.stderr}"
    records = read_trace(path)
    events = [r for r in records if r["type"] == "event"]
    per_vcpu = collections.Counter(event["vcpu"] for event in events)
    assert sorted(per_vcpu.items()) == [(cpu, CALLS_PER_CPU) for cpu in range(cpus)], per_vcpu
    # The shared page's contents are the same at every call: stored once, after the first event.
    assert [r["type"] for r in records[:3]] == ["header", "event", "page"]
    assert [r["type"] for r in records].count("page") == 1
    one_event = ["event"] + ["insn"] * SHARED_CODE_INSTRUCTIONS + ["leave"]
    by_event = collections.defaultdict(list)
    for record in records[1:-1]:
        if record["type"] != "page":
            by_event[record["event"]].append(record)
    for index, event_records in by_event.items():
        assert [r["type"] for r in event_records] == one_event, f"event {index}: {[r['type'] for r in event_records]}"
        steps = [r["step"] for r in event_records if r["type"] == "insn"]
        assert steps == list(range(1, SHARED_CODE_INSTRUCTIONS + 1)), f"event {index}: steps {steps}"
    assert records[-1]["type"] == "summary" and len(by_event) == cpus * CALLS_PER_CPU
    assert {(r["reason"], r["instructions"]) for r in records if r["type"] == "leave"} == {
        ("branch-out", SHARED_CODE_INSTRUCTIONS)}


def test_a_timeout_while_one_vcpu_traces_and_the_others_wait_stops_them_all(machine):
    before = {thread.name for thread in threading.enumerate()}
    vm = machine(vcpus=4, machine_type="pc")
    vm.load((GUESTS / "forever.bin").read_bytes(), mode="long")
    with V2E(vm, [(0x100000, 0x101000)], backend="stock", max_instructions=10) as engine:
        start = time.monotonic()
        outcome = vm.run(timeout=1.0)
        elapsed = time.monotonic() - start
        engine.finish(outcome)
    assert outcome.kind == "timeout", f"expected timeout, got {outcome}"
    assert elapsed < 2.0, f"the run took {elapsed:.2f} s after a 1 s timeout"
    assert engine.events == 1 and engine.instructions == 10, engine.summary(outcome)
    left = {thread.name for thread in threading.enumerate()} - before
    assert not left, f"vCPU threads still running: {left}"
