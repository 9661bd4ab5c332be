"""V2E on stock KVM: the packed samples run with their payload page watched."""
import io

import pytest

import kvm_abi as abi
from vmm.kvm import exits
from vmm.trace.reader import page_bytes, read_trace
from vmm.v2e import V2E, Decision
from vmm.v2e import engine as engine_module
from vmm.v2e import stepper as stepper_module
from conftest import GUESTS

pytestmark = pytest.mark.kvm

MEM = 4 << 20
KEY = 0x5A
MESSAGE = b"payload running\n"
LOOP_COUNT = 16
# mov; serial_puts (12 per character, 3 at the end); xor, mov; the loop (4 per turn); mov, ret
PAYLOAD_INSTRUCTIONS = 1 + (12 * len(MESSAGE) + 3) + 2 + 4 * LOOP_COUNT + 2
PAYLOAD_QWORDS = 9       # the 72-byte payload is copied and decrypted 8 bytes at a time


def checksum(entries=1):
    value = 0
    for count in range(LOOP_COUNT, 0, -1):
        value = (value + count) & 0xFFFFFFFF
        value = ((value << 3) | (value >> 29)) & 0xFFFFFFFF
    return value * entries & 0xFFFFFFFF


def expected_output(entries=1):
    return (b"loader: unpacking\n" + MESSAGE * entries + f"checksum {checksum(entries):08x}\n".encode())


def expected_status(entries=1):
    return (((checksum(entries) & 0x7F) << 1) | 1) & 0xFF


SAMPLES = {   # name: (mode, payload page, entries)
    "packed_long": ("long", 0x200000, 1),
    "packed_protected": ("protected", 0x200000, 1),
    "packed_real": ("real", 0x9000, 1),
    "packed_twice": ("long", 0x200000, 2),
}


class Run:
    def __init__(self, machine, outcome, output, engine, records):
        self.machine, self.outcome, self.output = machine, outcome, output
        self.engine, self.records = engine, records

    def of_type(self, kind):
        return [record for record in self.records if record["type"] == kind]


@pytest.fixture
def run_packed(machine, tmp_path):
    """Run a packed sample, watching `watch` (a list of ranges) unless it is None."""
    def run(name, watch=None, backend="stock", **engine_kwargs):
        mode = SAMPLES[name][0]
        output = io.BytesIO()
        vm = machine(serial_output=output, mem_size=MEM)
        vm.load((GUESTS / f"{name}.bin").read_bytes(), mode=mode)
        if watch is None:
            return Run(vm, vm.run(timeout=20), output.getvalue(), None, [])
        path = tmp_path / f"{name}.jsonl"
        with V2E(vm, watch, backend=backend, trace_path=path, **engine_kwargs) as engine:
            outcome = vm.run(timeout=20)
            engine.finish(outcome)
        return Run(vm, outcome, output.getvalue(), engine, read_trace(path))
    return run


def page_range(name):
    page = SAMPLES[name][1]
    return [(page, page + 0x1000)]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_entry_is_one_event_tracing_exactly_the_payload(run_packed, name):
    mode, page, entries = SAMPLES[name]
    run = run_packed(name, page_range(name))
    assert run.output == expected_output(entries), f"expected {expected_output(entries)!r}, got {run.output!r}"
    assert (run.outcome.kind, run.outcome.exit_status) == ("test-exit", expected_status(entries)), run.outcome
    events = run.of_type("event")
    assert [(e["event"], e["gpa"], e["rip"], e["backend"], e["mode"]) for e in events] == [
        (index, hex(page), hex(page), "stock", mode) for index in range(1, entries + 1)], events
    for event in events:
        insns = [r for r in run.of_type("insn") if r["event"] == event["event"]]
        assert len(insns) == PAYLOAD_INSTRUCTIONS, (
            f"event {event['event']}: expected {PAYLOAD_INSTRUCTIONS} traced instructions, got {len(insns)}")
        assert [r["step"] for r in insns] == list(range(1, PAYLOAD_INSTRUCTIONS + 1))
        assert insns[0]["rip"] == hex(page), f"first traced rip: expected {page:#x}, got {insns[0]['rip']}"
        assert insns[-1]["bytes"] == "c3", f"last traced instruction: expected ret (c3), got {insns[-1]['bytes']}"
    leaves = run.of_type("leave")
    assert [(r["reason"], r["instructions"]) for r in leaves] == [
        ("branch-out", PAYLOAD_INSTRUCTIONS)] * entries, leaves
    summary = run.records[-1]
    assert summary["type"] == "summary", f"last record: expected the summary, got {summary['type']}"
    assert (summary["events"], summary["instructions"]) == (entries, entries * PAYLOAD_INSTRUCTIONS), summary


