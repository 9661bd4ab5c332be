"""Typed values for the reasons KVM_RUN returns to userspace.

decode(run, run_view) reads struct kvm_run through its cffi fields, except the
exit reason and the I/O header, the hot path, which are read in one
struct.unpack_from at the offsets cffi gives. An exit number this module does
not know stays representable as Unsupported.
Values that steer memory access (I/O data offset and size, MMIO length, count
of internal-error words) are bounds-checked here, once, so handlers can trust
them; a kvm_run that breaks those bounds decodes as Malformed.
"""
import struct
from dataclasses import dataclass, field

import kvm_abi as abi

EXIT_NAMES = {getattr(abi, name): name[len("KVM_EXIT_"):]
              for name in dir(abi)
              if name.startswith("KVM_EXIT_") and name not in ("KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT")}


# Reason given to exits whose kvm_run fields failed their bounds checks.
MALFORMED = -1


def exit_name(reason):
    return EXIT_NAMES.get(reason, f"UNSUPPORTED({reason})")


@dataclass(slots=True)
class VcpuExit:
    """Base of every decoded exit; reason is the raw kvm_run.exit_reason."""

    reason: int

    @property
    def name(self):
        return exit_name(self.reason)


@dataclass(slots=True)
class Io(VcpuExit):
    """Port I/O; data is a writable view of the size*count bytes inside kvm_run."""

    port: int
    size: int
    count: int
    is_write: bool
    data: memoryview | None = field(repr=False)
    header: tuple | None = field(default=None, repr=False)   # the raw fields, when reused


@dataclass(slots=True)
class Mmio(VcpuExit):
    """Memory-mapped I/O; data is a writable view of the len bytes inside kvm_run."""

    phys_addr: int
    length: int
    is_write: bool
    data: memoryview = field(repr=False)


@dataclass(slots=True)
class Hlt(VcpuExit):
    pass


@dataclass(slots=True)
class Shutdown(VcpuExit):
    """Triple fault (or another shutdown condition) in the guest."""


@dataclass(slots=True)
class Interrupted(VcpuExit):
    """KVM_RUN returned EINTR: a signal or immediate_exit kicked the vCPU out."""


@dataclass(slots=True)
class FailEntry(VcpuExit):
    hardware_entry_failure_reason: int
    cpu: int


@dataclass(slots=True)
class InternalError(VcpuExit):
    """data holds the ndata words KVM supplied (at most 16)."""

    suberror: int
    data: tuple


@dataclass(slots=True)
class Unknown(VcpuExit):
    """KVM_EXIT_UNKNOWN: the hardware exit KVM did not handle."""

    hardware_exit_reason: int


@dataclass(slots=True)
class Debug(VcpuExit):
    exception: int
    pc: int
    dr6: int
    dr7: int


@dataclass(slots=True)
class SystemEvent(VcpuExit):
    type: int
    data: tuple


@dataclass(slots=True)
class Emulate(VcpuExit):
    """KVM_EXIT_EMULATE from the exec-trap patch: an instruction fetch from the marked page
    [gpa, gpa + size); gva is the fetch's linear address when gva_valid."""

    flags: int
    gpa: int
    size: int
    gva: int

    @property
    def gva_valid(self):
        return bool(self.flags & abi.KVM_EMULATE_EXIT_FLAG_GVA_VALID)

    @property
    def during_event_delivery(self):
        return bool(self.flags & abi.KVM_EMULATE_EXIT_FLAG_EVENT_DELIVERY)


@dataclass(slots=True)
class Malformed(VcpuExit):
    """An exit whose kvm_run fields are out of bounds; reason MALFORMED keeps it from devices."""

    original_reason: int
    why: str

    @property
    def name(self):
        return f"MALFORMED {exit_name(self.original_reason)}"


@dataclass(slots=True)
class Unsupported(VcpuExit):
    """An exit reason the VMM does not decode; the number is kept."""


_IO_SIZES = (1, 2, 4)
# I/O data lives in the mapping after struct kvm_run (KVM uses the second page).
_RUN_SIZE = abi.ffi.sizeof("struct kvm_run")
_MAX_INTERNAL_DATA = 16


# exit_reason and struct kvm_run.io (direction, size, port, count, data_offset)
# in one read: six cffi attribute reads cost more than the rest of an I/O
# exit's handling together.
_REASON_AT = abi.ffi.offsetof("struct kvm_run", "exit_reason")
_IO_AT = abi.ffi.offsetof("struct kvm_run", "io")
assert [abi.ffi.offsetof("struct kvm_run", "io", field) - _IO_AT
        for field in ("direction", "size", "port", "count", "data_offset")] == [0, 1, 2, 4, 8]
