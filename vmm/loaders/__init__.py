"""Image formats: flat binaries, static ELF executables and multiboot kernels.

detect() picks the format `--format auto` means; boot() loads an image of a
given format into a machine and puts vCPU 0 at its entry point.
"""
from ..x86 import boot
from ..errors import BadInput
from .flat import read_image
from . import elf, multiboot

FORMATS = ("auto", "flat", "elf", "multiboot")

# Guest memory the VMM writes before entry (GDT, page tables): loaded segments must miss it.
_BOOT_AREA = [(boot.BOOT_AREA[0], boot.BOOT_AREA[1], "the VMM's GDT and page tables")]


def detect(image):
    """'multiboot' (a valid header in the first 8 KiB), 'elf' (ELF magic), else 'flat'."""
    if multiboot.find_header(image) is not None:
        return "multiboot"
    if elf.is_elf(image):
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


def boot(machine, image, fmt, name, mode=None, load_addr=None, entry=None,
         cmdline="", modules=()):
    """Load `image` as `fmt` into machine's RAM and set up vCPU 0; returns the CPU mode used."""
    if fmt == "auto":
        fmt = detect(image)
    if fmt != "multiboot" and (modules or cmdline):
        raise BadInput(f"--{'initrd' if modules else 'append'} needs a multiboot kernel, not a {fmt} image")
    if fmt == "flat":
        mode = mode or "long"
        machine.load(image, mode, load_addr, entry)
        return mode
    if load_addr is not None:
        raise BadInput(f"--load-addr applies to flat images; {fmt} images say where they load")
    size = machine.memory.size
    if fmt == "elf":
        parsed = elf.parse(image, size, name)
        mode = mode or ("long" if parsed.bits == 64 else "protected")
        if mode != "real":
            elf.check_clear_of(parsed, _BOOT_AREA, name)
        elf.load(machine.memory, image, parsed)
        start = parsed.entry if entry is None else entry
        if not machine.memory.contains(start):
            raise BadInput(f"entry point {start:#x} is outside guest memory")
        machine.setup_cpu(mode, start)
        return mode
    if fmt == "multiboot":
        if mode not in (None, "protected"):
            raise BadInput("multiboot kernels start in protected mode (drop --mode)")
        if entry is not None:
            raise BadInput("--entry does not apply to multiboot kernels (the header gives the entry)")
        writes, start = multiboot.prepare(image, size, name, name, cmdline, modules, _BOOT_AREA)
        for gpa, data in writes:
            if isinstance(data, elf.Segment):
                elf.load_segment(machine.memory, image, data)
            else:
                machine.memory.write(gpa, data)
        machine.setup_cpu("protected", start.entry, extra_regs=start.regs)
        return "protected"
    raise BadInput(f"unknown image format {fmt!r}: choose one of {', '.join(FORMATS)}")
