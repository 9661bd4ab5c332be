"""The guest's page tables, walked in software: linear address -> guest-physical address.

One walker for every paging mode a guest can be in: none (CR0.PG clear), 32-bit (with 4 MiB
pages under CR4.PSE), PAE, 4-level and 5-level (CR4.LA57). Entries are read from guest RAM
through `memory` (anything with contains(gpa, size) and view(gpa, size)); an entry outside RAM,
a non-present entry, a set reserved bit (NX without EFER.NXE) or a non-canonical address
means the address does not translate. A PS bit in a PDPTE maps a 1 GiB page whatever the
vCPU's CPUID says about 1 GiB pages.
"""
from dataclasses import dataclass

from .registers import CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA, EFER_NXE

PAGE_SIZE = 4096
PAGE_MASK = ~(PAGE_SIZE - 1)

PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_D = 1 << 6     # dirty: the CPU sets it on a write through the entry (a leaf)
PTE_PS = 1 << 7
PTE_NX = 1 << 63
# Bits 51:12 of an 8-byte entry hold the next table's (or the page's) physical address.
_ADDRESS_MASK = 0x000F_FFFF_FFFF_F000


@dataclass(slots=True, frozen=True)
class Translation:
    """Where a linear address lands, what every level of the walk allows, the entries the
    walk read: (gpa, size) of each, top level first (empty without paging), and whether the
    leaf entry is dirty (written through since the OS last cleared its D bit)."""

    physical: int
    page_size: int
    writable: bool
    user: bool
    executable: bool
    entries: tuple = ()
    dirty: bool = False


def _entry(memory, gpa, size, path):
    if not memory.contains(gpa, size):
        return None
    path.append((gpa, size))
    return int.from_bytes(memory.view(gpa, size), "little")


def walk(memory, sregs, linear):
    """The Translation of `linear` under the paging mode in `sregs`, or None."""
    if not sregs.cr0 & CR0_PG:
        return Translation(linear & 0xFFFFFFFF, PAGE_SIZE, True, True, True)
    if not sregs.cr4 & CR4_PAE:
        return _walk_32bit(memory, sregs, linear & 0xFFFFFFFF, [])
    if not sregs.efer & EFER_LMA:
        return _walk_pae(memory, sregs, linear & 0xFFFFFFFF, [])
    return _walk_long(memory, sregs, linear, [])


def translate(memory, sregs, linear):
    """The guest-physical address of `linear`, or None when it does not translate."""
    translation = walk(memory, sregs, linear)
    return None if translation is None else translation.physical


def _walk_32bit(memory, sregs, linear, path):
    pde = _entry(memory, (sregs.cr3 & 0xFFFFF000) + (linear >> 22) * 4, 4, path)
    if pde is None or not pde & PTE_P:
        return None
    if pde & PTE_PS and sregs.cr4 & CR4_PSE:
        # PSE-36: bits 20:13 of the entry are bits 39:32 of the page's address.
        base = (pde & 0xFFC00000) | ((pde >> 13) & 0xFF) << 32
        return Translation(base | (linear & 0x3FFFFF), 4 << 20, bool(pde & PTE_RW), bool(pde & PTE_US), True,
                           tuple(path), bool(pde & PTE_D))
    pte = _entry(memory, (pde & 0xFFFFF000) + ((linear >> 12) & 0x3FF) * 4, 4, path)
    if pte is None or not pte & PTE_P:
        return None
    return Translation((pte & 0xFFFFF000) | (linear & 0xFFF), PAGE_SIZE,
                       bool(pde & pte & PTE_RW), bool(pde & pte & PTE_US), True, tuple(path), bool(pte & PTE_D))


