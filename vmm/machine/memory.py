"""Guest RAM: host mmaps registered with KVM as memslots, accessed by guest-physical address.

A RAM region's backing memory and its memslots are separate: pages can be
taken out of the slot layout (so guest accesses to them exit to userspace)
while their contents stay in the backing mmap.
"""
import bisect
import contextlib

import kvm_abi as abi

from ..errors import VmmError
from ..kvm import libc
from ..x86.paging import PAGE_SIZE


class GuestMemoryError(VmmError):
    """A guest-physical range that is not (entirely) RAM."""


class RamRegion:
    """One contiguous range of guest RAM backed by an anonymous host mmap."""

    def __init__(self, gpa, size):
        self.gpa = gpa
        self.size = size
        self.end = gpa + size
        self._addr = libc.mmap(size, libc.PROT_READ | libc.PROT_WRITE,
                               libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE)
        self.host_addr = int(libc.ffi.cast("uintptr_t", self._addr))
        self.view = memoryview(libc.ffi.buffer(self._addr, size))

    def close(self):
        if self._addr is not None:
            self.view = None
            libc.munmap(self._addr, self.size)
            self._addr = None


# Page states in the memslot layout: in a slot (MAPPED), in a read-only slot (READONLY: guest
# writes exit as MMIO), or in no slot (UNMAPPED: every guest access exits).
MAPPED, READONLY, UNMAPPED = "mapped", "readonly", "unmapped"
PAGE_STATES = (MAPPED, READONLY, UNMAPPED)
MAX_SLOTS = 32764   # KVM_USER_MEM_SLOTS on x86


