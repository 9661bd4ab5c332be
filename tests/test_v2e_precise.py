"""The trace never lies and watching does not starve the guest: guests that reproduce each
way the engine once got it wrong (stale translations, an instruction running into a watched
page, watched code that waits for another vCPU)."""
import collections
import itertools

import pytest

from conftest import GUESTS
from test_cli import vmm
from vmm.trace.reader import read_trace
from vmm.v2e import V2E

pytestmark = pytest.mark.kvm


@pytest.fixture
def trace_file(tmp_path):
    """A new trace path in the test's directory at each call (the directory's traces are
    checked against the format at teardown)."""
    paths = (tmp_path / f"trace{number}.jsonl" for number in itertools.count(1))
    return lambda: str(next(paths))


def traced(machine, trace_file, name, ranges, mode="long", **load):
    """Run guest_images/NAME.bin with `ranges` watched; (machine, outcome, records)."""
    vm = machine(mem_size=16 << 20)
    vm.load((GUESTS / f"{name}.bin").read_bytes(), mode=mode, **load)
    path = trace_file()
    with V2E(vm, ranges, backend="stock", trace_path=path) as engine:
        outcome = vm.run(timeout=20)
        engine.finish(outcome)
    return vm, outcome, read_trace(path)


def insns(records):
    return [r for r in records if r["type"] == "insn"]


def test_a_remapped_page_is_traced_from_where_it_runs_now(machine, trace_file):
    """The watched caller calls linear 0x400000, remaps it to an unwatched page (same CR3,
    INVLPG) and calls it again: the second call runs untraced code from gpa 0x600000, and no
    record claims it came from the watched page."""
    vm, outcome, records = traced(machine, trace_file, "v2e_remap", [(0x101000, 0x102000), (0x400000, 0x401000)])
    assert outcome.kind == "done", outcome
    assert [call.args[:2] for call in vm.ucalls.reports] == [(0x22222222, 0x11111111)]
    for record in insns(records):
        gpa = int(record["gpa"], 16)
        expected = vm.memory.read(gpa, len(bytes.fromhex(record["bytes"]))).hex()
        assert record["bytes"] == expected, f"{record}: the bytes at gpa {gpa:#x} are {expected}"
    at_callee = [r for r in insns(records) if r["rip"] == "0x400000"]
    assert [(r["gpa"], r["bytes"], r["regs"]["rax"]) for r in at_callee] == [
        ("0x400000", "b822222222", "0x22222222")], at_callee
    leaves = [(r["reason"], r["rip"]) for r in records if r["type"] == "leave"]
    assert leaves[:2] == [("branch-out", "0x400000"), ("branch-out", hex(0x102000))], leaves
    events = [(r["rip"], r["gpa"]) for r in records if r["type"] == "event"]
    assert events[0] == ("0x101000", "0x101000") and len(events) == 2, events


def test_an_instruction_running_into_a_watched_page_is_recorded_from_its_first_byte(machine, trace_file):
    """b8 11 22 33 44 at 0x1ffffe runs into the watched page at 0x200000."""
    vm, outcome, records = traced(machine, trace_file, "v2e_straddle", [(0x200000, 0x201000)],
                                  load_addr=0x1ff000, entry=0x1ff000)
    assert outcome.kind == "done", outcome
    assert [call.args[0] for call in vm.ucalls.reports] == [0x44332212]
    event = next(r for r in records if r["type"] == "event")
    assert (event["rip"], event["gpa"], event["page"]) == ("0x1ffffe", "0x1ffffe", "0x200000"), event
    first = insns(records)[0]
    assert (first["rip"], first["gpa"], first["bytes"], first["regs"]["rax"]) == (
        "0x1ffffe", "0x1ffffe", "b811223344", "0x44332211"), first
    assert [r["rip"] for r in insns(records)] == ["0x1ffffe", "0x200003", "0x200006", "0x200009", "0x20000e"]


def test_memory_operands_are_recorded_with_their_linear_address_size_and_bytes_after(machine, trace_file):
    """Each memory access of guest_images/v2e_memory.s, whatever its addressing form (SIB,
    RIP-relative, FS base, the stack, a string instruction, across a page boundary), has
    its linear address, its size and the bytes there after the instruction; lea none."""
    vm, outcome, records = traced(machine, trace_file, "v2e_memory", [(0x101000, 0x102000)])
    assert outcome.kind == "done", outcome
    rsp = int(next(r for r in records if r["type"] == "event")["regs"]["rsp"], 16)
    rax = 0x0123456789ABCDEF
    expected = {
        0x10100A: [(0x30001C, 4, "44332211")],                  # movl $0x11223344, 0x10(%rbx,%rcx,4)
        0x101012: [(0x101048, 8, rax.to_bytes(8, "little").hex())],   # mov datum(%rip), %rax
        0x101019: [(0x300108, 4, "88776655")],                  # movl $0x55667788, %fs:8 (FS base 0x300100)
        0x101025: [(rsp - 8, 8, rax.to_bytes(8, "little").hex())],    # push %rax
        0x101026: [(rsp - 8, 8, rax.to_bytes(8, "little").hex())],    # pop %rsi
        0x101027: [],                                            # lea: no access
        0x10102B: [(rsp - 8, 8, (0x101030).to_bytes(8, "little").hex())],  # call leaf
        0x101047: [(rsp - 8, 8, (0x101030).to_bytes(8, "little").hex())],  # ret
        0x10103C: [(0x300FFE, 4, "ddccbbaa")],                  # across 0x301000
    }
    recorded = {int(r["rip"], 16): [(int(address, 16), size, data) for address, size, data in r["mem"]]
                for r in insns(records)}
    # stosw stores AX as the trace has it before the instruction.
    ax = next(int(r["regs"]["rax"], 16) for r in insns(records) if int(r["rip"], 16) == 0x101030) & 0xFFFF
    expected[0x101035] = [(0x300200, 2, ax.to_bytes(2, "little").hex())]
    wrong = {f"{rip:#x}": (want, recorded.get(rip)) for rip, want in expected.items() if recorded.get(rip) != want}
    assert not wrong, f"memory operands (expected, recorded): {wrong}"


