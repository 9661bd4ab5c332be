"""Linux bzImage kernels through the x86 boot protocol (version 2.06 and later), loaded the
way QEMU's `-kernel` and other direct-boot VMMs load them, without running the real-mode
setup code.

The file starts with the real-mode setup (setup_sects + 1 sectors, the setup header at
0x1f1), followed by the protected-mode kernel (syssize paragraphs). The VMM copies the
protected-mode kernel to its preferred address, writes the boot_params "zero page" (the
setup header from the file with the loader's fields filled in, the e820 memory map and
the ACPI RSDP address), the command line and the initrd, then enters the kernel at its
64-bit entry point (load address + 0x200, RSI = zero page, the VMM's identity-mapped
page tables) or, for kernels without one, at its 32-bit entry (load address, ESI = zero
page, flat segments, paging off).

Every field of the header comes from the file, so each one is checked against the file
and guest memory before anything is written.
"""
import struct
from dataclasses import dataclass

from ..errors import BadInput
from ..x86.paging import PAGE_MASK, PAGE_SIZE
from .platform import LIMIT_32, Boot, memory_map

SETUP_HEADER_AT = 0x1F1
HEADER_MAGIC = b"HdrS"
MAGIC_AT = 0x202
BOOT_FLAG = 0xAA55
MIN_VERSION = 0x206            # cmdline_size appears in 2.06
SECTOR = 512
MAX_SETUP_SECTS = 64           # the real-mode setup must fit in its 32 KiB segment
SETUP_HEADER_END_MAX = 0x290   # struct boot_params: the setup header ends before 0x290

LOADED_HIGH = 0x01             # loadflags: the protected-mode kernel loads at 1 MiB or above
XLF_KERNEL_64 = 0x01           # xloadflags: a 64-bit entry point at load address + 0x200
ENTRY_64_OFFSET = 0x200
TYPE_OF_LOADER = 0xFF          # "undefined": no registered boot loader id

DEFAULT_LOAD_ADDR = 0x100000   # before protocol 2.10 (no pref_address)
DEFAULT_INITRD_ADDR_MAX = 0x37FFFFFF

# Where the VMM puts what it hands the kernel (all below 1 MiB, clear of the VMM's GDT and
# page tables at 0x1000-0x7fff and of the EBDA).
ZERO_PAGE = 0x10000
CMDLINE_ADDR = 0x20000
CMDLINE_MAX = 0x10000

# struct boot_params offsets.
BP_ACPI_RSDP = 0x070
BP_E820_ENTRIES = 0x1E8
BP_SENTINEL = 0x1EF
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES = 128
E820_ENTRY = struct.Struct("<QQI")

# struct setup_header offsets (from the start of the file / the zero page).
HDR_SETUP_SECTS = 0x1F1
HDR_SYSSIZE = 0x1F4
HDR_BOOT_FLAG = 0x1FE
HDR_JUMP = 0x200
HDR_VERSION = 0x206
HDR_TYPE_OF_LOADER = 0x210
HDR_LOADFLAGS = 0x211
HDR_CODE32_START = 0x214
HDR_RAMDISK_IMAGE = 0x218
HDR_RAMDISK_SIZE = 0x21C
HDR_CMD_LINE_PTR = 0x228
HDR_INITRD_ADDR_MAX = 0x22C
HDR_KERNEL_ALIGNMENT = 0x230
HDR_RELOCATABLE = 0x234
HDR_XLOADFLAGS = 0x236
HDR_CMDLINE_SIZE = 0x238
HDR_PAYLOAD = 0x248
HDR_PREF_ADDRESS = 0x258
HDR_INIT_SIZE = 0x260


@dataclass(slots=True, frozen=True)
class SetupHeader:
    """The fields of a bzImage's setup header the loader uses, validated."""

    version: int
    setup_size: int          # bytes of real-mode setup before the protected-mode kernel
    kernel_size: int         # bytes of protected-mode kernel (syssize * 16)
    header_end: int          # offset just past the setup header in the file
    loadflags: int
    xloadflags: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable: bool
    cmdline_size: int
    pref_address: int
    init_size: int

    @property
    def has_64bit_entry(self):
        return self.version >= 0x20C and bool(self.xloadflags & XLF_KERNEL_64)

    @property
    def load_address(self):
        return self.pref_address if self.version >= 0x20A else DEFAULT_LOAD_ADDR