class GuestMemory:
    """All RAM of one VM, with bounds-checked access by guest-physical address.

    Every page of RAM is MAPPED unless given another state; the memslots are the runs of
    same-state pages (kept as runs, never page by page). Changing pages' states changes only
    the slots around them: a memslot change costs KVM an SRCU grace period, and the zap of
    every mapping of the slot it deletes."""

    def __init__(self, vm):
        self._vm = vm
        self.regions = []
        self._runs = []            # [start, end, state, slot number or None], sorted, covering RAM
        self._starts = []          # the runs' starts, for bisect
        self._free_slots = []      # slot numbers given back, taken again first
        self._unused_slot = 0      # the lowest slot number never taken
        self._log_dirty = False    # KVM logs the writes to MAPPED slots (dirty_pages())
        self._dirty = set()        # pages logged in slots deleted since the last dirty_pages()
        # KVM cannot split or merge a memslot in one step: the slot is deleted, then the new
        # ones are created, and a vCPU running in between faults on RAM without a slot (an
        # emulation failure at a fetch, an MMIO exit for a load, a page walk gone wrong).
        # quiesce() (the machine's) keeps every other vCPU out of KVM_RUN meanwhile.
        self.quiesce = contextlib.nullcontext

    # -- layout --------------------------------------------------------------

    def add_ram(self, gpa, size):
        if gpa % PAGE_SIZE or size % PAGE_SIZE or size == 0:
            raise GuestMemoryError(f"RAM at {gpa:#x} size {size:#x} is not page aligned")
        if any(gpa < region.end and region.gpa < gpa + size for region in self.regions):
            raise GuestMemoryError(f"RAM at {gpa:#x} size {size:#x} overlaps existing RAM")
        region = RamRegion(gpa, size)
        self.regions.append(region)
        self.regions.sort(key=lambda r: r.gpa)
        try:
            index = bisect.bisect_left(self._starts, gpa)
            self._replace_runs(index, index, [(gpa, gpa + size, MAPPED)])
        except BaseException:
            self.regions.remove(region)
            region.close()
            raise
        return region

    def set_page_states(self, states):
        """Give pages (page-aligned gpas of RAM) new states: a {page: state} mapping."""
        for page, state in states.items():
            if page % PAGE_SIZE or not self.contains(page, PAGE_SIZE):
                raise GuestMemoryError(f"{page:#x} is not a page of guest RAM")
            if state not in PAGE_STATES:
                raise GuestMemoryError(f"unknown page state {state!r}")
        blocks = []   # (start, end, state): consecutive pages going to the same state
        for page in sorted(states):
            state = states[page]
            if blocks and blocks[-1][1] == page and blocks[-1][2] == state and self._same_region(blocks[-1][0], page):
                blocks[-1][1] = page + PAGE_SIZE
            else:
                blocks.append([page, page + PAGE_SIZE, state])
        for start, end, state in blocks:
            self._set_range(start, end, state)

    def set_unmapped_pages(self, pages):
        """Make exactly these pages UNMAPPED (the others UNMAPPED before become MAPPED)."""
        pages = frozenset(pages)
        changes = {page: MAPPED for page in self.unmapped_pages - pages}
        changes.update({page: UNMAPPED for page in pages})
        self.set_page_states(changes)

    def log_dirty_pages(self):
        """From now on KVM logs which pages of the MAPPED slots the guest writes (what
        dirty_pages() returns); READONLY and UNMAPPED pages exit on writes instead."""
        if self._log_dirty:
            return
        self._log_dirty = True
        for start, end, state, slot in self._runs:
            if state == MAPPED and slot is not None:
                self._vm.set_user_memory_region(slot, start, end - start, self._host(start), self._flags(state))

    def dirty_pages(self, near=None):
        """The MAPPED pages the guest wrote since their slot's log was last read (at first, since
        log_dirty_pages()), and those of slots the layout deleted since. near: read only the logs
        of the slots holding these pages (reading a slot's log clears it)."""
        pages, self._dirty = self._dirty, set()
        if not self._log_dirty:
            return pages
        if near is None:
            runs = self._runs
        else:
            runs = {id(run): run for run in (self._run_at(page) for page in near)}.values()
        for start, end, state, slot in runs:
            if state == MAPPED and slot is not None:
                pages.update(self._logged_pages(slot, start, end))
        return pages

    def _logged_pages(self, slot, start, end):
        bitmap = self._vm.get_dirty_log(slot, (end - start) // PAGE_SIZE)
        pages = []
        for index, word in enumerate(bitmap):
            while word:
                low = word & -word
                pages.append(start + (index * 64 + low.bit_length() - 1) * PAGE_SIZE)
                word ^= low
        return pages

    def _flags(self, state):
        if state == READONLY:
            return abi.KVM_MEM_READONLY
        return abi.KVM_MEM_LOG_DIRTY_PAGES if self._log_dirty else 0

    def page_state(self, page):
        return self._run_at(page)[2]

    @property
    def unmapped_pages(self):
        return frozenset(page for start, end, state, _ in self._runs if state == UNMAPPED
                         for page in range(start, end, PAGE_SIZE))

    @property
    def slots(self):
        """The memslots now registered with KVM: sorted (gpa, size, host address, read-only)."""
        return [(start, end - start, self._host(start), state == READONLY)
                for start, end, state, slot in self._runs if slot is not None]

    def _host(self, gpa):
        region = self.region_of(gpa, 0)
        return region.host_addr + gpa - region.gpa

    def _run_at(self, gpa):
        index = bisect.bisect_right(self._starts, gpa) - 1
        if index < 0 or not self._runs[index][0] <= gpa < self._runs[index][1]:
            raise GuestMemoryError(f"guest-physical address {gpa:#x} is not RAM")
        return self._runs[index]

    def _set_range(self, start, end, state):
        """Put [start, end) (inside one region, page aligned) in `state`: split the runs it
        cuts, merge it with same-state neighbours that touch it."""
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_left(self._starts, end) - 1
        runs = []
        if self._runs[first][0] < start:
            runs.append((self._runs[first][0], start, self._runs[first][2]))
        runs.append((start, end, state))
        if self._runs[last][1] > end:
            runs.append((end, self._runs[last][1], self._runs[last][2]))
        if first > 0 and self._runs[first - 1][1] == runs[0][0]:
            first -= 1
            runs.insert(0, tuple(self._runs[first][:3]))
        if last + 1 < len(self._runs) and self._runs[last + 1][0] == runs[-1][1]:
            last += 1
            runs.append(tuple(self._runs[last][:3]))
        merged = []
        for run in runs:
            if merged and merged[-1][2] == run[2] and merged[-1][1] == run[0] and self._same_region(merged[-1][0], run[0]):
                merged[-1] = (merged[-1][0], run[1], run[2])
            else:
                merged.append(run)
        self._replace_runs(first, last + 1, merged)

    def _same_region(self, a, b):
        return self.region_of(a, 0) is self.region_of(b, 0)

    def _replace_runs(self, first, stop, runs):
        """Replace self._runs[first:stop] by `runs` ((start, end, state)), deleting and creating
        only the memslots that differ."""
        old = self._runs[first:stop]
        kept = {(start, end, state): slot for start, end, state, slot in old}
        wanted = set(runs)
        if any((start, end, state) not in wanted and slot is not None for start, end, state, slot in old):
            with self.quiesce():
                self._replace_slots(first, stop, runs, old, kept)
        else:
            self._replace_slots(first, stop, runs, old, kept)

    def _replace_slots(self, first, stop, runs, old, kept):
        wanted = set(runs)
        for start, end, state, slot in old:
            if (start, end, state) not in wanted and slot is not None:
                if self._log_dirty and state == MAPPED:     # its log goes with it
                    self._dirty.update(self._logged_pages(slot, start, end))
                self._vm.set_user_memory_region(slot, start, 0, self._host(start))
                self._free_slots.append(slot)
        new = []
        for start, end, state in runs:
            slot = kept.get((start, end, state))
            if slot is None and state != UNMAPPED:
                slot = self._take_slot()
                self._vm.set_user_memory_region(slot, start, end - start, self._host(start), self._flags(state))
            new.append((start, end, state, slot))
        self._runs[first:stop] = new
        self._starts[first:stop] = [run[0] for run in new]

    def _take_slot(self):
        if self._free_slots:
            return self._free_slots.pop()
        if self._unused_slot == MAX_SLOTS:
            raise GuestMemoryError(f"more than {MAX_SLOTS} memslots needed")
        self._unused_slot += 1
        return self._unused_slot - 1

    # -- access --------------------------------------------------------------

    def region_of(self, gpa, length):
        """The region holding [gpa, gpa+length) entirely, else GuestMemoryError."""
        if length < 0:
            raise GuestMemoryError(f"negative length {length}")
        for region in self.regions:
            if region.gpa <= gpa and gpa + length <= region.end:
                return region
        raise GuestMemoryError(f"guest-physical range {gpa:#x}+{length:#x} is not RAM")

    def contains(self, gpa, length=1):
        return any(r.gpa <= gpa and gpa + length <= r.end for r in self.regions)

    def view(self, gpa, length):
        """A writable memoryview of guest RAM (no copy); valid until close()."""
        region = self.region_of(gpa, length)
        offset = gpa - region.gpa
        return region.view[offset:offset + length]

    def read(self, gpa, length):
        return bytes(self.view(gpa, length))

    def write(self, gpa, data):
        self.view(gpa, len(data))[:] = data

    def read_cstring(self, gpa, limit):
        """A NUL-terminated string of at most `limit` bytes, clipped at the end of RAM."""
        for region in self.regions:
            if region.gpa <= gpa < region.end:
                data = self.read(gpa, min(limit, region.end - gpa))
                return data.split(b"\0", 1)[0]
        raise GuestMemoryError(f"guest-physical address {gpa:#x} is not RAM")

    @property
    def size(self):
        return sum(region.size for region in self.regions)

    def close(self):
        for region in self.regions:
            region.close()
        self.regions = []
        self._runs = []
