"""Guest RAM: host mmaps registered with KVM as memslots, accessed by guest-physical address.

A RAM region's backing memory and its memslots are separate: pages can be
taken out of the slot layout (so guest accesses to them exit to userspace)
while their contents stay in the backing mmap.
"""
import bisect

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

    Every page of RAM is MAPPED unless given another state; the memslots are runs of pages in
    one state. Changing pages' states changes only the slots around them (KVM zaps the
    mappings of every slot it deletes)."""

    def __init__(self, vm):
        self._vm = vm
        self.regions = []
        self._states = {}          # page -> READONLY or UNMAPPED (MAPPED pages are absent)
        self._special = []         # the pages in _states, sorted
        self._runs = []            # (start, end, state, slot number or None), sorted, covering RAM
        self._free_slots = list(range(MAX_SLOTS - 1, -1, -1))

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
            self._replace_runs(len(self._runs_before(gpa)), 0, [(gpa, gpa + size, MAPPED)])
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
        changed = sorted(page for page, state in states.items() if self.page_state(page) != state)
        for page in changed:
            state = states[page]
            if state == MAPPED:
                del self._states[page]
                del self._special[bisect.bisect_left(self._special, page)]
            else:
                if page not in self._states:
                    bisect.insort(self._special, page)
                self._states[page] = state
        for first, last in self._affected_runs(changed):
            start, end = self._runs[first][0], self._runs[last][1]
            self._replace_runs(first, last + 1 - first, self._runs_of(start, end))

    def set_unmapped_pages(self, pages):
        """Make exactly these pages UNMAPPED (the others UNMAPPED before become MAPPED)."""
        pages = frozenset(pages)
        changes = {page: MAPPED for page, state in self._states.items() if state == UNMAPPED and page not in pages}
        changes.update({page: UNMAPPED for page in pages})
        self.set_page_states(changes)

    def page_state(self, page):
        return self._states.get(page, MAPPED)

    @property
    def unmapped_pages(self):
        return frozenset(page for page, state in self._states.items() if state == UNMAPPED)

    @property
    def slots(self):
        """The memslots now registered with KVM: sorted (gpa, size, host address, read-only)."""
        return [(start, end - start, self._host(start), state == READONLY)
                for start, end, state, slot in self._runs if slot is not None]

    def _host(self, gpa):
        region = self.region_of(gpa, 0)
        return region.host_addr + gpa - region.gpa

    def _runs_before(self, gpa):
        return [run for run in self._runs if run[1] <= gpa]

    def _affected_runs(self, pages):
        """(first, last) index spans of the runs holding `pages` and their neighbours in the
        same region, merged where they touch."""
        spans = []
        starts = [run[0] for run in self._runs]
        for page in pages:
            index = bisect.bisect_right(starts, page) - 1
            first, last = index, index
            if first > 0 and self._runs[first - 1][1] == self._runs[first][0]:
                first -= 1
            if last + 1 < len(self._runs) and self._runs[last + 1][0] == self._runs[last][1]:
                last += 1
            if spans and first <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], last))
            else:
                spans.append((first, last))
        # Later spans first: replacing runs shifts the indices after them.
        return reversed(spans)

    def _runs_of(self, start, end):
        """The runs of same-state pages covering [start, end), from the page states."""
        runs = []
        at = start
        index = bisect.bisect_left(self._special, start)
        while at < end:
            if index < len(self._special) and self._special[index] < end:
                special = self._special[index]
                if special > at:
                    runs.append((at, special, MAPPED))
                state = self._states[special]
                if runs and runs[-1][2] == state and runs[-1][1] == special:
                    runs[-1] = (runs[-1][0], special + PAGE_SIZE, state)
                else:
                    runs.append((special, special + PAGE_SIZE, state))
                at = special + PAGE_SIZE
                index += 1
            else:
                runs.append((at, end, MAPPED))
                at = end
        return runs

    def _replace_runs(self, index, count, runs):
        """Replace self._runs[index:index + count] by `runs` ((start, end, state)), deleting and
        creating only the memslots that differ."""
        old = self._runs[index:index + count]
        kept = {(start, end, state): slot for start, end, state, slot in old}
        wanted = set(runs)
        for start, end, state, slot in old:
            if (start, end, state) not in wanted and slot is not None:
                self._vm.set_user_memory_region(slot, start, 0, self._host(start))
                self._free_slots.append(slot)
        new = []
        for start, end, state in runs:
            slot = kept.get((start, end, state))
            if slot is None and state != UNMAPPED:
                if not self._free_slots:
                    raise GuestMemoryError(f"more than {MAX_SLOTS} memslots needed")
                slot = self._free_slots.pop()
                flags = abi.KVM_MEM_READONLY if state == READONLY else 0
                self._vm.set_user_memory_region(slot, start, end - start, self._host(start), flags)
            new.append((start, end, state, slot))
        self._runs[index:index + count] = new

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
