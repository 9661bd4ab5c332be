"""The PC's physical address map as firmware reports it to a kernel, and where a loaded
kernel starts.

RAM starts at 0 and stays below the 32-bit MMIO hole (the VMM gives a guest at
most 3 GiB). Below 1 MiB a PC has 639 KiB of conventional memory, the 1 KiB
extended BIOS data area, the VGA window and the BIOS area; the VMM keeps the
ACPI tables in the BIOS area, where kernels look for them.
"""
from dataclasses import dataclass, field

LOW_MEMORY_END = 0x9FC00          # 639 KiB of conventional memory
EBDA = (0x9FC00, 0xA0000)
BIOS_AREA = (0xF0000, 0x100000)   # the VMM's ACPI tables live here
HIGH_MEMORY = 0x100000
LIMIT_32 = 1 << 32

E820_RAM, E820_RESERVED = 1, 2


@dataclass(slots=True, frozen=True)
class Boot:
    """Where and how vCPU 0 enters a loaded kernel: CPU mode, entry point, and the general
    registers the boot protocol sets."""

    entry: int
    regs: dict = field(default_factory=dict)
    mode: str = "protected"


def memory_map(ram_size):
    """(base, length, type) ranges in address order: RAM below and above 1 MiB, the
    EBDA and the BIOS area (reserved)."""
    ram_top = min(ram_size, LIMIT_32)
    entries = [(0, min(ram_top, LOW_MEMORY_END), E820_RAM),
               (EBDA[0], EBDA[1] - EBDA[0], E820_RESERVED),
               (BIOS_AREA[0], BIOS_AREA[1] - BIOS_AREA[0], E820_RESERVED)]
    if ram_top > HIGH_MEMORY:
        entries.append((HIGH_MEMORY, ram_top - HIGH_MEMORY, E820_RAM))
    return entries


def ram_ranges(ram_size):
    """[start, end) of the usable RAM ranges of memory_map()."""
    return [(base, base + length) for base, length, kind in memory_map(ram_size) if kind == E820_RAM]
