"""The stub's parts that need no KVM: packet framing, debug-register encoding and breakpoint
placement, the x87 tag word, target descriptions, and memory reads and writes through page
tables whose consecutive pages are not consecutive in physical memory."""
import struct
import types
import xml.etree.ElementTree as ElementTree

import pytest

from vmm.gdb import memory as virtual
from vmm.gdb.breakpoints import (ACCESS, HARDWARE, SOFTWARE, WRITE, BreakpointError, BreakpointTable,
                                 NoDebugRegister, Placing, aligned_pieces)
from vmm.gdb.protocol import (Ack, Dropped, Interrupt, Packet, PacketReader, ProtocolError, escape, frame,
                              hex_number, unescape)
from vmm.gdb.registers import abridged_tag, full_tag
from vmm.gdb.tdesc import LAYOUTS, target_xml
from vmm.x86.registers import CR0_PE, CR0_PG


# -- framing -------------------------------------------------------------------------------

def test_frame_and_checksum():
    assert frame(b"OK") == b"$OK#9a"
    assert frame(b"") == b"$#00"


def test_reader_splits_the_stream():
    reader = PacketReader(max_payload=8)
    events = reader.feed(b"+$g#67-\x03$m0,4#fd$toolongpacket#00$a#00$x$qC#b4")
    assert events == [Ack(True), Packet(b"g"), Ack(False), Interrupt(), Packet(b"m0,4"),
                      Dropped("a packet longer than 8 bytes"), Dropped("a bad checksum (00, expected 61)"),
                      Dropped("a packet started inside another (the first is dropped)"), Packet(b"qC")]


def test_reader_takes_a_packet_in_pieces():
    reader = PacketReader()
    expected = sum(b"qSupported:x") % 256
    assert [event for chunk in (b"$q", b"Supported:x#", b"0", b"0") for event in reader.feed(chunk)] == [
        Dropped(f"a bad checksum (00, expected {expected:02x})")]
    assert reader.feed(b"$qC#b") == [] and reader.feed(b"4") == [Packet(b"qC")]


def test_binary_escapes_round_trip():
    data = bytes(range(256))
    escaped = escape(data)
    assert not set(escaped) & set(b"#$*") and unescape(escaped) == data
    with pytest.raises(ProtocolError):
        unescape(b"abc}")


def test_numbers_are_bounded():
    assert hex_number(b"ffffffffffffffff") == (1 << 64) - 1
    for bad in (b"", b"1" * 17, b"xyz", b"-1"):
        with pytest.raises(ProtocolError):
            hex_number(bad)
    with pytest.raises(ProtocolError):
        hex_number(b"100", limit=0x100)


# -- breakpoints ---------------------------------------------------------------------------

class FakeMemory:
    """Guest RAM as a bytearray, with what the walker and the table use."""

    def __init__(self, size):
        self.ram = bytearray(size)

    @property
    def size(self):
        return len(self.ram)

    def contains(self, gpa, length=1):
        return 0 <= gpa and gpa + length <= len(self.ram)

    def view(self, gpa, length):
        return memoryview(self.ram)[gpa:gpa + length]

    def read(self, gpa, length):
        return bytes(self.ram[gpa:gpa + length])

    def write(self, gpa, data):
        self.ram[gpa:gpa + len(data)] = data


def placing(gpa, int3=True, data=True, watched=False):
    return Placing(gpa, watched, int3, data)


@pytest.mark.parametrize("address, length, pieces", [
    (0x1000, 8, [(0x1000, 8)]), (0x1001, 2, [(0x1001, 1), (0x1002, 1)]), (0x1002, 6, [(0x1002, 2), (0x1004, 4)]),
    (0x1003, 1, [(0x1003, 1)]), (0x1000, 16, [(0x1000, 8), (0x1008, 8)]), (0x1006, 3, [(0x1006, 2), (0x1008, 1)]),
])
def test_watched_ranges_split_into_aligned_pieces(address, length, pieces):
    assert aligned_pieces(address, length) == pieces


