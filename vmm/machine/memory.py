"""Guest RAM: host mmaps registered with KVM as memslots, accessed by guest-physical address.

A RAM region's backing memory and its memslots are separate: pages can be
taken out of the slot layout (so guest accesses to them exit to userspace)
while their contents stay in the backing mmap.
"""
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


class GuestMemory:
    """All RAM of one VM, with bounds-checked access by guest-physical address."""

    def __init__(self, vm):
        self._vm = vm
        self.regions = []
        self._slots = {}           # slot number -> (gpa, size, host_addr)
        self._unmapped = frozenset()
        self._split_points = frozenset()

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
            self._apply_layout()
        except BaseException:
            self.regions.remove(region)
            region.close()
            raise
        return region

    def set_unmapped_pages(self, pages):
        """Take these guest-physical pages out of the memslots (their backing stays)."""
        pages = frozenset(pages)
        for page in pages:
            if page % PAGE_SIZE or not self.contains(page, PAGE_SIZE):
                raise GuestMemoryError(f"{page:#x} is not a page of guest RAM")
        self._unmapped = pages
        self._apply_layout()

    @property
    def unmapped_pages(self):
        return self._unmapped

    @property
    def slots(self):
        """The memslots now registered with KVM: sorted (gpa, size, host address)."""
        return sorted(self._slots.values())

    def set_split_points(self, addresses):
        """Page-aligned addresses where memslots always end, so that unmapping and remapping
        the pages between two of them changes only the slots in between (few ioctls)."""
        self._split_points = frozenset(addresses)
        self._apply_layout()

    def _wanted_slots(self):
        """The memslots that cover all RAM except the unmapped pages."""
        wanted = []
        holes = {page + PAGE_SIZE for page in self._unmapped}
        for region in self.regions:
            cuts = sorted({region.gpa, region.end} | {address for address in self._split_points | self._unmapped | holes
                                                      if region.gpa < address < region.end})
            for start, end in zip(cuts, cuts[1:]):
                if start not in self._unmapped:
                    wanted.append((start, end - start, region.host_addr + start - region.gpa))
        return wanted

    def _apply_layout(self):
        wanted = set(self._wanted_slots())
        keep = {slot: spec for slot, spec in self._slots.items() if spec in wanted}
        for slot, (gpa, _, host) in self._slots.items():
            if slot not in keep:
                self._vm.set_user_memory_region(slot, gpa, 0, host)
        self._slots = keep
        free = (n for n in range(1 << 15) if n not in keep)
        for spec in sorted(wanted - set(keep.values())):
            slot = next(free)
            self._vm.set_user_memory_region(slot, *spec)
            self._slots[slot] = spec

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
        self._slots = {}
