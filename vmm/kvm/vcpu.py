"""The vCPU file descriptor and its mapped struct kvm_run."""
import errno
import functools
import struct
import signal
import threading
from dataclasses import dataclass

import kvm_abi

from . import exits
from . import libc
from .. import fastpath
from ..errors import KvmError
from ..x86.registers import DR7_ENABLE, DR7_LOCAL, GENERAL_REGISTERS

# The signal that kicks a vCPU thread out of KVM_RUN (its handler does nothing;
# interrupting the ioctl is the point).
KICK_SIGNAL = signal.SIGUSR1

# KVM_RUN through a fixed three-argument prototype of libc's ioctl: cffi
# builds a fresh call interface for every call to a variadic function, which
# costs more than the rest of the exit path. On x86-64 a pointer argument is
# passed the same way to a variadic and a fixed-argument function.
_run_ioctl = libc.ffi.cast("int (*)(int, unsigned long, void *)", libc.lib.ioctl)
_KVM_RUN = kvm_abi.KVM_RUN
_NULL = libc.ffi.NULL
_decode = exits.decode
# With the C helper: KVM_RUN without libffi (it returns 0 or -errno), and the port loop.
_fast_run = None if fastpath.lib is None else fastpath.lib.vmm_kvm_run
_fast_run_ports = None if fastpath.lib is None else fastpath.lib.vmm_run_ports
_PLAN_DRAIN = None if fastpath.lib is None else fastpath.lib.VMM_DRAIN

# struct kvm_regs is the general registers, u64 each, in GENERAL_REGISTERS order: read in one unpack.
_REGS = struct.Struct(f"<{len(GENERAL_REGISTERS)}Q")
assert [libc.ffi.offsetof("struct kvm_regs", name) for name in GENERAL_REGISTERS] == list(
    range(0, _REGS.size, 8))
_SYNCED_REGS_AT = libc.ffi.offsetof("struct kvm_run", "s", "regs", "regs")


@dataclass(slots=True, frozen=True)
class DebuggerState:
    """What a debugger asks of KVM_SET_GUEST_DEBUG for one vCPU."""

    single_step: bool = False
    block_irq: bool = False              # no interrupt is delivered during a step
    software_breakpoints: bool = False   # int3 exits to userspace (KVM_GUESTDBG_USE_SW_BP)
    debugreg: tuple = (0, 0, 0, 0)       # DR0-DR3: linear addresses
    dr7: int = 0                         # their enables and conditions; 0: none


NO_DEBUGGER = DebuggerState()


def kick_handler_installed():
    return signal.getsignal(KICK_SIGNAL) not in (signal.SIG_DFL, signal.SIG_IGN, None)


def install_kick_handler():
    """Install the no-op KICK_SIGNAL handler; must run on the main thread, once is enough."""
    if not kick_handler_installed():
        signal.signal(KICK_SIGNAL, lambda signum, frame: None)


