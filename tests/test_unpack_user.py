"""--unpack-user: code run in user mode that its address space wrote, not what the kernel
loaded or runs; V2E events and layer records with CPL and CR3; KVM's dirty log across memslot
changes. The guest (guest_images/unpack_user.s) is a small kernel with three address spaces."""
import pytest

import kvm_abi as abi
import unpack_user_cases as cases
from conftest import GUESTS
from test_cli import assert_one_line_error, vmm
from vmm.doctor import kvm_modules
from vmm.errors import EXIT_BAD_INPUT
from vmm.machine.memory import MAPPED, READONLY
from vmm.unpack.engine import Unpacker
from vmm.unpack.user import UserUnpacker
from vmm.x86 import paging

pytestmark = pytest.mark.kvm

IMAGE = str(GUESTS / cases.IMAGE)
# kvm_pvm hands the #DB of a single step at CPL 3 to the guest, not to the VMM: V2E cannot
# trace user-mode code there (the guest gets a debug exception it did not ask for).
NO_USER_STEPS = pytest.mark.skipif("kvm_pvm" in kvm_modules(), reason=(
    "this host's KVM (kvm_pvm) delivers single-step traps at CPL 3 to the guest: make linux-nested traces "
    "user-mode code under kvm-amd instead"))


def unpack(dump_dir, *options, user=True):
    return vmm("run", IMAGE, "--unpack", cases.RANGE, "--dump-dir", str(dump_dir), *(["--unpack-user"] if user else []),
               *options, "--timeout", "60", timeout=90)


def test_the_guest_runs_as_expected_unwatched():
    plain = vmm("run", IMAGE, "--timeout", "30")
    assert (plain.returncode, plain.stdout) == (cases.EXIT_STATUS, cases.OUTPUT), plain.stderr


def test_user_layers_are_the_code_each_address_space_wrote_and_ran(tmp_path):
    result = unpack(tmp_path)
    assert (result.returncode, result.stdout) == (cases.EXIT_STATUS, cases.OUTPUT), result.stderr
    problems = cases.check_layers(tmp_path)
    assert not problems, problems
    assert "4 user-mode layer(s) in 3 address space(s) seen in user mode (stock backend)" in result.stderr.decode()


def test_without_unpack_user_what_the_kernel_wrote_and_ran_are_layers_too(tmp_path):
    """The same run with --unpack alone: the programs the kernel loaded and its own routine
    (at CPL 0) are layers as well; the records carry CPL and CR3."""
    result = unpack(tmp_path, user=False)
    assert (result.returncode, result.stdout) == (cases.EXIT_STATUS, cases.OUTPUT), result.stderr
    entries = [(int(r["entry"]["gpa"], 16), r["cpl"], r["cr3"]) for r in cases.layer_records(tmp_path)]
    # the kernel's routine (the VMM's page tables still loaded), then A's program text
    assert entries[:2] == [(0x203000, 0, "0x2000"), (0x200000, 3, "0x180000")], entries
    assert len(entries) == len(cases.LAYERS) + 2, entries


def test_the_layer_budget_ends_the_analysis_and_the_guest_runs_on(tmp_path):
    result = unpack(tmp_path, "--max-layers", "2")
    assert (result.returncode, result.stdout) == (cases.EXIT_STATUS, cases.OUTPUT), result.stderr
    assert [r["address_space"]["number"] for r in cases.layer_records(tmp_path)] == [1, 2]
    assert "2 layers: the unpacking analysis ends here" in result.stderr.decode()


@NO_USER_STEPS
def test_user_layers_are_traced_and_recorded_in_the_trace(tmp_path):
    path = tmp_path / "layers.jsonl"
    result = unpack(tmp_path / "dumps", "--trace", str(path), "--trace-layers")
    assert (result.returncode, result.stdout) == (cases.EXIT_STATUS, cases.OUTPUT), result.stderr
    problems = cases.check_layer_trace(path)
    assert not problems, problems
    shown = vmm("trace", "show", str(path), "--no-pages").stdout.decode()
    assert "CPL 3, cr3 0x188000" in shown and "linear 0x40003000" in shown, shown[:2000]


@NO_USER_STEPS
def test_v2e_events_in_user_mode_carry_cpl_and_cr3(tmp_path):
    """Two address spaces run the same physical page of program text (A, then C): two events
    at CPL 3 with their own CR3, each traced through the guest's page tables."""
    path = tmp_path / "user.jsonl"
    result = vmm("run", IMAGE, "--watch", cases.WATCH, "--trace", str(path), "--timeout", "60", timeout=90)
    assert (result.returncode, result.stdout) == (cases.EXIT_STATUS, cases.OUTPUT), result.stderr
    problems = cases.check_user_trace(path)
    assert not problems, problems
    shown = vmm("trace", "show", str(path), "--no-pages", "--max-instructions", "1").stdout.decode()
    assert "64-bit code, CPL 3, cr3 0x190000, stock backend" in shown, shown[:2000]


def test_unpack_user_needs_unpack(tmp_path):
    assert_one_line_error(vmm("run", IMAGE, "--unpack-user"), EXIT_BAD_INPUT, "--unpack-user needs --unpack")