def test_dr7_encoding():
    """Intel SDM vol. 3, 18.2.4: L0-L3 at bits 0, 2, 4, 6; R/Wn at 16 + 4n (00 execute, 01 write,
    11 read/write); LENn at 18 + 4n (00 1 byte, 01 2, 11 4, 10 8)."""
    table = BreakpointTable(FakeMemory(0x10000))
    table.insert(HARDWARE, 0x4000, 1, placing(0x4000))
    table.insert(WRITE, 0x5000, 4, placing(0x5000))
    table.insert(ACCESS, 0x6000, 8, placing(0x6000))
    table.insert(WRITE, 0x7002, 2, placing(0x7002))
    addresses, dr7 = table.debug_registers()
    assert addresses == (0x4000, 0x5000, 0x6000, 0x7002)
    assert dr7 == (0b01 | 0b01 << 2 | 0b01 << 4 | 0b01 << 6
                   | 0b0000 << 16 | 0b1101 << 20 | 0b1011 << 24 | 0b0101 << 28), hex(dr7)


def test_software_breakpoints_take_debug_registers_first_then_int3():
    memory = FakeMemory(0x10000)
    memory.write(0x1000, bytes(range(0x40, 0x50)))
    table = BreakpointTable(memory)
    for n in range(4):
        assert table.insert(SOFTWARE, 0x1000 + n, 1, placing(0x1000 + n)).placement == "dr"
    assert memory.read(0x1000, 4) == bytes((0x40, 0x41, 0x42, 0x43)), "the guest's bytes are untouched"
    fifth = table.insert(SOFTWARE, 0x1004, 1, placing(0x1004))
    assert fifth.placement == "int3" and memory.read(0x1004, 1) == b"\xcc" and table.uses_int3
    assert table.software.original(0x1000, memory.read(0x1000, 8)) == bytes(range(0x40, 0x48))
    with pytest.raises(NoDebugRegister):
        table.insert(SOFTWARE, 0x2000, 1, placing(0x2000, int3=False))
    # A hardware breakpoint moves a software one out of its debug register into int3.
    assert table.insert(HARDWARE, 0x3000, 1, placing(0x3000)).placement == "dr"
    assert [entry.address for entry in table.moved] == [0x1000] and memory.read(0x1000, 1) == b"\xcc"
    assert table.remove(SOFTWARE, 0x1000, 1) and memory.read(0x1000, 1) == b"\x40"
    assert not table.remove(SOFTWARE, 0x1000, 1)
    table.clear()
    assert memory.read(0x1000, 16) == bytes(range(0x40, 0x50)) and not table.uses_int3
    assert table.debug_registers() == ((0, 0, 0, 0), 0)


def test_writes_under_an_int3_change_the_byte_it_restores():
    memory = FakeMemory(0x10000)
    table = BreakpointTable(memory)
    for n in range(4):
        table.insert(HARDWARE, 0x100 + n, 1, placing(0x100 + n))
    table.insert(SOFTWARE, 0x2001, 1, placing(0x2001))
    memory.write(0x2000, table.software.under(0x2000, b"\x11\x22\x33"))
    assert memory.read(0x2000, 3) == b"\x11\xcc\x33"
    table.remove(SOFTWARE, 0x2001, 1)
    assert memory.read(0x2000, 3) == b"\x11\x22\x33"


def test_an_int3_the_guest_overwrote_is_not_put_back():
    memory = FakeMemory(0x10000)
    table = BreakpointTable(memory)
    for n in range(4):
        table.insert(HARDWARE, 0x100 + n, 1, placing(0x100 + n))
    table.insert(SOFTWARE, 0x2000, 1, placing(0x2000))
    memory.write(0x2000, b"\x90")   # the guest rewrites its code (a packer decrypting over it)
    table.remove(SOFTWARE, 0x2000, 1)
    assert memory.read(0x2000, 1) == b"\x90"


def test_breakpoints_in_watched_pages_and_stepped_watchpoints():
    memory = FakeMemory(0x10000)
    table = BreakpointTable(memory)
    assert table.insert(SOFTWARE, 0x3000, 1, placing(0x3000, watched=True)).placement == "watched"
    assert table.debug_registers() == ((0, 0, 0, 0), 0)
    stepped = table.insert(WRITE, 0x4000, 8, placing(0x4000, data=False))
    assert stepped.placement == "stepped" and table.stepped_change() is None
    memory.write(0x4004, b"\x01")
    assert table.stepped_change() is stepped and table.stepped_change() is None
    with pytest.raises(BreakpointError):
        table.insert(ACCESS, 0x4000, 8, placing(0x4000, data=False))
    with pytest.raises(BreakpointError):
        table.insert(WRITE, 0x5000, 8, placing(None, data=False))
    for kind, length in ((SOFTWARE, 2), (HARDWARE, 0), (WRITE, 0)):
        with pytest.raises(BreakpointError):
            table.insert(kind, 0x6000, length, placing(0x6000))


