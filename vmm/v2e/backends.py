"""How execution of a watched page reaches userspace: the exec-trap patch, or stock KVM.

A backend arms the trap (watched pages stop being directly executable),
disarms it while the engine single-steps through watched code, and turns the
exit it gets into (gpa, gva) of the fetch, or None when the exit is not one.
"""
import kvm_abi as abi

from ..errors import EXIT_NO_KVM, VmmError
from ..x86 import paging
from ..x86.decoder import MAX_LENGTH
from ..x86.idt import UD_VECTOR
from ..x86.mode import linear_rip

BACKENDS = ("auto", "patched", "stock")


class BackendUnavailable(VmmError):
    exit_status = EXIT_NO_KVM


def fetch_address(memory, rip, sregs):
    """(gpa, linear) of the instruction at RIP; gpa None when RIP does not translate."""
    linear = linear_rip(rip, sregs)
    return paging.translate(memory, sregs, linear), linear


class WatchedRam:
    """An MMIO device serving data accesses to unmapped watched pages from their RAM,
    so the guest sees ordinary memory there."""

    def __init__(self, memory, base):
        self._memory = memory
        self._base = base
        self.reads = 0
        self.writes = 0

    def read(self, offset, size):
        self.reads += 1
        return int.from_bytes(self._memory.view(self._base + offset, size), "little")

    def write(self, offset, size, value):
        self.writes += 1
        self._memory.view(self._base + offset, size)[:] = value.to_bytes(size, "little")




class StockBackend:
    """Watched pages leave the memslot layout: data accesses come back as KVM_EXIT_MMIO (served
    by WatchedRam), an instruction fetch as an emulation-failure internal error with RIP left
    at the instruction."""

    name = "stock"
    exit_reason = abi.KVM_EXIT_INTERNAL_ERROR

    def __init__(self, machine, watch):
        self._machine = machine
        self._memory = machine.memory
        self._mmio = machine.mmio
        self._watch = watch
        self.devices = []
        self._held_exits = False

    def start(self):
        # A fetch trap in user mode too (else KVM queues #UD for the guest and never exits).
        self._held_exits = self._machine.hold_emulation_failure_exits()
        for start, end in self._watch.ranges:
            device = WatchedRam(self._memory, start)
            self._mmio.register(device, start, end - start)
            self.devices.append(device)
        self.arm()

    def arm(self):
        self._memory.set_unmapped_pages(self._watch.pages)

    def disarm(self):
        self._memory.set_unmapped_pages(())

    def fetch_target(self, exit, vcpu, rip, sregs):
        if exit.suberror != abi.KVM_INTERNAL_ERROR_EMULATION:
            return None
        gpa, linear = fetch_address(self._memory, rip, sregs)
        target = None
        if gpa is not None and gpa in self._watch:
            target = gpa, linear
        else:
            # An instruction that starts just before a watched page and runs into it.
            next_page = (linear | ~paging.PAGE_MASK) + 1
            if next_page - linear < MAX_LENGTH:
                next_gpa = paging.translate(self._memory, sregs, next_page)
                if next_gpa is not None and next_gpa in self._watch:
                    target = next_gpa, next_page
        if target is not None:
            withdraw_emulation_failure_ud(vcpu)
        return target

    def stop(self):
        self.disarm()
        for device in self.devices:
            self._mmio.unregister(device)
        self.devices = []
        if self._held_exits:
            self._machine.release_emulation_failure_exits()
            self._held_exits = False

    def counters(self):
        return {"watched_data_reads": sum(d.reads for d in self.devices),
                "watched_data_writes": sum(d.writes for d in self.devices)}


def withdraw_emulation_failure_ud(vcpu):
    """KVM queues #UD for the guest when it reports an emulation failure (handle_emulation_failure
    in x86.c; the paravirtual KVM here does not). The fetch is ours to serve, not a guest fault."""
    events = vcpu.get_vcpu_events()
    exception = events.exception
    if (exception.injected or exception.pending) and exception.nr == UD_VECTOR:
        exception.injected = exception.pending = 0
        events.exception_has_payload = 0
        vcpu.set_vcpu_events(events)


class PatchedBackend:
    """The exec-trap patch: KVM_SET_EXEC_TRAP marks pages, a fetch from one returns
    KVM_EXIT_EMULATE with the gpa (and the gva when flagged valid)."""

    name = "patched"
    exit_reason = abi.KVM_EXIT_EMULATE

    def __init__(self, machine, watch):
        self._vm = machine.vm
        self._watch = watch

    @staticmethod
    def available(vm):
        """The patch's feature bits on this VM (0 when the kernel lacks the patch)."""
        return vm.check_extension(abi.KVM_CAP_EXEC_TRAP)

    def start(self):
        self.arm()

    def arm(self):
        for start, end in self._watch.ranges:
            self._vm.set_exec_trap(start, end - start, True)

    def disarm(self):
        for start, end in self._watch.ranges:
            self._vm.set_exec_trap(start, end - start, False)

    def fetch_target(self, exit, vcpu, rip, sregs):
        return exit.gpa, exit.gva if exit.gva_valid else None

    def stop(self):
        self.disarm()

    def counters(self):
        return {}


class NoTrap:
    """No trap at all: the caller says when to trace (V2E.trace_region)."""

    name = "none"
    exit_reason = None

    def start(self):
        pass

    arm = disarm = stop = start

    def counters(self):
        return {}


def choose_backend(name, machine):
    """'patched' or 'stock': what `name` asks for on this host ('auto': the patched kernel when
    present, else stock)."""
    if name not in BACKENDS:
        raise VmmError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name == "stock":
        return "stock"
    features = PatchedBackend.available(machine.vm)
    if features & abi.KVM_EXEC_TRAP_FEATURE_NX:
        return "patched"
    if name == "auto":
        return "stock"
    if features == abi.KVM_EXEC_TRAP_FIRST_ABI:
        raise BackendUnavailable("--backend patched: this host's exec-trap patch is the first, withdrawn "
                                 "version of its ABI (KVM_CAP_EXEC_TRAP reports 1); install the current "
                                 "one (make -C patches install) or use --backend stock")
    if features == 0:
        raise BackendUnavailable("--backend patched: this host's KVM lacks the exec-trap patch "
                                 "(KVM_CAP_EXEC_TRAP is not reported); use --backend stock or auto")
    raise BackendUnavailable("--backend patched: this host's exec-trap patch lacks KVM_EXEC_TRAP_FEATURE_NX "
                             f"(KVM_CAP_EXEC_TRAP reports {features:#x}); use --backend stock or auto")


def select_backend(name, machine, watch):
    """The V2E trap backend `name` asks for (see choose_backend)."""
    backend = PatchedBackend if choose_backend(name, machine) == "patched" else StockBackend
    return backend(machine, watch)