def test_page_dump_is_the_decrypted_payload(run_packed):
    plain = run_packed("packed_long")
    run = run_packed("packed_long", page_range("packed_long"))
    pages = run.of_type("page")
    references = [event["pages"] for event in run.of_type("event")]
    assert references == [[["0x200000", pages[0]["sha256"]]]] and len(pages) == 1, (references, pages)
    dump = page_bytes(pages[0])
    assert dump == plain.machine.memory.read(0x200000, 4096), "the dump differs from the unwatched run's page"
    image = (GUESTS / "packed_long.bin").read_bytes()
    encrypted = bytes(b ^ KEY for b in dump[:8 * PAYLOAD_QWORDS])
    assert image.endswith(encrypted), "the dump is not the image's payload decrypted"
    assert dump[8 * PAYLOAD_QWORDS:] == bytes(4096 - 8 * PAYLOAD_QWORDS)


def test_loader_data_accesses_to_the_watched_page_are_served_from_ram(run_packed):
    run = run_packed("packed_long", page_range("packed_long"))
    summary = run.records[-1]
    # 9 copy writes, then 9 read-modify-writes while decrypting; none once it executes.
    assert (summary["watched_data_reads"], summary["watched_data_writes"]) == (
        PAYLOAD_QWORDS, 2 * PAYLOAD_QWORDS), summary


@pytest.mark.parametrize("name", ["packed_long", "packed_real"])
def test_watching_is_transparent(run_packed, name):
    plain = run_packed(name)
    watched = run_packed(name, page_range(name))
    assert watched.output == plain.output, f"serial output: expected {plain.output!r}, got {watched.output!r}"
    assert (watched.outcome.kind, watched.outcome.exit_status) == (plain.outcome.kind, plain.outcome.exit_status)
    for field in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
                  "r12", "r13", "r14", "r15", "rip", "rflags"):
        expected = getattr(plain.machine.vcpus[0].get_regs(), field)
        actual = getattr(watched.machine.vcpus[0].get_regs(), field)
        assert actual == expected, f"final {field}: expected {expected:#x}, got {actual:#x}"
    assert watched.machine.memory.read(0, MEM) == plain.machine.memory.read(0, MEM), "guest RAM differs"
    assert watched.machine.memory.unmapped_pages == frozenset(), "the watched page is still out of the memslots"


def test_event_callback_sees_the_event_and_unrecorded_events_are_stepped_not_recorded(run_packed):
    seen = []

    def on_event(event):
        seen.append(event)
        return Decision.UNRECORDED

    run = run_packed("packed_twice", page_range("packed_twice"), on_event=on_event)
    assert run.output == expected_output(2)
    assert [(e.index, e.gpa, e.gva, e.rip, e.backend, e.mode) for e in seen] == [
        (1, 0x200000, 0x200000, 0x200000, "stock", "long"), (2, 0x200000, 0x200000, 0x200000, "stock", "long")]
    assert seen[0].regs["rip"] == 0x200000 and seen[0].sregs["cr3"] == 0x2000, seen[0].sregs
    assert (run.engine.events, run.engine.instructions, run.engine.steps) == (2, 0, 2 * PAYLOAD_INSTRUCTIONS)
    assert [e["decision"] for e in run.of_type("event")] == ["unrecorded", "unrecorded"]


