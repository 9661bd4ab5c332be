"""Breakpoints and watchpoints, and where each one lives.

gdb asks for five kinds (Z0-Z4). Each is placed where this host and the guest allow:
- an execution breakpoint (Z0, Z1) in a debug register, DR0-DR3 with DR7's R/W=00: the guest
  sees none of it, neither in its code bytes nor in its own debug registers (KVM swaps them);
- a Z0 when the four are taken, in memory as int3 (0xCC, KVM_GUESTDBG_USE_SW_BP), where the
  host gives int3 to the VMM in the vCPU's mode (probe.py); memory reads through the stub still
  show the original byte, the guest's own reads do not;
- a Z0 in a page V2E watches, nowhere: V2E single-steps every instruction executed there and
  the stub checks each one against the table;
- a watchpoint (Z2-Z4) in debug registers (R/W=01 write, 11 access; gdb's read watchpoint is an
  access watchpoint whose hits gdb filters), split into aligned pieces of 1, 2, 4 or 8 bytes;
  where the host's debug registers do not trigger on data (probe.py), a write watchpoint is
  "stepped": every vCPU single-steps and the watched bytes are compared after each instruction.
A Z1 or a watchpoint needing a debug register that a Z0 holds moves that Z0 to int3 when it can.
"""
from dataclasses import dataclass, field

SOFTWARE, HARDWARE, WRITE, READ, ACCESS = range(5)
KINDS = ("breakpoint", "hardware breakpoint", "write watchpoint", "read watchpoint", "access watchpoint")
DEBUG_REGISTERS = 4
INT3 = 0xCC
MAX_STEPPED_WATCH = 4096    # bytes compared per stepped watchpoint

# DR7: L0-L3 (local enable) at bits 0, 2, 4, 6; R/W and LEN of DRn at bits 16 + 4n and 18 + 4n.
_RW = {HARDWARE: 0b00, WRITE: 0b01, READ: 0b11, ACCESS: 0b11}
_LEN = {1: 0b00, 2: 0b01, 8: 0b10, 4: 0b11}
DR6_HITS = 0xF              # B0-B3: which debug register matched
DR6_SINGLE_STEP = 1 << 14   # BS


class BreakpointError(Exception):
    """A request the table refuses; the message says why (the stub replies with an error)."""


class NoDebugRegister(BreakpointError):
    """A breakpoint that would need a debug register, and none is left."""


def aligned_pieces(address, length):
    """[address, address + length) as naturally aligned pieces of 1, 2, 4 or 8 bytes."""
    pieces = []
    end = address + length
    while address < end:
        size = 8
        while size > 1 and (address % size or address + size > end):
            size //= 2
        pieces.append((address, size))
        address += size
    return pieces


@dataclass(slots=True, eq=False)
class Entry:
    kind: int
    address: int
    length: int
    placement: str = ""            # "dr", "int3", "watched", "stepped"
    slots: list = field(default_factory=list)
    gpa: int | None = None         # int3: where the byte is; stepped: the watched bytes' start
    last: bytes = b""              # stepped: the bytes last seen
    watched: bool = False          # in a page V2E watches: checked at each traced instruction

    @property
    def key(self):
        return self.kind, self.address, self.length


class SoftwareBreakpoints:
    """Planted int3 bytes by guest-physical address, and the bytes they cover."""

    def __init__(self, memory):
        self._memory = memory
        self._original = {}

    def plant(self, gpa):
        self._original[gpa] = self._memory.read(gpa, 1)[0]
        self._memory.write(gpa, bytes((INT3,)))

    def remove(self, gpa):
        """Put the original byte back, unless the guest has written over the int3 meanwhile."""
        original = self._original.pop(gpa)
        if self._memory.read(gpa, 1)[0] == INT3:
            self._memory.write(gpa, bytes((original,)))

    def planted(self, gpa):
        return gpa in self._original

    def original(self, gpa, data):
        """`data`, read at gpa, with the original bytes where int3s are planted."""
        if not self._original:
            return data
        data = bytearray(data)
        for where, byte in self._original.items():
            if gpa <= where < gpa + len(data):
                data[where - gpa] = byte
        return bytes(data)

    def under(self, gpa, data):
        """`data` to write at gpa: a byte that falls on an int3 becomes the byte it restores."""
        if not self._original:
            return data
        data = bytearray(data)
        for where in self._original:
            if gpa <= where < gpa + len(data):
                self._original[where] = data[where - gpa]
                data[where - gpa] = INT3
        return bytes(data)


@dataclass(slots=True, frozen=True)
class Placing:
    """What placing a breakpoint needs to know about the address, from the stub."""

    gpa: int | None              # where the address translates now (None: nowhere)
    watched: bool                # the page is watched by V2E
    int3_usable: bool            # the host hands int3 to the VMM in the vCPU's mode
    data_breakpoints: bool       # the host's debug registers trigger on data accesses


