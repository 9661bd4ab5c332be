"""Image formats: flat binaries, static ELF executables, multiboot kernels, Linux bzImages and
ELF kernels with a PVH entry point.

detect() picks the format `--format auto` means; boot() loads an image of a given format
into a machine and puts vCPU 0 at its entry point.
"""
from ..x86 import boot as cpu_boot
from ..errors import BadInput
from .flat import read_image
from . import elf, linux, multiboot, pvh

FORMATS = ("auto", "flat", "elf", "multiboot", "linux", "pvh")
KERNEL_FORMATS = ("linux", "pvh")   # kernels that take --initrd as their initial RAM disk
_KERNEL_NAMES = {"linux": "Linux bzImage", "pvh": "PVH kernel"}

# Guest memory the VMM writes before entry (GDT, page tables): loaded segments must miss it.
_BOOT_AREA = [(cpu_boot.BOOT_AREA[0], cpu_boot.BOOT_AREA[1], "the VMM's GDT and page tables")]


def detect(image):
    """'linux' (the bzImage setup header magic), 'multiboot' (a valid header in the first
    8 KiB), 'pvh' (an ELF file with a PVH entry note), 'elf' (ELF magic), else 'flat'."""
    if linux.is_bzimage(image):
        return "linux"
    if multiboot.find_header(image) is not None:
        return "multiboot"
    if elf.is_elf(image):
        try:
            elf.parse(image, 1 << 64)
            if pvh.entry_point(image) is not None:
                return "pvh"
        except BadInput:
            pass   # boot() reports what is wrong with it
        return "elf"
    return "flat"


def read_modules(specs, limit):
    """Boot modules from `--initrd` values: 'FILE' or 'FILE ARGS' (the kernel sees the whole string)."""
    modules = []
    for spec in specs:
        path = spec.split(" ", 1)[0]
        if not path:
            raise BadInput(f"--initrd {spec!r}: no file name")
        modules.append(multiboot.Module(read_image(path, limit), spec.encode()))
    return modules


def read_initrd(paths, limit):
    """The initial RAM disk of a Linux kernel from `--initrd` values: one file, or several
    concatenated (each padded to 4 bytes, as the kernel's cpio unpacker expects)."""
    parts = []
    for path in paths:
        if parts:
            parts[-1] += bytes(-len(parts[-1]) % 4)
            limit -= len(parts[-1])
        parts.append(read_image(path, limit))
    return b"".join(parts)


def boot(machine, image, fmt, name, mode=None, load_addr=None, entry=None,
         cmdline="", modules=(), initrd=b""):
    """Load `image` as `fmt` into machine's RAM and set up vCPU 0; returns the CPU mode used.
    `modules` are a multiboot kernel's modules, `initrd` a Linux kernel's initial RAM disk."""
    if fmt == "auto":
        fmt = detect(image)
    if fmt in KERNEL_FORMATS:
        if modules:
            raise BadInput("multiboot modules given to a Linux kernel: pass the initrd as bytes")
    elif fmt != "multiboot" and (modules or initrd or cmdline):
        raise BadInput(f"--{'append' if cmdline and not (modules or initrd) else 'initrd'} needs a "
                       f"multiboot or Linux kernel, not a {fmt} image")
    if fmt == "flat":
        mode = mode or "long"
        machine.load(image, mode, load_addr, entry)
        return mode
    if load_addr is not None:
        raise BadInput(f"--load-addr applies to flat images; {fmt} images say where they load")
    size = machine.memory.size
    reserved = _BOOT_AREA + machine.firmware_areas
    if fmt == "elf":
        parsed = elf.parse(image, size, name)
        mode = mode or ("long" if parsed.bits == 64 else "protected")
        if mode != "real":
            elf.check_clear_of(parsed, reserved, name)
        elf.load(machine.memory, image, parsed)
        start = parsed.entry if entry is None else entry
        if not machine.memory.contains(start):
            raise BadInput(f"entry point {start:#x} is outside guest memory")
        machine.setup_cpu(mode, start)
        return mode
    if fmt not in ("multiboot", "linux", "pvh"):
        raise BadInput(f"unknown image format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if entry is not None:
        raise BadInput(f"--entry does not apply to {fmt} kernels (the kernel says where it starts)")
    if fmt == "multiboot":
        if mode not in (None, "protected"):
            raise BadInput("multiboot kernels start in protected mode (drop --mode)")
        writes, start = multiboot.prepare(image, size, name, name, cmdline, modules, reserved)
    else:
        if mode is not None:
            raise BadInput(f"--mode does not apply to a {_KERNEL_NAMES[fmt]} (the boot protocol says how it starts)")
        if machine.machine_type != "pc":
            raise BadInput(f"a {_KERNEL_NAMES[fmt]} needs --machine pc (interrupt controllers, timers, ACPI)")
        if fmt == "linux":
            writes, start = linux.prepare(image, size, name, cmdline, initrd, machine.acpi_rsdp)
        else:
            writes, start = pvh.prepare(image, size, name, cmdline, initrd, reserved, machine.acpi_rsdp)
    for gpa, data in writes:
        if isinstance(data, elf.Segment):
            elf.load_segment(machine.memory, image, data)
        else:
            machine.memory.write(gpa, data)
    machine.setup_cpu(start.mode, start.entry, extra_regs=start.regs)
    return start.mode