def test_a_watchpoint_needing_more_registers_than_are_left():
    table = BreakpointTable(FakeMemory(0x10000))
    table.insert(WRITE, 0x1000, 16, placing(0x1000))          # two registers
    table.insert(HARDWARE, 0x2000, 1, placing(0x2000))
    with pytest.raises(NoDebugRegister):
        table.insert(WRITE, 0x3001, 2, placing(0x3001))       # two pieces, one register left
    assert table.insert(WRITE, 0x3000, 2, placing(0x3000)).slots == [3]


# -- the x87 tag word ----------------------------------------------------------------------

def test_full_tag_from_the_abridged_one():
    one = 0x3FFF8000000000000000          # 1.0: valid
    zero = 0
    denormal = 0x00000000000000000001     # special
    # TOP = 6: ST0 is physical register 6, ST1 is 7, ST2 is 0.
    fsw = 6 << 11
    stack = [one, zero, denormal, 0, 0, 0, 0, 0]
    abridged = 1 << 6 | 1 << 7 | 1 << 0
    tag = full_tag(abridged, fsw, stack)
    assert tag == 0b00 << 12 | 0b01 << 14 | 0b10 << 0 | 0xFFFF & ~(0b11 << 12 | 0b11 << 14 | 0b11 << 0), hex(tag)
    assert abridged_tag(tag) == abridged
    assert full_tag(0, 0, [0] * 8) == 0xFFFF and abridged_tag(0xFFFF) == 0


# -- target descriptions -------------------------------------------------------------------

@pytest.mark.parametrize("name, architecture, pc, gprs", [
    ("64", "i386:x86-64", "rip", 16), ("32", "i386", "eip", 8), ("16", "i8086", "eip", 8)])
def test_descriptions(name, architecture, pc, gprs):
    layout = LAYOUTS[name]
    root = ElementTree.fromstring(target_xml(layout))
    assert root.findtext("architecture") == architecture
    registers = list(root.iter("reg"))
    assert [int(reg.get("regnum")) for reg in registers] == list(range(len(layout.registers)))
    assert [reg.get("name") for reg in registers][gprs] == pc, "the PC follows the general registers"
    assert sum(int(reg.get("bitsize")) for reg in registers) // 8 == layout.g_size
    types_used = {reg.get("type") for reg in registers}
    defined = {element.get("id") for element in root.iter() if element.get("id")}
    builtin = {"int", "int32", "int64", "code_ptr", "data_ptr", "i387_ext"}
    assert types_used <= defined | builtin, types_used - defined - builtin


# -- memory through page tables ------------------------------------------------------------

def _sregs_32bit_paging(cr3):
    return types.SimpleNamespace(cr0=CR0_PE | CR0_PG, cr3=cr3, cr4=0, efer=0)


def test_reads_and_writes_cross_pages_mapped_apart():
    """Linear 0x400000 -> physical 0x9000 and 0x401000 -> 0x5000 (32-bit paging, 4 KiB pages);
    0x402000 is not mapped."""
    memory = FakeMemory(0x10000)
    memory.write(0x1004, struct.pack("<I", 0x2000 | 1))          # PDE 1 (0x400000) -> page table
    memory.write(0x2000, struct.pack("<II", 0x9000 | 3, 0x5000 | 3))
    memory.write(0x9FFE, b"\xaa\xbb")
    memory.write(0x5000, b"\xcc\xdd")
    memory.write(0x5FFF, b"\xee")
    sregs = _sregs_32bit_paging(0x1000)
    table = BreakpointTable(memory)
    assert virtual.read(memory, sregs, 0x400FFE, 4, table.software) == b"\xaa\xbb\xcc\xdd"
    assert virtual.read(memory, sregs, 0x401FFF, 4, table.software) == b"\xee", "a short read"
    with pytest.raises(virtual.Unmapped):
        virtual.read(memory, sregs, 0x402000, 1, table.software)
    virtual.write(memory, sregs, 0x400FFF, b"\x01\x02", table.software)
    assert memory.read(0x9FFF, 1) == b"\x01" and memory.read(0x5000, 1) == b"\x02"
    with pytest.raises(virtual.Unmapped):
        virtual.write(memory, sregs, 0x401FFF, b"\x03\x04", table.software)
    assert memory.read(0x5FFF, 1) == b"\xee", "nothing written when part of the range is unmapped"