_REASON_AND_IO = struct.Struct(f"<I{_IO_AT - _REASON_AT - 4}xBBHIQ")
_IO_OUT = abi.KVM_EXIT_IO_OUT
# struct kvm_debug_exit_arch (exception, pad, pc, dr6, dr7) in one read: single-stepping
# makes a DEBUG exit per guest instruction.
_DEBUG_AT = abi.ffi.offsetof("struct kvm_run", "debug", "arch")
assert [abi.ffi.offsetof("struct kvm_debug_exit_arch", field)
        for field in ("exception", "pc", "dr6", "dr7")] == [0, 8, 16, 24]
_DEBUG_ARCH = struct.Struct("<I4xQQQ")
_MMIO_DATA = abi.ffi.offsetof("struct kvm_run", "mmio", "data")


def _decode_mmio(reason, run, view):
    mmio = run.mmio
    length = mmio.len
    if not 1 <= length <= 8:
        return Malformed(MALFORMED, reason, f"MMIO exit with len={length}")
    return Mmio(reason, mmio.phys_addr, length, bool(mmio.is_write), view[_MMIO_DATA:_MMIO_DATA + length])


def _decode_internal(reason, run, view):
    internal = run.internal
    ndata = min(internal.ndata, _MAX_INTERNAL_DATA)
    return InternalError(reason, internal.suberror, tuple(internal.data[0:ndata]))


def _decode_system_event(reason, run, view):
    event = run.system_event
    ndata = min(event.ndata, _MAX_INTERNAL_DATA)
    return SystemEvent(reason, event.type, tuple(event.data[0:ndata]))


_KVM_EXIT_IO = abi.KVM_EXIT_IO
_KVM_EXIT_DEBUG = abi.KVM_EXIT_DEBUG
_DECODERS = {
    abi.KVM_EXIT_MMIO: _decode_mmio,
    abi.KVM_EXIT_HLT: lambda reason, run, view: Hlt(reason),
    abi.KVM_EXIT_SHUTDOWN: lambda reason, run, view: Shutdown(reason),
    abi.KVM_EXIT_INTR: lambda reason, run, view: Interrupted(reason),
    abi.KVM_EXIT_FAIL_ENTRY: lambda reason, run, view: FailEntry(
        reason, run.fail_entry.hardware_entry_failure_reason, run.fail_entry.cpu),
    abi.KVM_EXIT_INTERNAL_ERROR: _decode_internal,
    abi.KVM_EXIT_UNKNOWN: lambda reason, run, view: Unknown(reason, run.hw.hardware_exit_reason),
    abi.KVM_EXIT_SYSTEM_EVENT: _decode_system_event,
    abi.KVM_EXIT_EMULATE: lambda reason, run, view: Emulate(
        reason, run.emulate.flags, run.emulate.gpa, run.emulate.size, run.emulate.gva),
}


def decode(run, view, io=None, debug=None):
    """Decode the exit in `run` (a struct kvm_run *); `view` is a memoryview of the whole mapping.

    An I/O exit fills `io` (an Io) and a DEBUG exit fills `debug` (a Debug) when
    one is given instead of making a new one: a vCPU reuses one of each for the
    exits that come by the hundred thousand a second (every port write, every
    single-step), which are valid until its next KVM_RUN anyway (an I/O exit's
    data is a view into the kvm_run mapping)."""
    header = _REASON_AND_IO.unpack_from(view, _REASON_AT)
    if io is not None and header == io.header:
        return io   # the same access as the last I/O exit (a loop on one port): already checked
    reason, direction, size, port, count, offset = header
    if reason == _KVM_EXIT_IO:  # most exits: decoded here, without the table
        end = offset + size * count
        if size not in _IO_SIZES or count == 0 or offset < _RUN_SIZE or end > len(view):
            return Malformed(MALFORMED, reason, f"I/O exit with size={size} count={count} data_offset={offset:#x}")
        if io is None:
            return Io(reason, port, size, count, direction == _IO_OUT, view[offset:end])
        io.port = port
        io.size = size
        io.count = count
        io.is_write = direction == _IO_OUT
        io.data = view[offset:end]
        io.header = header
        return io
    if reason == _KVM_EXIT_DEBUG:
        if debug is None:
            return Debug(reason, *_DEBUG_ARCH.unpack_from(view, _DEBUG_AT))
        debug.exception, debug.pc, debug.dr6, debug.dr7 = _DEBUG_ARCH.unpack_from(view, _DEBUG_AT)
        return debug
    decoder = _DECODERS.get(reason)
    if decoder is None:
        return Unsupported(reason)
    return decoder(reason, run, view)