class Vcpu(libc.FileDescriptor):
    """A vCPU: ioctls on its fd plus the shared kvm_run page."""

    def __init__(self, fd, vcpu_id, mmap_size):
        super().__init__(fd)
        self.id = vcpu_id
        self._mmap_size = mmap_size
        self._mapping = libc.mmap(mmap_size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0)
        self.run_struct = libc.ffi.cast("struct kvm_run *", self._mapping)
        self._view = memoryview(libc.ffi.buffer(self._mapping, mmap_size))
        # Refilled at every I/O and DEBUG exit.
        self._io = exits.Io(kvm_abi.KVM_EXIT_IO, 0, 0, 0, False, None)
        self._debug = exits.Debug(kvm_abi.KVM_EXIT_DEBUG, 0, 0, 0, 0)
        self._thread_id = None
        self._tracer_steps = False
        self._debugger = NO_DEBUGGER

    # -- running -------------------------------------------------------------

    def run(self):
        """KVM_RUN once and return the decoded exit (exits.Interrupted on EINTR); the exit is
        valid until the next run() (an I/O or DEBUG exit is the same object every time)."""
        if _fast_run is not None:
            error = _fast_run(self.fd)
            if error:
                return self._run_failed(-error)
        elif _run_ioctl(self.fd, _KVM_RUN, _NULL) < 0:
            return self._run_failed(libc.ffi.errno)
        return _decode(self.run_struct, self._view, self._io, self._debug)

    def run_ports(self, plan):
        """KVM_RUN (with the C helper) until an exit the fastpath.PortPlan does not cover: the
        port accesses it covers are served in C (their bytes wait in the plan). Returns the
        decoded exit as run() does, or None when the plan's bytes are due at their device
        first (no exit is pending then)."""
        result = _fast_run_ports(self.fd, self._mapping, self._mmap_size, plan.struct)
        if result < 0:
            return self._run_failed(-result)
        if result == _PLAN_DRAIN:
            return None
        return _decode(self.run_struct, self._view, self._io, self._debug)

    @staticmethod
    def can_run_ports():
        """Whether run_ports() is there (the C helper is)."""
        return _fast_run_ports is not None

    def _run_failed(self, error):
        if error == errno.EINTR or error == errno.EAGAIN:
            self.run_struct.immediate_exit = 0
            return exits.Interrupted(kvm_abi.KVM_EXIT_INTR)
        raise KvmError("KVM_RUN", error)

    def complete_pending_io(self):
        """KVM_RUN with immediate_exit set: KVM finishes the I/O or MMIO access of the last exit
        and returns without running the guest, so userspace can change the vCPU's state."""
        self.run_struct.immediate_exit = 1
        self.run()

    def mapping_page(self, page_offset):
        """A view of one page of the vCPU's mapping (page 0 is kvm_run; KVM puts the PIO data
        and the coalesced MMIO ring on the pages its capabilities name)."""
        start = page_offset * 4096
        if not 0 < page_offset or start + 4096 > self._mmap_size:
            raise ValueError(f"page {page_offset} is outside the vCPU mapping of {self._mmap_size} bytes")
        return self._view[start:start + 4096]

    def bind_thread(self):
        """Record the calling thread as the one running this vCPU, so kick() can reach it."""
        self._thread_id = threading.get_ident()

    def runs_on_current_thread(self):
        return self._thread_id == threading.get_ident()

    def kick(self):
        """Make the running (or next) KVM_RUN return EINTR; callable from any thread."""
        self.run_struct.immediate_exit = 1
        # Without the handler the signal's default action would end the whole process.
        if self._thread_id is not None and kick_handler_installed():
            try:
                signal.pthread_kill(self._thread_id, KICK_SIGNAL)
            except ProcessLookupError:
                pass

    # -- state ---------------------------------------------------------------

    def get_regs(self):
        regs = libc.ffi.new("struct kvm_regs *")
        libc.ioctl(self.fd, kvm_abi.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_REGS, regs)

    def get_sregs(self):
        sregs = libc.ffi.new("struct kvm_sregs *")
        libc.ioctl(self.fd, kvm_abi.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_SREGS, sregs)

    # KVM_CAP_SYNC_REGS: with KVM_SYNC_X86_REGS in kvm_valid_regs, KVM copies the general
    # registers into kvm_run at every exit, which saves a KVM_GET_REGS per exit.

    def sync_regs(self, enabled):
        """Have KVM copy the general registers into kvm_run at every exit (or stop it)."""
        self.run_struct.kvm_valid_regs = kvm_abi.KVM_SYNC_X86_REGS if enabled else 0

    def register_reader(self, synced):
        """A function of no arguments returning the general registers as a tuple in
        GENERAL_REGISTERS order: from kvm_run when synced (sync_regs on: no ioctl, no Python
        frame), else by KVM_GET_REGS."""
        if synced:
            return functools.partial(_REGS.unpack_from, self._view, _SYNCED_REGS_AT)
        return lambda: _REGS.unpack(libc.ffi.buffer(self.get_regs()))

    def set_cpuid(self, entries):
        """KVM_SET_CPUID2 from a list of dicts as Kvm.supported_cpuid() returns."""
        buf = libc.ffi.new("char[]", libc.ffi.sizeof("struct kvm_cpuid2")
                           + len(entries) * libc.ffi.sizeof("struct kvm_cpuid_entry2"))
        cpuid = libc.ffi.cast("struct kvm_cpuid2 *", buf)
        cpuid.nent = len(entries)
        for i, entry in enumerate(entries):
            for name, value in entry.items():
                setattr(cpuid.entries[i], name, value)
        libc.ioctl(self.fd, kvm_abi.KVM_SET_CPUID2, cpuid)

    # KVM_SET_GUEST_DEBUG holds one state per vCPU that two users share: a tracer single-stepping
    # (set_guest_debug) and a debugger (set_debugger: its breakpoints, and its own stepping).

    def set_guest_debug(self, single_step=False, inject_db=False, breakpoint=None):
        """The tracer's single-step, on or off. While it steps, the debugger's breakpoints are
        suspended: a breakpoint fault at the next instruction would repeat at every step.
        inject_db queues a #DB for the guest (its DR6 is what KVM_SET_DEBUGREGS gave it);
        breakpoint: a linear address the tracer's step also stops at, before it executes (in
        DR0, while the guest's own debug registers stay what it reads)."""
        self._tracer_steps = single_step
        self._apply_guest_debug(inject_db, breakpoint if single_step else None)

    def set_debugger(self, state):
        """What a debugger wants of this vCPU (a DebuggerState); applied at once."""
        self._debugger = state
        self._apply_guest_debug()

    def _apply_guest_debug(self, inject_db=False, tracer_breakpoint=None):
        debug = libc.ffi.new("struct kvm_guest_debug *")
        state, tracer_steps = self._debugger, self._tracer_steps
        control = 0
        if tracer_steps or state.single_step:
            control |= kvm_abi.KVM_GUESTDBG_SINGLESTEP
            if state.block_irq and not tracer_steps:
                control |= kvm_abi.KVM_GUESTDBG_BLOCKIRQ
        if not tracer_steps:
            if state.software_breakpoints:
                control |= kvm_abi.KVM_GUESTDBG_USE_SW_BP
            if state.dr7:
                control |= kvm_abi.KVM_GUESTDBG_USE_HW_BP
                debug.arch.debugreg[0:4] = list(state.debugreg)
                debug.arch.debugreg[7] = state.dr7
        elif tracer_breakpoint is not None:
            control |= kvm_abi.KVM_GUESTDBG_USE_HW_BP
            debug.arch.debugreg[0] = tracer_breakpoint
            debug.arch.debugreg[7] = DR7_ENABLE[0] & DR7_LOCAL   # L0: an execution breakpoint
        if inject_db:
            control |= kvm_abi.KVM_GUESTDBG_INJECT_DB
        if control:
            control |= kvm_abi.KVM_GUESTDBG_ENABLE
        debug.control = control
        libc.ioctl(self.fd, kvm_abi.KVM_SET_GUEST_DEBUG, debug)

    def get_fpu(self):
        fpu = libc.ffi.new("struct kvm_fpu *")
        libc.ioctl(self.fd, kvm_abi.KVM_GET_FPU, fpu)
        return fpu

    def set_fpu(self, fpu):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_FPU, fpu)

    def get_debugregs(self):
        """The guest's own DR0-DR3, DR6 and DR7 (not a debugger's)."""
        debugregs = libc.ffi.new("struct kvm_debugregs *")
        libc.ioctl(self.fd, kvm_abi.KVM_GET_DEBUGREGS, debugregs)
        return debugregs

    def get_vcpu_events(self):
        events = libc.ffi.new("struct kvm_vcpu_events *")
        libc.ioctl(self.fd, kvm_abi.KVM_GET_VCPU_EVENTS, events)
        return events

    def set_vcpu_events(self, events):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_VCPU_EVENTS, events)

    def set_debugregs(self, debugregs):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_DEBUGREGS, debugregs)

    def get_msr(self, index):
        """One MSR's value as the guest sees it (KVM_GET_MSRS)."""
        msrs = libc.ffi.new("char[]", libc.ffi.sizeof("struct kvm_msrs") + libc.ffi.sizeof("struct kvm_msr_entry"))
        header = libc.ffi.cast("struct kvm_msrs *", msrs)
        header.nmsrs = 1
        header.entries[0].index = index
        if libc.ioctl(self.fd, kvm_abi.KVM_GET_MSRS, header) != 1:
            raise KvmError("KVM_GET_MSRS", errno.EINVAL)
        return header.entries[0].data

    def _device_attr(self, request, group, attribute, value=None):
        data = libc.ffi.new("__u64 *", value or 0)
        attr = libc.ffi.new("struct kvm_device_attr *", {
            "group": group, "attr": attribute, "addr": int(libc.ffi.cast("uintptr_t", data))})
        libc.ioctl(self.fd, request, attr)
        return data[0]

    def has_device_attr(self, group, attribute):
        try:
            self._device_attr(kvm_abi.KVM_HAS_DEVICE_ATTR, group, attribute)
        except KvmError as error:
            if error.errno in (errno.ENXIO, errno.ENOTTY, errno.EINVAL):
                return False
            raise
        return True

    def get_device_attr(self, group, attribute):
        """A 64-bit vCPU attribute (e.g. KVM_VCPU_TSC_CTRL/KVM_VCPU_TSC_OFFSET)."""
        return self._device_attr(kvm_abi.KVM_GET_DEVICE_ATTR, group, attribute)

    def set_device_attr(self, group, attribute, value):
        self._device_attr(kvm_abi.KVM_SET_DEVICE_ATTR, group, attribute, value)

    def get_mp_state(self):
        mp_state = libc.ffi.new("struct kvm_mp_state *")
        libc.ioctl(self.fd, kvm_abi.KVM_GET_MP_STATE, mp_state)
        return mp_state.mp_state

    def set_mp_state(self, mp_state):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_MP_STATE, libc.ffi.new("struct kvm_mp_state *", {"mp_state": mp_state}))

    # -- lifetime ------------------------------------------------------------

    def close(self):
        if self._mapping is not None:
            if self._io.data is not None:   # the last I/O exit's view must not outlive the mapping
                self._io.data.release()
                self._io.data = None
            self._view.release()
            libc.munmap(self._mapping, self._mmap_size)
            self._mapping = self.run_struct = self._view = None
        super().close()
