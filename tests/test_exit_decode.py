"""Decoding exits this host cannot produce, from crafted kvm_run buffers."""
import pytest

import kvm_abi as abi
from vmm.kvm import exits
from vmm.machine import report

RUN_MAPPING = 3 * 4096


@pytest.fixture
def run():
    buffer = abi.ffi.new("char[]", RUN_MAPPING)
    struct = abi.ffi.cast("struct kvm_run *", buffer)
    view = memoryview(abi.ffi.buffer(buffer))

    def decode(reason, **members):
        struct.exit_reason = reason
        for path, value in members.items():
            target = struct
            *parents, leaf = path.split("__")
            for name in parents:
                target = getattr(target, name)
            setattr(target, leaf, value)
        return exits.decode(struct, view)

    decode.struct = struct
    decode.view = view
    return decode


def test_fail_entry_invalid_guest_state_names_the_reason_and_hints(run):
    exit = run(abi.KVM_EXIT_FAIL_ENTRY, fail_entry__hardware_entry_failure_reason=0x80000021, fail_entry__cpu=3)
    assert isinstance(exit, exits.FailEntry), f"expected FailEntry, got {exit!r}"
    assert (exit.hardware_entry_failure_reason, exit.cpu) == (0x80000021, 3)
    text = report.describe(exit)
    assert "FAIL_ENTRY" in text and "INVALID_GUEST_STATE, VM-entry failure" in text
    assert "hint: invalid guest state" in text


def test_internal_error_names_the_suberror_and_shows_the_data_words(run):
    exit = run(abi.KVM_EXIT_INTERNAL_ERROR, internal__suberror=abi.KVM_INTERNAL_ERROR_DELIVERY_EV,
               internal__ndata=3, internal__data=[0x80000b0e, 0x31, 0xdead])
    assert isinstance(exit, exits.InternalError), f"expected InternalError, got {exit!r}"
    assert exit.data == (0x80000b0e, 0x31, 0xdead)
    assert report.describe(exit) == ("INTERNAL_ERROR: DELIVERY_EV (exit while delivering an event); "
                                     "data: [0x80000b0e 0x31 0xdead]")


def test_internal_error_ndata_is_clamped_to_the_array(run):
    exit = run(abi.KVM_EXIT_INTERNAL_ERROR, internal__suberror=1, internal__ndata=0xFFFFFFFF)
    assert len(exit.data) == 16


def test_unknown_exit_names_both_vendor_tables(run):
    exit = run(abi.KVM_EXIT_UNKNOWN, hw__hardware_exit_reason=48)
    assert isinstance(exit, exits.Unknown), f"expected Unknown, got {exit!r}"
    assert report.describe(exit) == ("UNKNOWN: hardware_exit_reason 0x30 (VMX: EPT_VIOLATION; SVM: WRITE_DR0)")
    npf = run(abi.KVM_EXIT_UNKNOWN, hw__hardware_exit_reason=0x400)
    assert "SVM: NPF" in report.describe(npf)


def test_emulate_exit_from_the_exec_trap_patch(run):
    exit = run(abi.KVM_EXIT_EMULATE,
               emulate__flags=abi.KVM_EMULATE_EXIT_FLAG_EXECUTE | abi.KVM_EMULATE_EXIT_FLAG_GVA_VALID,
               emulate__gpa=0x203000, emulate__size=0x1000, emulate__gva=0xffff800000203010)
    assert isinstance(exit, exits.Emulate), f"expected Emulate, got {exit!r}"
    assert (exit.gpa, exit.size, exit.gva, exit.gva_valid, exit.during_event_delivery) == (
        0x203000, 0x1000, 0xffff800000203010, True, False)


def test_io_exit_data_is_a_view_into_the_run_page(run):
    exit = run(abi.KVM_EXIT_IO, io__direction=abi.KVM_EXIT_IO_IN, io__size=2, io__port=0x3f8,
               io__count=3, io__data_offset=4096)
    assert isinstance(exit, exits.Io) and not exit.is_write
    exit.data[:] = b"abcdef"
    assert bytes(run.view[4096:4102]) == b"abcdef"


@pytest.mark.parametrize("size, count, offset", [
    (3, 1, 4096),                        # not an I/O size
    (1, 0, 4096),                        # no items
    (1, 1, 16),                          # data inside struct kvm_run
    (4, 0x40000000, 4096),               # runs past the mapping
    (1, 1, RUN_MAPPING),                 # starts past the mapping
    (1, 2, 0xFFFFFFFFFFFFFFFF),          # wraps
])
def test_io_exit_out_of_bounds_is_malformed(run, size, count, offset):
    exit = run(abi.KVM_EXIT_IO, io__direction=abi.KVM_EXIT_IO_OUT, io__size=size, io__port=0x3f8,
               io__count=count, io__data_offset=offset)
    assert isinstance(exit, exits.Malformed), f"expected Malformed, got {exit!r}"
    assert exit.reason == exits.MALFORMED and exit.original_reason == abi.KVM_EXIT_IO


@pytest.mark.parametrize("length", [0, 9, 0xFFFFFFFF])
def test_mmio_exit_with_bad_length_is_malformed(run, length):
    exit = run(abi.KVM_EXIT_MMIO, mmio__phys_addr=0xd0000000, mmio__len=length)
    assert isinstance(exit, exits.Malformed), f"expected Malformed, got {exit!r}"


def test_unknown_exit_numbers_stay_representable(run):
    exit = run(77)
    assert isinstance(exit, exits.Unsupported) and exit.reason == 77
    assert exit.name == "UNSUPPORTED(77)"
    assert "exit reason 77 is not handled" in report.describe(exit)


def test_system_event(run):
    exit = run(abi.KVM_EXIT_SYSTEM_EVENT, system_event__type=abi.KVM_SYSTEM_EVENT_RESET, system_event__ndata=1)
    assert isinstance(exit, exits.SystemEvent)
    assert report.describe(exit) == "SYSTEM_EVENT: RESET"


def test_debug_exit(run):
    exit = run(abi.KVM_EXIT_DEBUG, debug__arch__exception=1, debug__arch__pc=0x200005,
               debug__arch__dr6=0xFFFF4FF0, debug__arch__dr7=0x400)
    assert isinstance(exit, exits.Debug), f"expected Debug, got {exit!r}"
    assert (exit.exception, exit.pc, exit.dr6, exit.dr7) == (1, 0x200005, 0xFFFF4FF0, 0x400)


def test_every_exit_reason_keeps_its_name():
    """Constants named KVM_EXIT_* that are not exit reasons must not shadow one in the names."""
    for name in dir(abi):
        if name.startswith("KVM_EXIT_") and name not in ("KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT"):
            assert exits.exit_name(getattr(abi, name)) == name[len("KVM_EXIT_"):], name