def test_event_callback_can_stop_the_guest(run_packed):
    run = run_packed("packed_long", page_range("packed_long"), on_event=lambda event: Decision.STOP)
    assert (run.outcome.kind, run.outcome.exit_status) == ("analysis-stop", 0), run.outcome
    assert run.output == b"loader: unpacking\n", f"expected only the loader's line, got {run.output!r}"
    assert run.records[-1]["outcome"] == "analysis-stop"


def test_instruction_callback_sees_each_step_and_can_stop(run_packed):
    steps = []

    def on_instruction(step):
        steps.append(step)
        return Decision.STOP if step.index == 10 else None

    run = run_packed("packed_long", page_range("packed_long"), on_instruction=on_instruction)
    assert [step.index for step in steps] == list(range(1, 11))
    assert (steps[0].rip, steps[0].code, steps[0].regs["rsi"]) == (0x200000, bytes.fromhex("be36002000"), 0x200036)
    assert (run.outcome.kind, run.engine.instructions) == ("analysis-stop", 10), run.outcome


def test_instruction_callback_skip_stops_recording(run_packed):
    run = run_packed("packed_long", page_range("packed_long"),
                     on_instruction=lambda step: Decision.UNRECORDED if step.index == 7 else None)
    assert run.output == expected_output()
    assert (run.engine.instructions, run.engine.steps) == (7, PAYLOAD_INSTRUCTIONS)


def test_budget_bounds_the_trace_and_the_guest_still_finishes(run_packed):
    run = run_packed("packed_twice", page_range("packed_twice"), max_instructions=100)
    assert run.output == expected_output(2)
    assert [(r["instructions"], r["steps"]) for r in run.of_type("leave")] == [(100, PAYLOAD_INSTRUCTIONS)] * 2
    assert len(run.of_type("insn")) == 200


def test_hlt_inside_watched_code_halts_the_guest(machine, tmp_path):
    output = io.BytesIO()
    vm = machine(serial_output=output, mem_size=MEM)
    vm.load((GUESTS / "hello_long.bin").read_bytes(), mode="long")
    path = tmp_path / "hlt.jsonl"
    with V2E(vm, [(0x100000, 0x101000)], backend="stock", trace_path=path) as engine:
        outcome = vm.run(timeout=10)
        engine.finish(outcome)
    records = read_trace(path)
    insns = [r for r in records if r["type"] == "insn"]
    assert outcome.kind == "halt", outcome
    assert output.getvalue() == b"Hello from long mode!\n"
    # mov; serial_puts over 22 characters; hlt
    assert len(insns) == 1 + 12 * 22 + 3 + 1, f"expected 269 traced instructions, got {len(insns)}"
    assert insns[-1]["bytes"] == "f4"
    assert [r["reason"] for r in records if r["type"] == "leave"] == ["halt"]


def test_other_internal_errors_stay_errors(machine):
    vm = machine(mem_size=MEM)
    vm.load((GUESTS / "packed_long.bin").read_bytes(), mode="long")
    with V2E(vm, [(0x200000, 0x201000)], backend="stock") as engine:
        # RIP is at the loader's entry, outside the watched page.
        vm.loops[0].dispatch(exits.InternalError(abi.KVM_EXIT_INTERNAL_ERROR, abi.KVM_INTERNAL_ERROR_EMULATION, ()))
        assert vm.outcome is not None and vm.outcome.kind == "kvm-error", vm.outcome
        assert "EMULATION" in vm.outcome.message, vm.outcome.message
        assert engine.events == 0