def is_bzimage(image):
    """The setup header's magic: the file says it is a Linux kernel (checked fully by parse())."""
    return image[MAGIC_AT:MAGIC_AT + 4] == HEADER_MAGIC


def _u(image, offset, size):
    return int.from_bytes(image[offset:offset + size], "little")


def parse(image, name="the kernel"):
    """Validate the setup header of a bzImage; BadInput names the first field that is wrong."""
    if len(image) < MAGIC_AT + 4 or not is_bzimage(image):
        raise BadInput(f"{name}: not a Linux bzImage (no 'HdrS' setup header magic at {MAGIC_AT:#x})")
    version = _u(image, HDR_VERSION, 2)
    if version < MIN_VERSION:
        raise BadInput(f"{name}: Linux boot protocol {version >> 8}.{version & 0xFF:02d} is too old "
                       f"(2.06 or later needed)")
    # The setup code starts with a short jump over the header, so the jump says where it ends.
    header_end = MAGIC_AT + image[HDR_JUMP + 1]
    needed_end = HDR_INIT_SIZE + 4 if version >= 0x20A else HDR_CMDLINE_SIZE + 4
    if image[HDR_JUMP] != 0xEB or not needed_end <= header_end <= SETUP_HEADER_END_MAX:
        raise BadInput(f"{name}: corrupt setup header: the jump at {HDR_JUMP:#x} leads to {header_end:#x}, "
                       f"not past a protocol {version >> 8}.{version & 0xFF:02d} header "
                       f"({needed_end:#x}-{SETUP_HEADER_END_MAX:#x})")
    if len(image) < header_end:
        raise BadInput(f"{name}: truncated: the setup header ends at {header_end:#x}, the file has {len(image)} bytes")
    if _u(image, HDR_BOOT_FLAG, 2) != BOOT_FLAG:
        raise BadInput(f"{name}: corrupt setup header: boot_flag {_u(image, HDR_BOOT_FLAG, 2):#06x}, "
                       f"expected {BOOT_FLAG:#06x}")
    setup_sects = image[HDR_SETUP_SECTS] or 4
    if setup_sects > MAX_SETUP_SECTS:
        raise BadInput(f"{name}: corrupt setup header: setup_sects {setup_sects} (at most {MAX_SETUP_SECTS})")
    setup_size = (setup_sects + 1) * SECTOR
    kernel_size = _u(image, HDR_SYSSIZE, 4) * 16
    if kernel_size == 0:
        raise BadInput(f"{name}: corrupt setup header: syssize is 0 (no protected-mode kernel)")
    if setup_size + kernel_size > len(image):
        raise BadInput(f"{name}: truncated: the setup header describes {setup_size + kernel_size} bytes "
                       f"(setup {setup_size}, kernel {kernel_size}), the file has {len(image)}")
    loadflags = image[HDR_LOADFLAGS]
    if not loadflags & LOADED_HIGH:
        raise BadInput(f"{name}: a zImage (loaded below 1 MiB) is not supported: loadflags "
                       f"{loadflags:#04x} lacks LOADED_HIGH")
    fields = dict(xloadflags=0, kernel_alignment=0, relocatable=False, pref_address=DEFAULT_LOAD_ADDR,
                  init_size=kernel_size)
    if version >= 0x205:
        fields["kernel_alignment"] = _u(image, HDR_KERNEL_ALIGNMENT, 4)
        fields["relocatable"] = bool(image[HDR_RELOCATABLE])
    if version >= 0x20C:
        fields["xloadflags"] = _u(image, HDR_XLOADFLAGS, 2)
    if version >= 0x20A:
        fields["pref_address"] = _u(image, HDR_PREF_ADDRESS, 8)
        fields["init_size"] = _u(image, HDR_INIT_SIZE, 4)
        payload_offset, payload_length = struct.unpack_from("<II", image, HDR_PAYLOAD)
        if payload_offset + payload_length > kernel_size:
            raise BadInput(f"{name}: truncated: the compressed payload at {payload_offset:#x}+{payload_length:#x} "
                           f"runs past the protected-mode kernel ({kernel_size} bytes)")
    alignment = fields["kernel_alignment"]
    if alignment & (alignment - 1):
        raise BadInput(f"{name}: corrupt setup header: kernel_alignment {alignment:#x} is not a power of two")
    if fields["init_size"] < kernel_size:
        raise BadInput(f"{name}: corrupt setup header: init_size {fields['init_size']:#x} is smaller than "
                       f"the kernel ({kernel_size:#x} bytes)")
    initrd_addr_max = _u(image, HDR_INITRD_ADDR_MAX, 4) if version >= 0x203 else DEFAULT_INITRD_ADDR_MAX
    header = SetupHeader(version=version, setup_size=setup_size, kernel_size=kernel_size,
                         header_end=header_end, loadflags=loadflags,
                         initrd_addr_max=initrd_addr_max, cmdline_size=_u(image, HDR_CMDLINE_SIZE, 4),
                         **fields)
    load = header.load_address
    if load < 0x100000 or load % PAGE_SIZE or load >= LIMIT_32:
        raise BadInput(f"{name}: corrupt setup header: the kernel would load at {load:#x}")
    return header


