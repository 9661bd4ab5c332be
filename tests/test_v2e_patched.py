"""The patched-kernel backend's decode path, driven by crafted kvm_run buffers (this host's
KVM lacks the exec-trap patch; the kernel-patch issue's end-to-end test runs it for real)."""
import io
import struct

import pytest

import kvm_abi as abi
from vmm.kvm import exits
from vmm.trace.reader import read_trace
from vmm.v2e import V2E
from vmm.v2e.backends import BackendUnavailable, PatchedBackend, choose_backend

pytestmark = pytest.mark.kvm

WATCHED = 0x200000
HLT_AT = 0x100000
RUN_SIZE = abi.ffi.sizeof("struct kvm_run")
EMULATE_OFFSET = abi.ffi.offsetof("struct kvm_run", "emulate")


EXECUTE, GVA_VALID = abi.KVM_EMULATE_EXIT_FLAG_EXECUTE, abi.KVM_EMULATE_EXIT_FLAG_GVA_VALID


def crafted_emulate(flags, gpa, gva, size=0x1000):
    """A kvm_run page as the patched kernel fills it, written byte by byte."""
    buffer = abi.ffi.new("char[]", RUN_SIZE)
    view = memoryview(abi.ffi.buffer(buffer))
    struct.pack_into("<I", view, abi.ffi.offsetof("struct kvm_run", "exit_reason"), abi.KVM_EXIT_EMULATE)
    struct.pack_into("<4Q", view, EMULATE_OFFSET, flags, gpa, size, gva)
    return exits.decode(abi.ffi.cast("struct kvm_run *", buffer), view)


def test_decode_reads_the_payload_in_order():
    exit = crafted_emulate(EXECUTE | GVA_VALID, 0x200000, 0x7F0010)
    assert isinstance(exit, exits.Emulate), f"expected an Emulate exit, got {exit!r}"
    assert (exit.reason, exit.flags, exit.gpa, exit.size, exit.gva, exit.gva_valid) == (
        abi.KVM_EXIT_EMULATE, EXECUTE | GVA_VALID, 0x200000, 0x1000, 0x7F0010, True)
    assert crafted_emulate(EXECUTE, 0x200000, 0).gva_valid is False
    assert crafted_emulate(EXECUTE | abi.KVM_EMULATE_EXIT_FLAG_EVENT_DELIVERY, 0x200000, 0).during_event_delivery


@pytest.fixture
def patched_machine(machine, monkeypatch):
    """A long-mode machine whose VM pretends to carry the patch; exec-trap calls are recorded.
    Guest: `mov $1, %eax; add $2, %eax; jmp HLT_AT` in the watched page, `hlt` at HLT_AT."""
    calls = []
    monkeypatch.setattr(PatchedBackend, "available", staticmethod(
        lambda vm: abi.KVM_EXEC_TRAP_FEATURE_NX | abi.KVM_EXEC_TRAP_FEATURE_EMULATOR))
    vm = machine(serial_output=io.BytesIO(), mem_size=4 << 20)
    monkeypatch.setattr(vm.vm, "set_exec_trap", lambda gpa, size, mark: calls.append((gpa, size, mark)))
    vm.load(b"\xf4", mode="long", load_addr=HLT_AT, entry=WATCHED)
    jump = struct.pack("<i", HLT_AT - (WATCHED + 13))
    vm.memory.write(WATCHED, bytes.fromhex("b801000000" "83c002" "e9") + jump)
    return vm, calls


def test_emulate_exit_becomes_an_event_and_is_traced(patched_machine, tmp_path):
    vm, calls = patched_machine
    path = tmp_path / "patched.jsonl"
    seen = []
    with V2E(vm, [(WATCHED, WATCHED + 0x1000)], backend="auto", trace_path=path, on_event=seen.append) as engine:
        assert engine.backend.name == "patched"
        assert calls == [(WATCHED, 0x1000, True)], f"arming: expected one mark call, got {calls}"
        # The handler starts the event: the trap is cleared while the vCPU single-steps. The
        # guest halts right after the page, before the engine would re-arm.
        vm.loops[0].dispatch(crafted_emulate(EXECUTE | GVA_VALID, WATCHED, WATCHED))
        assert calls[1:] == [(WATCHED, 0x1000, False)], f"event: expected the trap cleared, got {calls}"
        assert vm.loops[0].driver is not None, "the vCPU is not being stepped"
        outcome = vm.run(timeout=10)
        engine.finish(outcome)
        assert calls[1:] == [(WATCHED, 0x1000, False)], f"tracing: expected the trap cleared once, got {calls}"
    assert outcome.kind == "halt", outcome
    assert [(e.gpa, e.gva, e.rip, e.backend) for e in seen] == [(WATCHED, WATCHED, WATCHED, "patched")]
    insns = [r for r in read_trace(path) if r["type"] == "insn"]
    assert [(r["rip"], r["bytes"]) for r in insns] == [
        ("0x200000", "b801000000"), ("0x200005", "83c002"), ("0x200008", "e9" + struct.pack("<i", HLT_AT - (WATCHED + 13)).hex())]
    assert insns[1]["regs"]["rax"] == "0x3"
    # cleared again when the engine closed
    assert calls[2:] == [(WATCHED, 0x1000, False)], calls


def test_the_event_gva_is_rip_linear_address_without_a_valid_gva_in_the_exit(patched_machine):
    vm, _ = patched_machine
    seen = []
    with V2E(vm, [(WATCHED, WATCHED + 0x1000)], backend="patched", on_event=seen.append):
        vm.loops[0].dispatch(crafted_emulate(EXECUTE, WATCHED, 0xDEAD))
    assert [(e.gpa, e.gva) for e in seen] == [(WATCHED, WATCHED)]


def test_emulate_exit_for_an_unwatched_gpa_is_an_error(patched_machine):
    vm, _ = patched_machine
    with V2E(vm, [(WATCHED, WATCHED + 0x1000)], backend="patched") as engine:
        vm.loops[0].dispatch(crafted_emulate(EXECUTE | GVA_VALID, 0x300000, 0x300000))
        assert engine.events == 0
    assert vm.outcome is not None and vm.outcome.kind == "kvm-error", vm.outcome
    assert vm.outcome.message == ("vCPU 0: the patched backend reported a fetch from gpa 0x300000, "
                                  "which is not watched"), vm.outcome.message


def test_the_first_exec_trap_abi_is_refused_in_one_line(machine, monkeypatch):
    """A kernel with the withdrawn first ABI reports 1: --backend patched is refused, auto uses stock."""
    monkeypatch.setattr(PatchedBackend, "available", staticmethod(lambda vm: abi.KVM_EXEC_TRAP_FIRST_ABI))
    vm = machine(serial_output=io.BytesIO())
    with pytest.raises(BackendUnavailable) as refused:
        choose_backend("patched", vm)
    message = str(refused.value)
    assert "withdrawn" in message and "\n" not in message, message
    assert choose_backend("auto", vm) == "stock"
