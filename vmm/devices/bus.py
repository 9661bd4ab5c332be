"""Port I/O and MMIO buses: route guest accesses to devices, count the unclaimed ones.

A device implements read(offset, size) -> int and write(offset, size, value),
offsets relative to the base it was registered at. Unclaimed reads return
all-ones and unclaimed writes are dropped, as on a PC.

A port device may also let a vCPU serve some accesses without the bus (PortBus.plan, the C
helper's port loop): FAST_OFFSETS = (stream offsets, constant-read offsets);
stream_room(offset) -> (room, stop): 1-byte writes there may gather, up to room bytes and
until the byte stop (-1: none), and reach the device as one stream(offset, data) call, exactly
as that many write() calls would (room 0: not now); constant_read(offset) -> the value a
1-byte read there gives, with no other effect, or None.
"""
import bisect
import threading
from collections import Counter

# A hostile guest can touch any number of distinct MMIO addresses; keep the
# per-address table bounded and lump the rest together.
MAX_COUNTED_ADDRESSES = 4096
OTHER_ADDRESSES = "other"


class BusConflict(ValueError):
    pass


def _bounded_count(counter, key):
    if key in counter or len(counter) < MAX_COUNTED_ADDRESSES:
        counter[key] += 1
    else:
        counter[OTHER_ADDRESSES] += 1


class SerializedDevice:
    """A device shared by several vCPU threads, accessed one read or write at a time."""

    def __init__(self, device):
        self._device = device
        self._lock = threading.Lock()

    def read(self, offset, size):
        with self._lock:
            return self._device.read(offset, size)

    def write(self, offset, size, value):
        with self._lock:
            self._device.write(offset, size, value)


class PortBus:
    """The 64 KiB x86 I/O port space."""

    def __init__(self):
        self._ports = {}                  # port -> (device, offset of the port in the device)
        self._streams = []                # (port, device, offset) of FAST_OFFSETS, in order
        self._constants = []
        self.unclaimed_reads = Counter()  # port -> count
        self.unclaimed_writes = Counter()

    def register(self, device, base, length):
        if not (0 <= base and base + length <= 0x10000 and length > 0):
            raise BusConflict(f"ports {base:#x}+{length} are outside the I/O space")
        taken = [port for port in range(base, base + length) if port in self._ports]
        if taken:
            raise BusConflict(f"port {taken[0]:#x} is already claimed")
        for port in range(base, base + length):
            self._ports[port] = (device, port - base)
        streams, constants = getattr(device, "FAST_OFFSETS", ((), ()))
        self._streams += [(base + offset, device, offset) for offset in streams if offset < length]
        self._constants += [(base + offset, device, offset) for offset in constants if offset < length]

    def plan(self, plan):
        """Fill a fastpath.PortPlan with what may be served without the bus now (see the
        module's doc): the first stream that takes bytes, the constant reads. False when
        nothing may."""
        plan.clear()
        for port, device, offset in self._streams:
            room, stop = device.stream_room(offset)
            if room:
                plan.set_stream(port, device, offset, room, stop)
                break
        for port, device, offset in self._constants:
            value = device.constant_read(offset)
            if value is not None and not plan.add_constant(port, value):
                break
        return plan.stream_device is not None or plan.struct.constants > 0

    def handle(self, io):
        """Serve an exits.Io: every one of its count items of size bytes."""
        port, size, data = io.port, io.size, io.data
        entry = self._ports.get(port)
        if io.is_write:
            if entry is None:
                self.unclaimed_writes[port] += io.count
                return
            device, offset = entry
            if size == 1:
                if io.count == 1:   # a plain `out %al`: most port writes
                    device.write(offset, 1, data[0])
                    return
                for value in data:
                    device.write(offset, 1, value)
            else:
                for start in range(0, len(data), size):
                    device.write(offset, size, int.from_bytes(data[start:start + size], "little"))
        else:
            if entry is None:
                self.unclaimed_reads[port] += io.count
                data[:] = b"\xff" * len(data)
                return
            device, offset = entry
            mask = (1 << (8 * size)) - 1
            for start in range(0, len(data), size):
                data[start:start + size] = (device.read(offset, size) & mask).to_bytes(size, "little")


class MmioBus:
    """Guest-physical ranges that are not RAM and that devices serve."""

    def __init__(self):
        self._starts = []
        self._ranges = []                 # (start, end, device), sorted by start
        self.unclaimed_reads = Counter()  # address -> count (bounded)
        self.unclaimed_writes = Counter()

    def register(self, device, base, length):
        end = base + length
        if length <= 0 or base < 0 or end > 1 << 64:
            raise BusConflict(f"MMIO range {base:#x}+{length:#x} is invalid")
        for start, stop, _ in self._ranges:
            if base < stop and start < end:
                raise BusConflict(f"MMIO range {base:#x}+{length:#x} overlaps {start:#x}")
        index = bisect.bisect(self._starts, base)
        self._starts.insert(index, base)
        self._ranges.insert(index, (base, end, device))

    def unregister(self, device):
        """Remove every range `device` serves."""
        kept = [entry for entry in self._ranges if entry[2] is not device]
        self._ranges = kept
        self._starts = [start for start, _, _ in kept]

    def find(self, address, length):
        index = bisect.bisect(self._starts, address) - 1
        if index >= 0:
            start, end, device = self._ranges[index]
            if address + length <= end:
                return device, start
        return None, None

    def handle(self, mmio):
        """Serve an exits.Mmio (length 1..8, checked at decode)."""
        device, base = self.find(mmio.phys_addr, mmio.length)
        if device is None:
            if mmio.is_write:
                _bounded_count(self.unclaimed_writes, mmio.phys_addr)
            else:
                _bounded_count(self.unclaimed_reads, mmio.phys_addr)
                mmio.data[:] = b"\xff" * mmio.length
            return
        offset = mmio.phys_addr - base
        if mmio.is_write:
            device.write(offset, mmio.length, int.from_bytes(mmio.data, "little"))
        else:
            value = device.read(offset, mmio.length) & ((1 << (8 * mmio.length)) - 1)
            mmio.data[:] = value.to_bytes(mmio.length, "little")