@pytest.mark.parametrize("cpus", [2, 4])
def test_watched_code_that_waits_for_the_other_vcpus_finishes(cpus, tmp_path):
    """Every CPU spins in the watched page until all have arrived: unwatched and watched runs
    end the same way (status 33), each CPU's wait an event of its own."""
    unwatched = vmm("run", str(GUESTS / "smp_barrier.elf"), "--smp", str(cpus), "--timeout", "30")
    path = tmp_path / "barrier.jsonl"
    watched = vmm("run", str(GUESTS / "smp_barrier.elf"), "--smp", str(cpus), "--watch-symbol", "shared_code",
                  "--backend", "stock", "--trace", str(path), "--timeout", "60")
    assert unwatched.returncode == 33, unwatched.stderr
    assert (watched.returncode, watched.stdout) == (33, unwatched.stdout), watched.stderr
    events = collections.Counter(r["vcpu"] for r in read_trace(path) if r["type"] == "event")
    assert sorted(events) == list(range(cpus)), events


# v2e_transparency's probes: (number, what it reports)
RDTSC_PROBE = 4
RDTSC_PROBE_STEPS = 205   # shl, or, mov, mov, 100 x (dec, jnz), rdtsc
PROBES = {1: "pushf's TF bit", 2: "the guest's own TF: #DB count, return address, DR6", 3: "pushf after mov ss",
          4: "rdtsc delta", 5: "DR0, DR7, DR6", 6: "a DR0 breakpoint: #DB count, return address, DR6",
          7: "#DE: count, return address, pushed TF", 8: "#UD: count, return address, pushed TF",
          9: "#PF: count, return address, pushed TF",
          10: "#GP, its handler dropping the error code first: count, return address, pushed TF"}


def transparency_reports(machine, trace_file, watched, tsc_per_step=None):
    vm = machine(mem_size=16 << 20)
    vm.load((GUESTS / "v2e_transparency.bin").read_bytes(), mode="long")
    path = trace_file()
    records = []
    if watched:
        options = {} if tsc_per_step is None else {"tsc_per_step": tsc_per_step}
        with V2E(vm, [(0x101000, 0x102000)], backend="stock", trace_path=path, **options) as engine:
            outcome = vm.run(timeout=20)
            engine.finish(outcome)
        records = read_trace(path)
    else:
        outcome = vm.run(timeout=20)
    assert outcome.kind == "done", outcome
    return {call.args[0]: call.args[1:] for call in vm.ucalls.reports}, records


def test_the_guest_sees_the_same_flags_debug_state_and_exceptions_watched(machine, trace_file):
    """pushf, the guest's own TF (one #DB after the right instruction, DR6.BS), the MOV SS
    shadow, DR0-DR7, a DR0 breakpoint on its own code and #DE/#UD/#PF inside watched code
    (with the RFLAGS image the CPU pushed) read the same watched as unwatched."""
    unwatched, _ = transparency_reports(machine, trace_file, watched=False)
    watched, records = transparency_reports(machine, trace_file, watched=True)
    assert unwatched[2][0] == 1 and unwatched[2][2] & 0x4000, f"unwatched, the TF probe saw {unwatched[2]}"
    differing = {f"{number} ({PROBES[number]})": (unwatched[number], watched.get(number))
                 for number in PROBES if number != RDTSC_PROBE and watched.get(number) != unwatched[number]}
    assert not differing, f"watched differs from unwatched (unwatched, watched): {differing}"
    faults = [(r["reason"], r.get("detail")) for r in records if r["type"] == "leave" and r["reason"] == "fault"]
    assert faults == [("fault", "#DB"), ("fault", "#DB"), ("fault", "#DE"), ("fault", "#UD"), ("fault", "#PF"),
                      ("fault", "#GP")], faults


