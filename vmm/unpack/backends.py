"""How the unpacker keeps written pages from running unseen.

Both backends keep clean tracked pages (not written since they last ran, or since the start)
in read-only memslots: the guest reads and runs them at full speed, and its first write to one
exits as MMIO, which the unpacker performs and then hands the page to the backend as written.
A written page must not run before the unpacker has seen it:
- stock: it leaves the memslots. Every access then exits; writes go to KVM's coalesced MMIO
  ring instead (KVM_REGISTER_COALESCED_MMIO: they do not exit until the ring fills), and the
  ring is drained before anything reads the page. Its first instruction fetch fails emulation
  (KVM_EXIT_INTERNAL_ERROR), as with V2E's stock backend.
- patched: it stays mapped and writable, and KVM_SET_EXEC_TRAP marks it: data accesses never
  exit; the first fetch returns KVM_EXIT_EMULATE.
Once its layer has been seen, a page is clean again: read-only, executable.
"""
import struct
import threading

import kvm_abi as abi

from ..machine.memory import MAPPED, READONLY, UNMAPPED
from ..v2e.backends import choose_backend, fetch_address, withdraw_emulation_failure_ud
from ..v2e.watch import page_ranges
from ..x86 import paging
from ..x86.decoder import MAX_LENGTH
from ..x86.paging import PAGE_MASK, PAGE_SIZE

# KVM's limit of coalesced MMIO zones per VM (KVM_COALESCED_MMIO_ZONE_MAX in virt/kvm).
COALESCED_ZONES = 100
_RING_HEADER = struct.Struct("<II")                  # first, last
_RING_ENTRY = struct.Struct("<QII8s")                # phys_addr, len, pad, data
_RING_ENTRIES = (PAGE_SIZE - _RING_HEADER.size) // _RING_ENTRY.size
assert _RING_ENTRY.size == abi.ffi.sizeof("struct kvm_coalesced_mmio")


class CoalescedRing:
    """KVM's coalesced MMIO ring (one per VM, mapped in every vCPU's mapping): the guest's
    writes it buffered, applied to guest RAM in order."""

    def __init__(self, page, memory):
        self._page = page
        self._memory = memory
        self._lock = threading.Lock()
        self.writes = 0

    def drain(self):
        """Apply the buffered writes; the pages they wrote."""
        with self._lock:
            first, last = _RING_HEADER.unpack_from(self._page, 0)
            if first == last:
                return ()
            pages = set()
            while first != last:
                if first >= _RING_ENTRIES:   # the ring's indices come from the kernel; stay inside it
                    first = 0
                    continue
                gpa, length, _, data = _RING_ENTRY.unpack_from(self._page, _RING_HEADER.size + first * _RING_ENTRY.size)
                if 0 < length <= 8 and self._memory.contains(gpa, length):
                    self._memory.write(gpa, data[:length])
                    self.writes += 1
                    pages.add(gpa & PAGE_MASK)
                first = (first + 1) % _RING_ENTRIES
            struct.pack_into("<I", self._page, 0, first)
            return pages


class _Backend:
    """What both backends do the same way: clean pages are in read-only memslots."""

    def __init__(self, machine):
        self._memory = machine.memory
        self._vm = machine.vm

    def start(self, pages):
        self._memory.set_page_states({page: READONLY for page in pages})

    def protect(self, pages):
        """Pages made plain RAM by stop() are write-protected (clean) again, still executable."""
        self._memory.set_page_states({page: READONLY for page in pages})

    def finish(self):
        """Tracking has ended (stop() may also give back single pages before)."""


