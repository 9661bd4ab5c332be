"""Multiboot 1 kernels, loaded the way QEMU's `-kernel` loads them.

The header sits in the first 8 KiB; the kernel is placed by its ELF program
headers or, when header flag bit 16 is set, by the header's address fields.
As in QEMU, the module list, the command lines and the boot loader name follow
the kernel (page aligned), the modules follow them (each page aligned), the
memory map is at 0x9000 and the information structure at 0x9500. A kernel that
loads over 0x9000-0x9558 gets both after its boot loader name instead, so they
are never where the image is. The kernel enters in 32-bit protected mode, paging
off, EAX = 0x2BADB002, EBX = the information structure (0x9500).
"""
import struct
from dataclasses import dataclass

from ..errors import BadInput
from ..x86.paging import PAGE_MASK, PAGE_SIZE
from . import elf as elf_loader
from .platform import LIMIT_32 as _LIMIT_32
from .platform import LOW_MEMORY_END, Boot, memory_map

HEADER_MAGIC = 0x1BADB002
BOOT_MAGIC = 0x2BADB002
SEARCH_LIMIT = 8192
HEADER_SIZE = 48        # the full header with address and video fields
FLAG_ADDRESS = 1 << 16  # header carries load addresses
BOOTLOADER_NAME = b"qemu"

MMAP_ADDR = 0x9000
INFO_ADDR = 0x9500
INFO_SIZE = 88
MOD_ENTRY_SIZE = 16
BOOT_DEVICE = 0x8000FFFF   # no BIOS drive, as QEMU says

INFO_MEMORY, INFO_BOOT_DEVICE, INFO_CMDLINE, INFO_MODS, INFO_MMAP, INFO_BOOTLOADER = (
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 6, 1 << 9)
INFO_FLAGS = INFO_MEMORY | INFO_BOOT_DEVICE | INFO_CMDLINE | INFO_MODS | INFO_MMAP | INFO_BOOTLOADER

MMAP_ENTRY = struct.Struct("<IQQI")   # size (20, not counting itself), base, length, type


def _page_align(value):
    return (value + PAGE_SIZE - 1) & PAGE_MASK


@dataclass(slots=True, frozen=True)
class Header:
    """A multiboot header; the address fields are 0 (and has_addresses False) when the file
    ends before them."""

    offset: int
    flags: int
    has_addresses: bool
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0


def find_header(image):
    """(offset, Header) of the first magic with a valid checksum in the first 8 KiB.

    Returns None when there is no magic at all; raises BadInput when magics are
    present but none has a valid checksum (a damaged multiboot kernel).
    """
    bad_checksum_at = None
    for offset in range(0, min(SEARCH_LIMIT - HEADER_SIZE, len(image) - 11), 4):
        magic, flags, checksum = struct.unpack_from("<III", image, offset)
        if magic != HEADER_MAGIC:
            continue
        if (magic + flags + checksum) & 0xFFFFFFFF == 0:
            fields = struct.unpack_from("<5I", image, offset + 12) if offset + 32 <= len(image) else None
            return Header(offset, flags, fields is not None, *(fields or ()))
        if bad_checksum_at is None:
            bad_checksum_at = offset
    if bad_checksum_at is not None:
        raise BadInput(f"multiboot header at offset {bad_checksum_at:#x} has a bad checksum")
    return None


@dataclass(slots=True, frozen=True)
class Module:
    """A boot module: its bytes and the string the kernel sees (file name and arguments)."""

    data: bytes
    string: bytes


def _address_layout(image, header, name):
    """(segments, entry) from the header's address fields, validated like QEMU does."""
    if not header.has_addresses:
        raise BadInput(f"{name}: truncated: the multiboot header's address fields run past the end of the file")
    if header.header_addr < header.load_addr:
        raise BadInput(f"{name}: multiboot header_addr {header.header_addr:#x} is below "
                       f"load_addr {header.load_addr:#x}")
    text_offset = header.offset - (header.header_addr - header.load_addr)
    if text_offset < 0:
        raise BadInput(f"{name}: multiboot load_addr {header.load_addr:#x} lies before the start of the file")
    if header.load_end_addr:
        if header.load_end_addr < header.load_addr:
            raise BadInput(f"{name}: multiboot load_end_addr {header.load_end_addr:#x} is below "
                           f"load_addr {header.load_addr:#x}")
        load_size = header.load_end_addr - header.load_addr
    else:
        load_size = len(image) - text_offset
    if text_offset + load_size > len(image):
        raise BadInput(f"{name}: truncated: the multiboot header asks for {load_size:#x} bytes at file "
                       f"offset {text_offset:#x}, the file has {len(image)}")
    kernel_size = load_size
    if header.bss_end_addr:
        if header.bss_end_addr < header.load_addr + load_size:
            raise BadInput(f"{name}: multiboot bss_end_addr {header.bss_end_addr:#x} is below "
                           f"load_end_addr {header.load_addr + load_size:#x}")
        kernel_size = header.bss_end_addr - header.load_addr
    if kernel_size == 0:
        raise BadInput(f"{name}: the multiboot header describes an empty kernel")
    segment = elf_loader.Segment(header.load_addr, header.load_addr, text_offset, load_size, kernel_size)
    return [segment], header.entry_addr