def test_other_suberror_on_a_watched_page_is_an_error(machine):
    vm = machine(mem_size=MEM)
    vm.load((GUESTS / "packed_long.bin").read_bytes(), mode="long", entry=0x200000)
    with V2E(vm, [(0x200000, 0x201000)], backend="stock") as engine:
        vm.loops[0].dispatch(exits.InternalError(abi.KVM_EXIT_INTERNAL_ERROR, abi.KVM_INTERNAL_ERROR_SIMUL_EX, ()))
        assert vm.outcome is not None and "SIMUL_EX" in vm.outcome.message, vm.outcome
        assert engine.events == 0


def test_closing_the_engine_restores_the_memslots_and_handlers(machine):
    vm = machine(mem_size=MEM)
    vm.load((GUESTS / "packed_long.bin").read_bytes(), mode="long")
    reasons = (abi.KVM_EXIT_INTERNAL_ERROR, abi.KVM_EXIT_INTR, abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO)
    before = {reason: vm.loops[0].handler(reason) for reason in reasons}
    with V2E(vm, [(0x200000, 0x202000)], backend="stock"):
        assert vm.memory.unmapped_pages == frozenset({0x200000, 0x201000})
        assert vm.mmio.find(0x201ff8, 8)[0] is not None
    assert vm.memory.unmapped_pages == frozenset()
    assert vm.mmio.find(0x200000, 1) == (None, None)
    assert {reason: vm.loops[0].handler(reason) for reason in reasons} == before


@pytest.mark.parametrize("name", ["packed_long", "packed_real"])
def test_the_trace_is_the_same_without_sync_regs(run_packed, monkeypatch, name):
    """KVM_CAP_SYNC_REGS only saves ioctls: reading each step's registers by KVM_GET_REGS
    gives the same instructions, registers and counts."""
    synced = run_packed(name, page_range(name))
    monkeypatch.setattr(engine_module, "_sync_regs_supported", lambda machine: False)
    unsynced = run_packed(name, page_range(name))
    assert synced.engine._sync_regs and not unsynced.engine._sync_regs
    assert unsynced.output == synced.output
    assert unsynced.of_type("insn") == synced.of_type("insn")
    assert unsynced.records[-1] == synced.records[-1]


def test_a_loop_is_decoded_once_and_rewritten_code_again(machine, tmp_path, monkeypatch):
    """Decoding is memoised by the bytes at RIP: the same bytes decode once, and code the
    guest rewrites under the tracer is traced as it is now."""
    decoded = []
    real_decode = stepper_module.decoder.decode
    monkeypatch.setattr(stepper_module.decoder, "decode",
                        lambda code, bits, vendor: decoded.append(code) or real_decode(code, bits, vendor))
    vm = machine(serial_output=io.BytesIO(), mem_size=MEM)
    # mov $3, %ecx; 1: mov $1, %al; incb 0x200006 (the mov's immediate); dec %ecx; jnz 1b; hlt
    code = bytes.fromhex("b903000000" "b001" "fe042506002000" "ffc9" "75f3" "f4")
    vm.load(b"\xf4", mode="long", load_addr=0x100000, entry=0x200000)
    vm.memory.write(0x200000, code)
    path = tmp_path / "rewrite.jsonl"
    with V2E(vm, [(0x200000, 0x201000)], backend="stock", trace_path=path) as engine:
        outcome = vm.run(timeout=10)
        engine.finish(outcome)
    assert outcome.kind == "halt", outcome
    insns = [r for r in read_trace(path) if r["type"] == "insn"]
    turns = [[("0x200005", f"b00{n}"), ("0x200007", "fe042506002000"), ("0x20000e", "ffc9"), ("0x200010", "75f3")]
             for n in (1, 2, 3)]
    expected = [("0x200000", "b903000000")] + sum(turns, []) + [("0x200012", "f4")]
    assert [(r["rip"], r["bytes"]) for r in insns] == expected
    assert [int(r["regs"]["rax"], 16) & 0xFF for r in insns if r["bytes"].startswith("b0")] == [1, 2, 3]
    # mov ecx, the three versions of mov al, incb, dec, jnz, hlt
    assert len(decoded) == 8, f"expected 8 decodes for {len(expected)} instructions, got {len(decoded)}"