class StockBackend(_Backend):
    name = "stock"
    exit_reason = abi.KVM_EXIT_INTERNAL_ERROR
    sees_written_writes = True     # written pages are out of the memslots: their writes reach the VMM

    def __init__(self, machine):
        super().__init__(machine)
        self._machine = machine
        self._held_exits = None    # asked KVM for emulation-failure exits: None not yet, else granted
        self._zones = []       # [start, end) gpa ranges registered as coalesced zones
        offset = machine.kvm.check_extension(abi.KVM_CAP_COALESCED_MMIO)
        self.ring = CoalescedRing(machine.vcpus[0].mapping_page(offset), machine.memory) if offset else None

    def written(self, pages):
        # A written page's fetch must trap in user mode too (else KVM queues #UD for the guest
        # and never exits); both unpackers make pages written, only one starts with clean ones.
        if self._held_exits is None:
            self._held_exits = self._machine.hold_emulation_failure_exits()
        self._memory.set_page_states({page: UNMAPPED for page in pages})
        if self.ring is not None:
            self._coalesce(pages)

    def clean(self, pages):
        if self.ring is not None:
            self.ring.drain()
            self._uncoalesce(pages)
        self._memory.set_page_states({page: READONLY for page in pages})

    def stop(self, pages):
        if self.ring is not None:
            self.ring.drain()
            self._uncoalesce(pages)
        self._memory.set_page_states({page: MAPPED for page in pages})

    def finish(self):
        """Tracking has ended (stop() may also give back single pages before)."""
        if self._held_exits:
            self._machine.release_emulation_failure_exits()
        self._held_exits = None

    def drain(self):
        """Apply the writes buffered in the coalesced ring; the pages they wrote."""
        return self.ring.drain() if self.ring is not None else ()

    def fetch_target(self, exit, vcpu, rip, sregs, written):
        """The written page an instruction fetch failed on (with the linear address), or None."""
        if exit.suberror != abi.KVM_INTERNAL_ERROR_EMULATION:
            return None
        gpa, linear = fetch_address(self._memory, rip, sregs)
        if gpa is None or gpa & PAGE_MASK not in written:
            next_page = (linear | ~PAGE_MASK) + 1
            next_gpa = paging.translate(self._memory, sregs, next_page) if next_page - linear < MAX_LENGTH else None
            if next_gpa is None or next_gpa & PAGE_MASK not in written:
                return None
            gpa, linear = next_gpa, next_page
        withdraw_emulation_failure_ud(vcpu)
        return gpa, linear

    # Writes to written pages go to the ring: each run of pages made written at once gets a
    # zone of its own (unregistering one costs an SRCU grace period, so zones are not merged).
    # When KVM's zones run out, writes to further pages exit one by one (slower, the same).
    def _coalesce(self, pages):
        for start, end in page_ranges(pages):
            if len(self._zones) >= COALESCED_ZONES:
                return
            self._vm.register_coalesced_mmio(start, end - start)
            self._zones.append((start, end))

    def _uncoalesce(self, pages):
        """Drop the zones over `pages` (the ring drained); the other pages of those zones get
        zones again."""
        pages = set(pages)
        keep = []
        for start, end in list(self._zones):
            inside = [page for page in range(start, end, PAGE_SIZE) if page in pages]
            if not inside:
                continue
            self._vm.unregister_coalesced_mmio(start, end - start)
            self._zones.remove((start, end))
            keep += [page for page in range(start, end, PAGE_SIZE) if page not in pages]
        if keep:
            self._coalesce(keep)


class PatchedBackend(_Backend):
    name = "patched"
    exit_reason = abi.KVM_EXIT_EMULATE
    ring = None
    sees_written_writes = False    # written pages stay mapped and writable

    def written(self, pages):
        self._memory.set_page_states({page: MAPPED for page in pages})
        for start, end in page_ranges(pages):
            self._vm.set_exec_trap(start, end - start, True)

    def clean(self, pages):
        for start, end in page_ranges(pages):
            self._vm.set_exec_trap(start, end - start, False)
        self._memory.set_page_states({page: READONLY for page in pages})

    def stop(self, pages):
        for start, end in page_ranges(pages):
            self._vm.set_exec_trap(start, end - start, False)
        self._memory.set_page_states({page: MAPPED for page in pages})

    def drain(self):
        return ()

    def fetch_target(self, exit, vcpu, rip, sregs, written):
        if exit.gpa & PAGE_MASK not in written:
            return None
        return exit.gpa, None


def select_backend(name, machine):
    """The unpacking backend `name` asks for, chosen as V2E chooses its trap backend."""
    return PatchedBackend(machine) if choose_backend(name, machine) == "patched" else StockBackend(machine)