def test_the_dirty_log_keeps_writes_across_memslot_changes(machine):
    """Pages written in a slot the layout then deletes (a page made read-only in its middle)
    are still reported; a read-only page's writes are not logged (they exit instead)."""
    vm = machine(mem_size=8 << 20)
    # movb $1, 0x200000; movb $1, 0x202000; hlt
    vm.load(bytes.fromhex("c6042500002000" "01" "c6042500202000" "01" "f4"), mode="long")
    vm.memory.log_dirty_pages()
    assert vm.memory.dirty_pages() == set()
    outcome = vm.run(timeout=10)
    assert outcome.kind == "halt", outcome
    vm.memory.set_page_states({0x201000: READONLY})
    dirty = vm.memory.dirty_pages()
    assert {0x200000, 0x202000} <= dirty and 0x201000 not in dirty, sorted(map(hex, dirty))
    assert vm.memory.dirty_pages() == set(), "the log was not cleared"
    assert vm.memory.page_state(0x200000) == MAPPED


@pytest.mark.parametrize("unpacker", [Unpacker, UserUnpacker])
def test_on_the_stock_backend_fetch_failures_exit_at_every_cpl_while_pages_are_written(machine, tmp_path, unpacker):
    """Without KVM_CAP_EXIT_ON_EMULATION_FAILURE, kvm-amd and kvm-intel queue #UD for a failed
    fetch at CPL 3 and never exit: the user-mode unpacker (its pages are written from the start)
    lost every layer to the guest kernel's #UD handler under kvm-amd (make linux-nested)."""
    vm = machine(mem_size=8 << 20)
    vm.load(bytes.fromhex("f4"), mode="long")
    if not vm.vm.check_extension(abi.KVM_CAP_EXIT_ON_EMULATION_FAILURE):
        pytest.skip("this host's KVM lacks KVM_CAP_EXIT_ON_EMULATION_FAILURE")
    with unpacker(vm, tmp_path, ranges=[(0x200000, 0x210000)], backend="stock") as tracking:
        if unpacker is Unpacker:      # its pages start clean: a written one is a fetch trap
            tracking.backend.written([0x200000])
        assert vm.emulation_failures_exit, f"{unpacker.__name__}: emulation failures above CPL 0 do not exit"
    assert not vm.emulation_failures_exit, "the capability is still held after the unpacker closed"


def test_cr3_names_an_address_space_without_pcid_and_pti_pair():
    assert paging.address_space(0x1234_5000 | 0x7) == paging.address_space(0x1234_4000) == 0x1234_4000
    assert paging.address_space(0x1234_6000) != paging.address_space(0x1234_4000)


def test_the_demo_check_finds_the_program_text_and_nothing_else(tmp_path):
    """The demo's check (unpack_user_cases.check_upx) against dumps made here from an ELF's own
    text: it passes on the text in place, fails on one changed byte and on a layer in another
    address space."""
    import json

    from vmm.loaders import elf
    program = GUESTS / "hello_elf64.elf"
    image = program.read_bytes()
    parsed = elf.parse(image, 1 << 47)
    text = next(s for s in parsed.segments if s.vaddr <= parsed.entry < s.vaddr + s.memsz)
    start = text.vaddr & ~0xFFF
    size = (text.vaddr + text.filesz - start + 0xFFF) & ~0xFFF
    region = bytearray(size)
    region[text.vaddr - start:text.vaddr - start + text.filesz] = image[text.offset:text.offset + text.filesz]

    def dump(directory, *layers):
        """Layer records with their dumps: (cr3, contents) each."""
        directory.mkdir()
        for number, (cr3, data) in enumerate(layers, start=1):
            (directory / f"layer-{number}.bin").write_bytes(bytes(data))
            (directory / f"layer-{number}.json").write_text(json.dumps({
                "layer": number, "entry": {"rip": hex(parsed.entry)}, "cpl": 3, "cr3": cr3,
                "address_space": {"number": number, "cr3": cr3, "seen_before": True},
                "region": {"gva": hex(start), "gpa": "0x0", "size": size, "file": f"layer-{number}.bin"}}))
        return directory

    problems, found = cases.check_upx(dump(tmp_path / "good", ("0x1000", region)), program)
    assert not problems and f"the {text.filesz} bytes at {text.vaddr:#x} equal the text" in found, (problems, found)
    changed = bytearray(region)
    changed[text.vaddr - start + text.filesz // 2] ^= 0xFF
    problems, _ = cases.check_upx(dump(tmp_path / "changed", ("0x1000", changed)), program)
    assert problems and "no layer holds" in problems[0], problems
    problems, _ = cases.check_upx(dump(tmp_path / "other", ("0x1000", region), ("0x2000", bytes(size))), program)
    assert problems == [f"layer 2 at rip {parsed.entry:#x} is in another address space (cr3 0x2000)"], problems


@pytest.mark.malformed_traces
@pytest.mark.parametrize("field, value, text", [("cr3", "0x5000", "is not the sregs'"), ("cpl", 7, "cpl")])
def test_an_event_whose_cpl_or_cr3_is_wrong_is_refused(tmp_path, field, value, text):
    import json

    from trace_samples import write_loop_trace
    from vmm.errors import BadInput
    from vmm.trace.reader import read_trace
    path = tmp_path / "trace.jsonl"
    write_loop_trace(path, 3)
    lines = path.read_text().splitlines()
    event = json.loads(lines[1])
    assert (event["type"], event["cpl"], event["cr3"]) == ("event", 0, event["sregs"]["cr3"]), event
    event[field] = value
    lines[1] = json.dumps(event)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInput, match=text):
        read_trace(path)