def prepare(image, memory_size, name, cmdline, initrd, rsdp=None):
    """Validate the kernel and lay out everything it needs; returns (writes, Boot).

    writes is a list of (gpa, bytes) to apply once everything checked out; `initrd` is the
    initial RAM disk's bytes (or b"" for none); `rsdp` the address of the ACPI RSDP."""
    header = parse(image, name)
    load = header.load_address
    ram_top = min(memory_size, LIMIT_32)
    kernel_end = load + header.init_size
    if kernel_end > ram_top:
        raise BadInput(f"{name}: the kernel needs memory up to {kernel_end:#x} (loaded at {load:#x}, "
                       f"init_size {header.init_size:#x}); the guest has {memory_size:#x} bytes")
    command = cmdline.encode()
    if b"\0" in command:
        raise BadInput("--append: the command line contains a NUL byte")
    limit = min(header.cmdline_size, CMDLINE_MAX - 1)
    if len(command) > limit:
        raise BadInput(f"--append: the command line is {len(command)} bytes, the kernel takes at most {limit}")

    zero_page = bytearray(PAGE_SIZE)
    zero_page[SETUP_HEADER_AT:header.header_end] = image[SETUP_HEADER_AT:header.header_end]
    zero_page[BP_SENTINEL] = 0
    zero_page[HDR_TYPE_OF_LOADER] = TYPE_OF_LOADER
    struct.pack_into("<I", zero_page, HDR_CODE32_START, load)
    struct.pack_into("<I", zero_page, HDR_CMD_LINE_PTR, CMDLINE_ADDR)
    writes = [(load, image[header.setup_size:header.setup_size + header.kernel_size]),
              (CMDLINE_ADDR, command + b"\0")]
    if initrd:
        # As high as the kernel allows (QEMU's choice), page aligned, above the kernel's buffer.
        highest = min(header.initrd_addr_max + 1, ram_top)
        initrd_addr = (highest - len(initrd)) & PAGE_MASK
        if initrd_addr < kernel_end:
            raise BadInput(f"initrd of {len(initrd)} bytes does not fit between the kernel (up to "
                           f"{kernel_end:#x}) and {highest:#x}: give the guest more --mem")
        struct.pack_into("<II", zero_page, HDR_RAMDISK_IMAGE, initrd_addr, len(initrd))
        writes.append((initrd_addr, initrd))
    entries = memory_map(memory_size)
    assert len(entries) <= E820_MAX_ENTRIES
    zero_page[BP_E820_ENTRIES] = len(entries)
    for index, entry in enumerate(entries):
        E820_ENTRY.pack_into(zero_page, BP_E820_TABLE + index * E820_ENTRY.size, *entry)
    if rsdp is not None and header.version >= 0x20E:
        struct.pack_into("<Q", zero_page, BP_ACPI_RSDP, rsdp)
    writes.append((ZERO_PAGE, bytes(zero_page)))
    if header.has_64bit_entry:
        return writes, Boot(load + ENTRY_64_OFFSET, {"rsi": ZERO_PAGE}, "long")
    return writes, Boot(load, {"rsi": ZERO_PAGE}, "protected")
