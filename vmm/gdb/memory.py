"""Guest memory as gdb addresses it: linear (virtual) addresses, translated page by page through
the paging mode and page tables of the vCPU gdb has selected.

A read stops at the first byte that does not translate or is not RAM (gdb accepts a short
read; nothing readable is an error); a write is checked in full before any byte changes.
Software breakpoints are hidden: reads show the bytes the guest had there, and writes under a
breakpoint change the byte it restores.
"""
from ..x86 import paging
from ..x86.paging import PAGE_SIZE

ADDRESS_LIMIT = 1 << 64


class Unmapped(Exception):
    """A linear address that does not translate to guest RAM."""

    def __init__(self, address):
        super().__init__(f"{address:#x} is not mapped to guest RAM")
        self.address = address


def _pieces(memory, sregs, address, length):
    """(gpa, length) of each page-bounded piece of [address, address + length), as far as it
    translates to RAM."""
    pieces = []
    while length:
        chunk = min(length, PAGE_SIZE - (address & (PAGE_SIZE - 1)))
        gpa = paging.translate(memory, sregs, address)
        if gpa is None or not memory.contains(gpa, chunk):
            break
        pieces.append((gpa, chunk))
        address = (address + chunk) % ADDRESS_LIMIT
        length -= chunk
    return pieces


def read(memory, sregs, address, length, software_breakpoints):
    """Up to `length` bytes at linear `address`; Unmapped when not even the first translates."""
    data = bytearray()
    for gpa, chunk in _pieces(memory, sregs, address, length):
        data += software_breakpoints.original(gpa, memory.read(gpa, chunk))
    if not data and length:
        raise Unmapped(address)
    return bytes(data)


def write(memory, sregs, address, data, software_breakpoints):
    """All of `data` at linear `address`, or Unmapped (nothing written) where it does not translate."""
    pieces = _pieces(memory, sregs, address, len(data))
    if sum(chunk for _, chunk in pieces) != len(data):
        done = sum(chunk for _, chunk in pieces)
        raise Unmapped((address + done) % ADDRESS_LIMIT)
    offset = 0
    for gpa, chunk in pieces:
        memory.write(gpa, software_breakpoints.under(gpa, data[offset:offset + chunk]))
        offset += chunk