@pytest.mark.parametrize("tsc_per_step", [None, 7])
def test_traced_instructions_cost_the_guest_tsc_per_step_cycles(machine, trace_file, tsc_per_step):
    watched, _ = transparency_reports(machine, trace_file, watched=True, tsc_per_step=tsc_per_step)
    cycles = 20 if tsc_per_step is None else tsc_per_step
    assert watched[RDTSC_PROBE][0] == RDTSC_PROBE_STEPS * cycles, (
        f"expected {RDTSC_PROBE_STEPS} traced instructions x {cycles} cycles, the guest measured {watched[RDTSC_PROBE][0]}")


def test_a_timer_interrupt_reaches_the_guest_handler_and_ends_the_event(machine, trace_file):
    """The in-kernel LAPIC timer fires while watched code spins waiting for it, and wakes a
    watched sti; hlt: the guest's handler runs (and sees no TF in the RFLAGS the CPU pushed),
    each interrupt ends the event, and the return into the watched page is a new event that
    goes on from the instruction the interrupt came before. The traced run is slower than
    the timer, so more ticks arrive before the loop sees one (README: what watching shows)."""
    vm = machine(mem_size=16 << 20, machine_type="pc")
    vm.load((GUESTS / "v2e_timer.bin").read_bytes(), mode="long")
    path = trace_file()
    with V2E(vm, [(0x102000, 0x103000)], backend="stock", trace_path=path) as engine:
        outcome = vm.run(timeout=20)
        engine.finish(outcome)
    assert outcome.kind == "done", outcome
    reports = {call.args[0]: call.args[1:] for call in vm.ucalls.reports}
    ticks, pushed_tf, spins_left = reports[1]
    assert ticks >= 1 and pushed_tf == 0 and spins_left > 0, f"spin probe: {reports[1]}"
    assert reports[2][0] >= 1, f"hlt probe: {reports[2]}"
    records = read_trace(path)
    interrupts = [r for r in records if r["type"] == "leave" and r["reason"] == "interrupt"]
    assert interrupts and {r.get("detail") for r in interrupts} == {"vector 0x40"}, interrupts
    # Every instruction of the probed page that ran is in the trace, in the order it ran.
    rips = [int(r["rip"], 16) for r in insns(records)]
    assert rips[:3] == [0x102000, 0x102007, 0x102008], rips
    for before, after in zip(rips, rips[1:]):
        assert after in SPIN_PROBE_SUCCESSORS.get(before, {after}), f"{before:#x} -> {after:#x} in {rips}"


# spin_probe: mov (0x102000), sti, 1: cmpq (0x102008), jne 2f (0x102011), dec (0x102013), jnz 1b (0x102016), 2: cli (0x102018)
SPIN_PROBE_SUCCESSORS = {0x102000: {0x102007}, 0x102007: {0x102008}, 0x102008: {0x102011},
                         0x102011: {0x102013, 0x102018}, 0x102013: {0x102016}, 0x102016: {0x102008, 0x102018}}


def test_the_trap_is_re_armed_once_the_vcpu_has_run_unwatched_code_for_a_while(machine):
    """After the watched code returns, the vCPU is stepped for REARM_AFTER_STEPS instructions
    at most; then the trap is armed again and the loop that follows runs at full speed."""
    from vmm.machine.stats import ExitStats
    from vmm.v2e.stepper import REARM_AFTER_STEPS
    import kvm_abi as abi
    vm = machine(mem_size=16 << 20)
    # 0x100000: call 0x200000; mov $100000, %ecx; 1: dec %ecx; jnz 1b; hlt    0x200000: ret
    vm.load(bytes.fromhex("e8fbff0f00" "b9a0860100" "ffc9" "75fc" "f4"), mode="long")
    vm.memory.write(0x200000, b"\xc3")
    stats = ExitStats()
    stats.attach(vm.loops[0])
    with V2E(vm, [(0x200000, 0x201000)], backend="stock") as engine:
        outcome = vm.run(timeout=20)
        engine.finish(outcome)
    assert outcome.kind == "halt" and engine.events == 1, (outcome, engine.events)
    steps = stats.vcpus[0].exits[abi.KVM_EXIT_DEBUG]
    assert steps <= REARM_AFTER_STEPS + 2, f"expected at most {REARM_AFTER_STEPS + 2} single-steps, got {steps}"


def test_watched_code_after_a_string_copy_to_mmio_is_traced(machine, trace_file):
    """rep movsb to MMIO and back (KVM emulates each iteration and finishes it at the next
    KVM_RUN, where its writeback once dropped the single-step): every instruction after the
    copies is recorded, and the event ends where the code jumps out."""
    vm, outcome, records = traced(machine, trace_file, "v2e_rep_mmio", [(0x101000, 0x102000)])
    assert outcome.kind == "done", outcome
    assert [call.args[:2] for call in vm.ucalls.reports] == [((1 << 64) - 1, 0x2345)]
    expected = [0x101000, 0x101001, 0x101008, 0x10100d, 0x101012, 0x101014, 0x101019, 0x10101e, 0x101023,
                0x101025, 0x10102d, 0x101033, 0x10103a, 0x10103f]
    assert [r["rip"] for r in insns(records)] == [hex(rip) for rip in expected]
    leaves = [(r["reason"], r["rip"]) for r in records if r["type"] == "leave"]
    assert leaves == [("branch-out", "0x102000")], leaves
