"""ELF kernels with a PVH entry point (Linux's vmlinux built with CONFIG_PVH), loaded the way
QEMU's `-kernel` loads them.

The kernel's PT_LOAD segments go to their physical addresses; the XEN_ELFNOTE_PHYS32_ENTRY
note gives the 32-bit entry point. The VMM writes an hvm_start_info (version 1: command
line, the initrd as module 0, the ACPI RSDP, the e820 memory map) and enters in 32-bit
protected mode, paging off, with EBX = its address.
"""
import struct

from ..errors import BadInput
from ..x86.paging import PAGE_MASK
from . import elf
from .linux import CMDLINE_ADDR, CMDLINE_MAX
from .platform import LIMIT_32, Boot, memory_map

XEN_ELFNOTE_PHYS32_ENTRY = 18
NOTE_OWNER = b"Xen"

START_INFO_MAGIC = 0x336EC578
START_INFO_VERSION = 1
START_INFO = struct.Struct("<IIIIQQQQII")   # magic, version, flags, nr_modules, modlist, cmdline,
                                            # rsdp, memmap, memmap_entries, reserved
MODLIST_ENTRY = struct.Struct("<QQQQ")      # paddr, size, cmdline_paddr, reserved
MEMMAP_ENTRY = struct.Struct("<QQII")       # addr, size, type, reserved

# Below 1 MiB and clear of the VMM's GDT and page tables: the start info, the module list and
# the memory map in one page; the command line where the bzImage loader puts it.
START_INFO_ADDR = 0x10000


def entry_point(image, name="the kernel"):
    """The PVH entry point of an ELF file parse() accepted, or None when it has no PVH note."""
    descriptor = elf.find_note(image, NOTE_OWNER, XEN_ELFNOTE_PHYS32_ENTRY, name)
    if descriptor is None:
        return None
    if len(descriptor) not in (4, 8):
        raise BadInput(f"{name}: malformed PVH entry note ({len(descriptor)}-byte descriptor, expected 4 or 8)")
    return int.from_bytes(descriptor, "little")


def prepare(image, memory_size, name, cmdline, initrd, reserved, rsdp=None):
    """Validate the kernel and lay out everything it needs; returns (writes, Boot): writes is
    a list of (gpa, bytes or elf.Segment) to apply once everything checked out."""
    parsed = elf.parse(image, memory_size, name)
    entry = entry_point(image, name)
    if entry is None:
        raise BadInput(f"{name}: no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note): "
                       f"the kernel was built without CONFIG_PVH")
    if not any(segment.paddr <= entry < segment.end for segment in parsed.segments):
        raise BadInput(f"{name}: the PVH entry point {entry:#x} is outside every loaded segment")
    elf.check_clear_of(parsed, list(reserved) + [
        (START_INFO_ADDR, START_INFO_ADDR + 0x1000, "the PVH start information"),
        (CMDLINE_ADDR, CMDLINE_ADDR + CMDLINE_MAX, "the kernel command line")], name)
    command = cmdline.encode()
    if b"\0" in command or len(command) >= CMDLINE_MAX:
        raise BadInput(f"--append: the command line must be shorter than {CMDLINE_MAX} bytes, without NUL bytes")
    writes = [(segment.paddr, segment) for segment in parsed.segments]
    writes.append((CMDLINE_ADDR, command + b"\0"))

    modules = b""
    if initrd:
        kernel_end = max(segment.end for segment in parsed.segments)
        ram_top = min(memory_size, LIMIT_32)
        initrd_addr = (ram_top - len(initrd)) & PAGE_MASK
        if initrd_addr < kernel_end:
            raise BadInput(f"initrd of {len(initrd)} bytes does not fit between the kernel (up to "
                           f"{kernel_end:#x}) and the end of guest memory ({ram_top:#x}): give the guest more --mem")
        modules = MODLIST_ENTRY.pack(initrd_addr, len(initrd), 0, 0)
        writes.append((initrd_addr, initrd))
    entries = memory_map(memory_size)
    modlist_addr = START_INFO_ADDR + START_INFO.size
    memmap_addr = modlist_addr + len(modules)
    memmap = b"".join(MEMMAP_ENTRY.pack(base, length, kind, 0) for base, length, kind in entries)
    info = START_INFO.pack(START_INFO_MAGIC, START_INFO_VERSION, 0, len(modules) // MODLIST_ENTRY.size,
                           modlist_addr if modules else 0, CMDLINE_ADDR, rsdp or 0, memmap_addr, len(entries), 0)
    writes.append((START_INFO_ADDR, info + modules + memmap))
    return writes, Boot(entry, {"rbx": START_INFO_ADDR}, "protected")