class BreakpointTable:
    def __init__(self, memory):
        self._memory = memory
        self.software = SoftwareBreakpoints(memory)
        self._entries = {}
        self._slots = [None] * DEBUG_REGISTERS   # (entry, piece address, piece length)
        self.moved = []

    # -- insertion and removal -------------------------------------------------

    def insert(self, kind, address, length, placing):
        """Place a new breakpoint and return its Entry (BreakpointError when it cannot be);
        `moved` then lists the breakpoints it moved from debug registers to int3."""
        if kind in (SOFTWARE, HARDWARE) and length != 1:
            raise BreakpointError(f"a {KINDS[kind]} takes kind 1 (the length of int3), not {length}")
        if kind >= WRITE and not 1 <= length <= MAX_STEPPED_WATCH:
            raise BreakpointError(f"a watchpoint of {length} bytes (1 to {MAX_STEPPED_WATCH})")
        key = (kind, address, length)
        self.moved = []
        if key in self._entries:
            return self._entries[key]   # gdb inserts again what it already inserted: harmless
        entry = Entry(kind, address, length, watched=placing.watched)
        if kind == SOFTWARE:
            self._place_software(entry, placing)
        elif kind == HARDWARE:
            self._take_slots(entry, [(address, 1)], placing)
        elif placing.data_breakpoints:
            self._take_slots(entry, aligned_pieces(address, length), placing)
        elif kind == WRITE:
            self._place_stepped(entry, placing)
        else:
            raise BreakpointError(f"a {KINDS[kind]}: this host's debug registers do not trigger on data "
                                  f"accesses, and only writes can be watched by stepping")
        self._entries[key] = entry
        return entry

    def _place_software(self, entry, placing):
        if placing.watched:
            entry.placement = "watched"
        elif None in self._slots:
            # Kept in case a hardware breakpoint or a watchpoint needs the register later.
            entry.gpa = placing.gpa if self._int3_possible(placing) else None
            self._assign(entry, [(entry.address, 1)])
        elif self._int3_possible(placing):
            self.software.plant(placing.gpa)
            entry.placement, entry.gpa = "int3", placing.gpa
        else:
            why = ("this host does not hand int3 to the VMM in this CPU mode" if not placing.int3_usable
                   else "the address is not mapped to RAM")
            raise NoDebugRegister(f"the four debug registers are taken and {why}")

    def _int3_possible(self, placing):
        return placing.int3_usable and placing.gpa is not None and self._memory.contains(placing.gpa)

    def _take_slots(self, entry, pieces, placing):
        """Give `entry` a debug register per piece, moving breakpoints held there to int3."""
        free = self._slots.count(None)
        movable = [slot for slot in self._slots if slot is not None and slot[0].kind == SOFTWARE
                   and self._int3_target(slot[0]) is not None]
        if free + len(movable) < len(pieces):
            raise NoDebugRegister(f"a {KINDS[entry.kind]} at {entry.address:#x} needs {len(pieces)} debug "
                                  f"register(s): {free} free of {DEBUG_REGISTERS}")
        for slot in movable[:max(0, len(pieces) - free)]:
            moved = slot[0]
            self._release(moved)
            self.software.plant(moved.gpa)
            moved.placement = "int3"
            self.moved.append(moved)
        self._assign(entry, pieces)

    @staticmethod
    def _int3_target(entry):
        """Where a Z0 held in a debug register could be planted instead (recorded when placed)."""
        return entry.gpa if entry.placement == "dr" else None

    def _assign(self, entry, pieces):
        entry.placement = "dr"
        for address, size in pieces:
            index = self._slots.index(None)
            self._slots[index] = (entry, address, size)
            entry.slots.append(index)

    def _place_stepped(self, entry, placing):
        if placing.gpa is None or not self._memory.contains(placing.gpa, entry.length):
            raise BreakpointError(f"{entry.address:#x}+{entry.length} is not mapped to guest RAM "
                                  f"contiguously (a stepped watchpoint compares physical memory)")
        entry.placement, entry.gpa = "stepped", placing.gpa
        entry.last = self._memory.read(placing.gpa, entry.length)

    def remove(self, kind, address, length):
        """False when no such breakpoint is inserted."""
        entry = self._entries.pop((kind, address, length), None)
        if entry is None:
            return False
        self._release(entry)
        if entry.placement == "int3":
            self.software.remove(entry.gpa)
        return True

    def _release(self, entry):
        for index in entry.slots:
            self._slots[index] = None
        entry.slots = []

    def clear(self):
        for kind, address, length in list(self._entries):
            self.remove(kind, address, length)

    # -- what KVM is told ----------------------------------------------------

    @property
    def uses_int3(self):
        return any(entry.placement == "int3" for entry in self._entries.values())

    @property
    def stepped(self):
        return [entry for entry in self._entries.values() if entry.placement == "stepped"]

    def debug_registers(self):
        """(DR0-DR3, DR7) for every vCPU."""
        addresses, dr7 = [0] * DEBUG_REGISTERS, 0
        for index, slot in enumerate(self._slots):
            if slot is None:
                continue
            entry, address, size = slot
            addresses[index] = address
            dr7 |= 1 << (2 * index)
            if entry.kind != SOFTWARE:
                dr7 |= (_RW[entry.kind] | _LEN[size] << 2) << (16 + 4 * index)
        return tuple(addresses), dr7

    # -- what hit ------------------------------------------------------------

    def slot_hit(self, dr6):
        """The entry whose debug register DR6 reports, with the matching piece's address."""
        for index in range(DEBUG_REGISTERS):
            slot = self._slots[index]
            if dr6 & (1 << index) and slot is not None:
                return slot[0], slot[1]
        return None, None

    def execution_at(self, address, watched_only=False):
        """The Z0 or Z1 at linear `address`, if any (in a watched page, if watched_only)."""
        entry = self._entries.get((SOFTWARE, address, 1)) or self._entries.get((HARDWARE, address, 1))
        return entry if entry is not None and (entry.watched or not watched_only) else None

    @property
    def any_watched(self):
        return any(entry.watched for entry in self._entries.values())

    def int3_at(self, gpa):
        return next((entry for entry in self._entries.values()
                     if entry.placement == "int3" and entry.gpa == gpa), None)

    def stepped_change(self):
        """The first stepped watchpoint whose bytes changed (now remembered), or None."""
        for entry in self.stepped:
            now = self._memory.read(entry.gpa, entry.length)
            if now != entry.last:
                entry.last = now
                return entry
        return None

    def __len__(self):
        return len(self._entries)

    def entries(self):
        return list(self._entries.values())