def prepare(image, memory_size, name, program_name, cmdline, modules, reserved):
    """Validate the kernel and lay out everything it needs; returns (writes, Boot).

    writes is a list of (gpa, bytes or Segment) to apply once everything checked out.
    """
    header = find_header(image)
    if header is None:
        raise BadInput(f"{name}: no multiboot header (magic {HEADER_MAGIC:#x}) in the first 8 KiB")
    if header.flags & FLAG_ADDRESS:
        segments, entry = _address_layout(image, header, name)
        for segment in segments:
            if segment.end > memory_size:
                raise BadInput(f"{name}: multiboot kernel at {segment.paddr:#x}-{segment.end:#x} is "
                               f"outside guest memory (0x0-{memory_size:#x})")
        if not any(s.paddr <= entry < s.end for s in segments):
            raise BadInput(f"{name}: multiboot entry point {entry:#x} is outside the loaded kernel")
    else:
        bits = elf_loader.elf_class(image)
        if bits == 64:
            raise BadInput(f"{name}: a multiboot kernel without address fields must be ELF32, not ELF64")
        if bits is None:
            raise BadInput(f"{name}: the multiboot header has no address fields (flag bit 16) "
                           f"and the file is not an ELF32 executable")
        parsed = elf_loader.parse(image, memory_size, name)
        segments, entry = parsed.segments, parsed.entry
    low = min(s.paddr for s in segments)
    high = max(s.end for s in segments)
    if high > _LIMIT_32:
        raise BadInput(f"{name}: multiboot kernel ends at {high:#x}, above 4 GiB")
    fixed_structures = (MMAP_ADDR, INFO_ADDR + INFO_SIZE)
    elf_loader.check_clear_of(elf_loader.ElfImage(32, entry, segments), reserved, name)
    # QEMU's fixed place for the memory map and information, unless the kernel is there.
    at_fixed_place = not any(s.paddr < fixed_structures[1] and fixed_structures[0] < s.end for s in segments)
    memory_map = _memory_map(memory_size)

    # After the kernel: module list, module strings and command line, boot loader name,
    # then (when the kernel covers their fixed place) the memory map and the information.
    info_base = low + _page_align(high - low)
    strings = [module.string for module in modules]
    strings.append(f"{program_name} {cmdline}".encode())
    string_base = info_base + MOD_ENTRY_SIZE * len(modules)
    string_addrs, cursor = [], string_base
    for text in strings:
        string_addrs.append(cursor)
        cursor += len(text) + 1
    bootloader_addr = cursor
    cursor += len(BOOTLOADER_NAME) + 1
    if at_fixed_place:
        mmap_addr, info_addr = MMAP_ADDR, INFO_ADDR
    else:
        mmap_addr = (cursor + 7) & ~7
        info_addr = mmap_addr + len(memory_map)
        cursor = info_addr + INFO_SIZE
    module_addr = info_base + _page_align(cursor - info_base)
    module_list = bytearray()
    module_writes = []
    for module, string_addr in zip(modules, string_addrs):
        module_list += struct.pack("<IIII", module_addr, module_addr + len(module.data), string_addr, 0)
        module_writes.append((module_addr, module.data))
        module_addr = _page_align(module_addr + len(module.data))
    end = module_addr
    occupied = list(reserved)
    if at_fixed_place:
        occupied.append((*fixed_structures, "the multiboot memory map and information"))
    for start, stop, what in occupied:
        if info_base < stop and start < end:
            raise BadInput(f"{name}: the multiboot information at {info_base:#x}-{end:#x} would overlap "
                           f"{what} at {start:#x}-{stop:#x}")
    if end > min(memory_size, _LIMIT_32):
        raise BadInput(f"{name}: the kernel, its boot information and modules need memory up to "
                       f"{end:#x}, the guest has {memory_size:#x} bytes")

    string_block = b"".join(text + b"\0" for text in strings) + BOOTLOADER_NAME + b"\0"
    info = struct.pack("<IIIIIII16xIII8xI20x",
                       INFO_FLAGS, LOW_MEMORY_END >> 10, max(0, min(memory_size, _LIMIT_32) - 0x100000) >> 10,
                       BOOT_DEVICE, string_addrs[-1], len(modules), info_base,
                       len(memory_map), mmap_addr, 0, bootloader_addr)
    assert len(info) == INFO_SIZE
    writes = [(segment.paddr, segment) for segment in segments]
    writes += [(info_base, bytes(module_list)), (string_base, string_block),
               (mmap_addr, memory_map), (info_addr, info)]
    writes += module_writes
    return writes, Boot(entry, {"rax": BOOT_MAGIC, "rbx": info_addr})


def _memory_map(memory_size):
    return b"".join(MMAP_ENTRY.pack(MMAP_ENTRY.size - 4, base, length, kind)
                    for base, length, kind in memory_map(memory_size))
