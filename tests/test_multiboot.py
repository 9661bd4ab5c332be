"""Multiboot kernels boot as under QEMU's -kernel: the information structure,
command line, modules, and the same serial output and exit status."""
import shutil
import struct
import subprocess

import pytest

from conftest import GUESTS, ROOT
from test_cli import assert_one_line_error, vmm
from vmm import loaders
from vmm.errors import EXIT_BAD_INPUT
from vmm.loaders import multiboot

pytestmark = pytest.mark.kvm

KERNEL = "guest_images/multiboot_long.elf"   # relative: the program name the kernel sees
KERNEL_STATUS = (0x21 << 1) | 1
MB_MAGIC = 0x1BADB002
FLAG_ADDRESS = 1 << 16


def kernel_output(cmdline, modules=(), cpus=1):
    lines = [b"multiboot: in long mode", b"cmdline: " + cmdline, b"mem_lower: 639 KiB",
             b"modules: %d" % len(modules)]
    lines += [b"module %d: %s (%d bytes)" % (index, string, size) for index, (string, size) in enumerate(modules)]
    lines.append(b"fw_cfg cpus: %d" % cpus)
    return b"\n".join(lines) + b"\n"


def test_kernel_gets_cmdline_with_program_name_modules_and_cpu_count(tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.bin"
    first.write_bytes(b"module one\n")
    second.write_bytes(bytes(range(256)) * 20)
    result = vmm("run", KERNEL, "--append", "console=ttyS0 quiet", "--initrd", f"{first} arg=1",
                 "--initrd", str(second), "--smp", "2", "--timeout", "10")
    expected = kernel_output(f"{KERNEL} console=ttyS0 quiet".encode(),
                             [(f"{first} arg=1".encode(), 11), (str(second).encode(), 5120)], cpus=2)
    assert result.stdout == expected, result.stderr.decode()
    assert result.returncode == KERNEL_STATUS, f"expected {KERNEL_STATUS}, got {result.returncode}"


def test_cmdline_without_append_is_the_program_name_and_a_space():
    result = vmm("run", KERNEL, "--timeout", "10")
    assert result.stdout == kernel_output(f"{KERNEL} ".encode())
    assert result.returncode == KERNEL_STATUS


def test_bare_machine_has_no_fw_cfg():
    result = vmm("run", KERNEL, "--machine", "bare", "--timeout", "10")
    assert result.stdout.endswith(b"multiboot: no fw_cfg signature\n")
    assert result.returncode == (2 << 1) | 1


def test_information_structure_memory_map_and_modules(machine):
    vm = machine(mem_size=64 << 20, machine_type="pc")
    image = (ROOT / KERNEL).read_bytes()
    modules = [multiboot.Module(b"A" * 5000, b"mod.bin x=1")]
    assert loaders.boot(vm, image, "auto", "kernel", cmdline="quiet", modules=modules) == "protected"
    regs = vm.vcpus[0].get_regs()
    assert (regs.rax, regs.rbx, regs.rip) == (0x2BADB002, 0x9500, 0x100000)
    sregs = vm.vcpus[0].get_sregs()
    assert sregs.cr0 & 0x80000001 == 1, "protected mode, paging off"
    memory = vm.memory
    flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr = struct.unpack(
        "<7I", memory.read(0x9500, 28))
    mmap_length, mmap_addr = struct.unpack("<II", memory.read(0x9500 + 44, 8))
    bootloader, = struct.unpack("<I", memory.read(0x9500 + 64, 4))
    assert flags == 0x24F
    assert (mem_lower, mem_upper, boot_device) == (639, (64 << 10) - 1024, 0x8000FFFF)
    assert memory.read_cstring(cmdline, 100) == b"kernel quiet"
    assert memory.read_cstring(bootloader, 10) == b"qemu"
    entries = [struct.unpack_from("<IQQI", memory.read(mmap_addr, mmap_length), offset)
               for offset in range(0, mmap_length, 24)]
    assert entries == [(20, 0, 0x9FC00, 1), (20, 0x9FC00, 0x400, 2), (20, 0xF0000, 0x10000, 2),
                       (20, 0x100000, (64 << 20) - 0x100000, 1)]
    assert mods_count == 1
    start, end, string, _ = struct.unpack("<4I", memory.read(mods_addr, 16))
    assert start % 4096 == 0 and end - start == 5000 and start > mods_addr
    assert memory.read(start, 5000) == b"A" * 5000
    assert memory.read_cstring(string, 100) == b"mod.bin x=1"


def address_kernel(flags=FLAG_ADDRESS, header_addr=0xFFFE0, load_addr=0xFFFE0, load_end=0, bss_end=0,
                   entry=0x100000, body=None):
    """A multiboot kernel placed by its header's address fields: a 32-byte header, then
    exit_status.bin (linked at 1 MiB, exits with 42)."""
    body = (GUESTS / "exit_status.bin").read_bytes() if body is None else body
    header = struct.pack("<8I", MB_MAGIC, flags, -(MB_MAGIC + flags) & 0xFFFFFFFF,
                         header_addr, load_addr, load_end, bss_end, entry)
    return header + body


def test_kernel_placed_by_header_address_fields(tmp_path):
    path = tmp_path / "kernel.bin"
    path.write_bytes(address_kernel(bss_end=0x101000))
    result = vmm("run", str(path), "--timeout", "10")
    assert result.returncode == (42 << 1) | 1, result.stderr.decode()


def test_kernel_over_the_fixed_information_place_gets_it_after_itself(machine):
    """A kernel loaded at 0x8000-0xa000 covers 0x9000-0x9558, where QEMU writes the memory map
    and the information structure: they follow the boot loader name instead, and the kernel
    image stays intact."""
    body = bytes(range(256)) * 32
    image = address_kernel(header_addr=0x8000, load_addr=0x8000, entry=0x8020, body=body)
    vm = machine(mem_size=64 << 20, machine_type="pc")
    loaders.boot(vm, image, "auto", "kernel", cmdline="x=1")
    info = vm.vcpus[0].get_regs().rbx
    kernel_end = 0x8000 + len(image)
    assert info >= kernel_end, f"information at {info:#x} inside the kernel (ends {kernel_end:#x})"
    assert vm.memory.read(0x8000, len(image)) == image
    flags, mem_lower, _, _, cmdline = struct.unpack("<5I", vm.memory.read(info, 20))
    mmap_length, mmap_addr = struct.unpack("<II", vm.memory.read(info + 44, 8))
    assert (flags, mem_lower) == (0x24F, 639)
    assert vm.memory.read_cstring(cmdline, 100) == b"kernel x=1"
    assert kernel_end <= mmap_addr and mmap_addr + mmap_length <= info
    assert struct.unpack("<IQQI", vm.memory.read(mmap_addr, 24)) == (20, 0, 0x9FC00, 1)


def _bad_checksum():
    image = bytearray(address_kernel())
    image[8] ^= 1
    return bytes(image)


def _elf64_with_header():
    image = bytearray((GUESTS / "hello_elf64.elf").read_bytes())
    image[0x100:0x10C] = struct.pack("<3I", MB_MAGIC, 0, -MB_MAGIC & 0xFFFFFFFF)
    return bytes(image)


MALFORMED = {
    "bad-checksum": (_bad_checksum, "bad checksum"),
    "header-below-load": (lambda: address_kernel(header_addr=0xFFF00), "header_addr 0xfff00 is below load_addr"),
    "load-before-file": (lambda: address_kernel(load_addr=0xFFF00, header_addr=0x100000),
                         "lies before the start of the file"),
    "load-end-below-load": (lambda: address_kernel(load_end=0x1000), "load_end_addr 0x1000 is below"),
    "truncated": (lambda: address_kernel(load_end=0x200000), "truncated"),
    "bss-below-load-end": (lambda: address_kernel(bss_end=0x100001), "bss_end_addr 0x100001 is below"),
    "outside-memory": (lambda: address_kernel(header_addr=0xFFFFFE0, load_addr=0xFFFFFE0, entry=0x10000000),
                       "outside guest memory"),
    "entry-outside": (lambda: address_kernel(entry=0x500000), "entry point 0x500000"),
    "over-vmm-page-tables": (lambda: address_kernel(header_addr=0x2000, load_addr=0x2000, entry=0x2020),
                             "overlaps the VMM's GDT and page tables"),
    "elf64-kernel": (_elf64_with_header, "must be ELF32"),
    "no-address-not-elf": (lambda: address_kernel(flags=0), "not an ELF32 executable"),
    "address-fields-cut-off": (lambda: address_kernel()[:24], "address fields run past the end"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_multiboot_is_one_line_bad_input(case, tmp_path):
    make, text = MALFORMED[case]
    path = tmp_path / f"{case}.bin"
    path.write_bytes(make())
    result = vmm("run", str(path), "--mem", "64M")
    assert_one_line_error(result, EXIT_BAD_INPUT, text)


@pytest.mark.parametrize("args, text", [
    (["--format", "multiboot", "guest_images/hello_elf64.elf"], "no multiboot header"),
    (["guest_images/multiboot_long.elf", "--initrd", "/nonexistent/module"], "no such file"),
    (["guest_images/hello_long.bin", "--initrd", "guest_images/hello_long.bin"], "--initrd needs a multiboot or Linux kernel"),
    (["guest_images/multiboot_long.elf", "--mode", "long"], "multiboot kernels start in protected mode"),
    (["guest_images/multiboot_long.elf", "--load-addr", "0x200000"], "--load-addr applies to flat images"),
])
def test_multiboot_option_errors(args, text):
    assert_one_line_error(vmm("run", *args), EXIT_BAD_INPUT, text)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_same_output_and_status_as_qemu(tmp_path):
    module = tmp_path / "module.txt"
    module.write_bytes(b"hello module\n")
    ours = vmm("run", KERNEL, "--append", "a=1 b", "--initrd", f"{module} x", "--smp", "2", "--timeout", "10")
    qemu = subprocess.run(["qemu-system-x86_64", "-accel", "kvm", "-nodefaults", "-nographic", "-serial", "stdio",
                           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-smp", "2",
                           "-kernel", KERNEL, "-append", "a=1 b", "-initrd", f"{module} x"],
                          cwd=ROOT, capture_output=True, timeout=60)
    # QEMU's serial carries the firmware's banner first; the kernel's output starts at its first line.
    qemu_kernel_output = qemu.stdout[qemu.stdout.index(b"multiboot: "):]
    assert ours.stdout == qemu_kernel_output
    assert ours.returncode == qemu.returncode == KERNEL_STATUS