def _walk_levels(memory, table, linear, shifts, nx_enabled, path):
    """Walk 8-byte entries from `table` down the levels given by their index shifts; without
    EFER.NXE the NX bit is reserved, and a set reserved bit faults."""
    writable = user = executable = True
    for level, shift in enumerate(shifts):
        entry = _entry(memory, table + ((linear >> shift) & 0x1FF) * 8, 8, path)
        if entry is None or not entry & PTE_P or (entry & PTE_NX and not nx_enabled):
            return None
        writable &= bool(entry & PTE_RW)
        user &= bool(entry & PTE_US)
        executable &= not entry & PTE_NX
        last = level == len(shifts) - 1
        # A PS bit maps a 1 GiB or 2 MiB page (it is PAT on the last level).
        if last or (entry & PTE_PS and shift in (30, 21)):
            size = 1 << shift
            base = entry & _ADDRESS_MASK & ~(size - 1)
            return Translation(base | (linear & (size - 1)), size, writable, user, executable, tuple(path),
                               bool(entry & PTE_D))
        table = entry & _ADDRESS_MASK
    return None


def _walk_pae(memory, sregs, linear, path):
    pdpte = _entry(memory, (sregs.cr3 & 0xFFFFFFE0) + (linear >> 30) * 8, 8, path)
    if pdpte is None or not pdpte & PTE_P:
        return None
    return _walk_levels(memory, pdpte & _ADDRESS_MASK, linear, (21, 12), bool(sregs.efer & EFER_NXE), path)


def _walk_long(memory, sregs, linear, path):
    bits = 57 if sregs.cr4 & CR4_LA57 else 48
    top = linear >> (bits - 1)
    if top not in (0, (1 << (65 - bits)) - 1):
        return None   # not canonical
    shifts = (48, 39, 30, 21, 12) if bits == 57 else (39, 30, 21, 12)
    return _walk_levels(memory, sregs.cr3 & _ADDRESS_MASK, linear, shifts, bool(sregs.efer & EFER_NXE), path)


# CR3 bits 51:13: the top-level table's page with bit 12 folded, so the page-table-isolation
# pair (the kernel's table and, 4 KiB above it, the user half's) is one address space; bits
# 11:0 hold the PCID (PWT and PCD with CR4.PCIDE clear).
_ADDRESS_SPACE_MASK = 0x000F_FFFF_FFFF_E000


def address_space(cr3):
    """What identifies an address space in CR3: its top-level table, without the PCID and with
    the page-table-isolation pair folded (two adjacent tables are taken for one)."""
    return cr3 & _ADDRESS_SPACE_MASK


def table_pages(memory, sregs, limit=8192):
    """The guest-physical pages of the paging structures reachable from CR3 (at most `limit`):
    what the CPU's page walks read and set accessed and dirty bits in."""
    if not sregs.cr0 & CR0_PG:
        return set()
    found = set()
    if not sregs.cr4 & CR4_PAE:
        tables = [(sregs.cr3 & 0xFFFFF000, 4, 1)]       # (table, entry size, levels below it)
    elif not sregs.efer & EFER_LMA:
        pdpt = sregs.cr3 & 0xFFFFFFE0
        found.add(pdpt & PAGE_MASK)
        tables = [(entry & _ADDRESS_MASK, 8, 1) for entry in _entries(memory, pdpt, 4, 8) if entry & PTE_P]
    else:
        tables = [(sregs.cr3 & _ADDRESS_MASK, 8, 4 if sregs.cr4 & CR4_LA57 else 3)]
    while tables and len(found) < limit:
        table, size, below = tables.pop()
        if table in found or not memory.contains(table, PAGE_SIZE):
            continue
        found.add(table)
        if below == 0:
            continue
        for entry in _entries(memory, table, PAGE_SIZE // size, size):
            if entry & PTE_P and not (entry & PTE_PS and (below < 3 or size == 4)):
                address = entry & (0xFFFFF000 if size == 4 else _ADDRESS_MASK)
                tables.append((address, size, below - 1))
    return found


def _entries(memory, table, count, size):
    data = memory.read(table, count * size) if memory.contains(table, count * size) else b""
    return [int.from_bytes(data[at:at + size], "little") for at in range(0, len(data), size)]
