"""Linux kernels: the bzImage boot protocol and the PVH entry, checked field by field on
synthetic images, then Debian's own kernel booted with a busybox initramfs (see
linux_assets.py for where they come from)."""
import io
import shutil
import struct
import subprocess
import time

import pytest

from linux_assets import AssetUnavailable, Initramfs, busybox, stock_kernel
from test_cli import assert_one_line_error, vmm
from vmm import loaders
from vmm.errors import EXIT_BAD_INPUT, EXIT_GUEST_PANIC, EXIT_REBOOT, BadInput
from vmm.loaders import elf, linux, platform, pvh
from vmm.machine import Machine
from vmm.machine.outcome import Outcome

LOAD = 0x1000000


def synthetic_bzimage(version=0x20F, setup_sects=4, kernel=b"\x90" * 0x2000, xloadflags=linux.XLF_KERNEL_64,
                      init_size=0x100000, pref_address=LOAD, syssize=None, boot_flag=0xAA55, jump_to=0x26C,
                      loadflags=linux.LOADED_HIGH, payload=(0, 0x100)):
    """A bzImage with a protocol `version` setup header and `kernel` as its protected-mode part."""
    setup = bytearray((setup_sects + 1) * 512)
    struct.pack_into("<B", setup, 0x1F1, setup_sects)
    struct.pack_into("<I", setup, 0x1F4, (len(kernel) + 15) // 16 if syssize is None else syssize)
    struct.pack_into("<H", setup, 0x1FE, boot_flag)
    setup[0x200:0x202] = bytes([0xEB, jump_to - 0x202])
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = loadflags
    struct.pack_into("<I", setup, 0x214, 0x100000)
    struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)
    struct.pack_into("<IBB", setup, 0x230, 0x200000, 1, 21)
    struct.pack_into("<HI", setup, 0x236, xloadflags, 2047)
    struct.pack_into("<II", setup, 0x248, *payload)
    struct.pack_into("<Q", setup, 0x258, pref_address)
    struct.pack_into("<I", setup, 0x260, init_size)
    return bytes(setup) + kernel


# -- the boot protocol on synthetic images ------------------------------------------

def test_zero_page_command_line_initrd_and_64bit_entry():
    image = synthetic_bzimage()
    initrd = b"\x07" * 5000
    writes, start = linux.prepare(image, 64 << 20, "k", "console=ttyS0 quiet", initrd, rsdp=0xF0000)
    placed = dict(writes)
    assert (start.mode, start.entry, start.regs) == ("long", LOAD + 0x200, {"rsi": linux.ZERO_PAGE})
    assert placed[LOAD] == image[5 * 512:]
    assert placed[linux.CMDLINE_ADDR] == b"console=ttyS0 quiet\0"
    zero_page = placed[linux.ZERO_PAGE]
    # The setup header is the file's, with the loader's fields (0x210-0x21f, 0x228) filled in.
    assert zero_page[0x1F1:0x210] == image[0x1F1:0x210] and zero_page[0x22C:0x26C] == image[0x22C:0x26C]
    assert zero_page[0x210] == 0xFF                                                    # type_of_loader
    cmdline, = struct.unpack_from("<I", zero_page, 0x228)
    ramdisk, ramdisk_size = struct.unpack_from("<II", zero_page, 0x218)
    assert cmdline == linux.CMDLINE_ADDR
    assert (ramdisk_size, ramdisk % 4096, ramdisk + ramdisk_size <= 64 << 20) == (5000, 0, True)
    assert ramdisk >= LOAD + 0x100000, "the initrd must miss the kernel's init_size buffer"
    assert placed[ramdisk] == initrd
    assert struct.unpack_from("<Q", zero_page, 0x70)[0] == 0xF0000                    # acpi_rsdp_addr
    entries = [struct.unpack_from("<QQI", zero_page, 0x2D0 + 20 * index) for index in range(zero_page[0x1E8])]
    assert entries == [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2), (0x100000, (64 << 20) - 0x100000, 1)]


def test_kernel_without_a_64bit_entry_starts_at_its_32bit_entry():
    writes, start = linux.prepare(synthetic_bzimage(xloadflags=0), 64 << 20, "k", "", b"")
    assert (start.mode, start.entry, start.regs) == ("protected", LOAD, {"rsi": linux.ZERO_PAGE})
    zero_page = dict(writes)[linux.ZERO_PAGE]
    assert struct.unpack_from("<II", zero_page, 0x218) == (0, 0), "no initrd"
    assert struct.unpack_from("<I", zero_page, 0x214)[0] == LOAD, "code32_start says where it is"


CORRUPT = {
    "no magic": (lambda: b"\0" * 0x1000, "not a Linux bzImage"),
    "old protocol": (lambda: synthetic_bzimage(version=0x204), "too old"),
    "boot flag": (lambda: synthetic_bzimage(boot_flag=0x1234), "boot_flag 0x1234"),
    "header jump": (lambda: synthetic_bzimage(jump_to=0x210), "the jump at 0x200"),
    "setup sects": (lambda: synthetic_bzimage(setup_sects=200), "setup_sects 200"),
    "truncated payload": (lambda: synthetic_bzimage(syssize=0x100000), "truncated"),
    "zero syssize": (lambda: synthetic_bzimage(syssize=0), "syssize is 0"),
    "payload past kernel": (lambda: synthetic_bzimage(payload=(0x100, 0x10000)), "compressed payload"),
    "zImage": (lambda: synthetic_bzimage(loadflags=0), "zImage"),
    "init size": (lambda: synthetic_bzimage(init_size=0x10), "init_size"),
    "load address": (lambda: synthetic_bzimage(pref_address=0x1234), "would load at 0x1234"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_setup_header_is_bad_input(case):
    make, text = CORRUPT[case]
    with pytest.raises(BadInput, match=text):
        linux.prepare(make(), 64 << 20, "k", "", b"")


def test_kernel_command_line_and_memory_limits():
    with pytest.raises(BadInput, match="at most 2047"):
        linux.prepare(synthetic_bzimage(), 64 << 20, "k", "x" * 3000, b"")
    with pytest.raises(BadInput, match="needs memory up to"):
        linux.prepare(synthetic_bzimage(init_size=0x8000000), 64 << 20, "k", "", b"")
    with pytest.raises(BadInput, match="initrd of"):
        linux.prepare(synthetic_bzimage(), 32 << 20, "k", "", b"\1" * (16 << 20))


def test_initrd_stays_below_initrd_addr_max_with_3_gib_of_ram():
    writes, _ = linux.prepare(synthetic_bzimage(), 3 << 30, "k", "", b"\1" * 10000)
    ramdisk, size = struct.unpack_from("<II", dict(writes)[linux.ZERO_PAGE], 0x218)
    assert ramdisk + size <= 0x80000000 and ramdisk > 0x7FF00000, f"initrd at {ramdisk:#x}"


def test_a_bzimage_is_never_taken_for_a_flat_image():
    assert loaders.detect(synthetic_bzimage()) == "linux"
    assert loaders.detect(synthetic_bzimage(boot_flag=0)) == "linux"   # then refused as corrupt


@pytest.mark.kvm
@pytest.mark.parametrize("case, text", [
    ("boot flag", "boot_flag"), ("truncated payload", "truncated"), ("initrd larger than RAM", "does not fit"),
])
def test_corrupt_bzimage_on_the_command_line_is_one_line_and_status_2(case, text, tmp_path):
    kernel, initrd = tmp_path / "bzImage", tmp_path / "initrd"
    initrd.write_bytes(b"\1" * (40 << 20))
    if case == "initrd larger than RAM":
        kernel.write_bytes(synthetic_bzimage())
        result = vmm("run", str(kernel), "--initrd", str(initrd), "--mem", "32M")
    else:
        kernel.write_bytes(CORRUPT[case][0]())
        result = vmm("run", str(kernel))
    assert_one_line_error(result, EXIT_BAD_INPUT, text)


# -- Debian's kernel ---------------------------------------------------------------

@pytest.fixture(scope="session")
def kernel():
    try:
        return stock_kernel()
    except AssetUnavailable as error:
        pytest.skip(f"Debian's kernel package is not available: {error}")


@pytest.fixture(scope="session")
def busybox_binary():
    try:
        return busybox()
    except AssetUnavailable as error:
        pytest.skip(f"busybox-static is not available: {error}")


def kernel_code_rate():
    """Instructions per second a vCPU runs at CPL 0 (a 32-bit `dec; jnz` loop): KVM on VT-x or
    AMD-V runs it at hardware speed; a host that emulates guest kernel code does not."""
    count = 200_000
    loop = b"\xB9" + struct.pack("<I", count) + b"\x49\x75\xFD\xF4"   # mov $count,%ecx; 1: dec; jnz 1b; hlt
    with Machine(mem_size=4 << 20, serial_output=io.BytesIO()) as machine:
        machine.load(loop, mode="protected")
        start = time.perf_counter()
        machine.run(timeout=30)
        return 2 * count / (time.perf_counter() - start)


@pytest.fixture(scope="session")
def full_speed_host():
    rate = kernel_code_rate()
    if rate < 50e6:
        pytest.skip(f"this host's KVM runs guest kernel code at {rate / 1e6:.1f}M instructions/s (an instruction "
                    f"emulator, e.g. kvm_pvm without VT-x/AMD-V; hardware runs thousands of M/s): a stock kernel "
                    f"needs many minutes to reach /init there and stops at instructions the emulator lacks "
                    f"(int3, popcnt, xsave, cmpxchg16b); these boots need hardware virtualization "
                    f"(`make linux-nested` runs them on the kvm-amd of an emulated AMD-V machine)")


class SerialMarker(io.RawIOBase):
    """Serial output that stops the machine once `marker` has been printed."""

    def __init__(self, marker):
        super().__init__()
        self.data = bytearray()
        self.marker = marker
        self.machine = None

    def writable(self):
        return True

    def write(self, data):
        self.data += data
        if self.marker in self.data and self.machine is not None:
            self.machine.stop(Outcome("marker", 0, f"the guest printed {self.marker!r}"))
        return len(data)


def boot_until(image, marker, cmdline, initrd=b"", timeout=300, cpus=1):
    """Boot `image` until the serial output holds `marker`; returns (outcome, output)."""
    output = SerialMarker(marker)
    with Machine(mem_size=256 << 20, serial_output=output, machine_type="pc", vcpus=cpus) as machine:
        output.machine = machine
        loaders.boot(machine, image, "auto", "kernel", cmdline=cmdline, initrd=initrd)
        outcome = machine.run(timeout=timeout)
    return outcome, bytes(output.data)


@pytest.mark.kvm
def test_debian_bzimage_is_detected_and_its_decompressor_reads_the_zero_page(kernel):
    """The 64-bit entry point runs and finds the command line through the zero page: the
    decompressor reports the option it parsed from it (on the serial port earlyprintk names)."""
    image = kernel.vmlinuz.read_bytes()
    assert loaders.detect(image) == "linux"
    outcome, output = boot_until(image, b"KASLR disabled: 'nokaslr' on cmdline.",
                                 "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr", timeout=120)
    assert outcome.kind == "marker", f"{outcome.message}; serial output: {output[-2000:]!r}"


@pytest.mark.kvm
def test_debian_vmlinux_boots_through_its_pvh_entry_and_finds_the_firmware_tables(kernel):
    """The kernel reads hvm_start_info (command line, e820 map, RSDP, initrd) and the ACPI
    tables, and finds one CPU per vCPU in the MADT."""
    image = kernel.vmlinux().read_bytes()
    assert loaders.detect(image) == "pvh"
    command = "console=ttyS0 earlyprintk=serial,ttyS0,115200 acpi.debug_level=0"
    outcome, output = boot_until(image, b"hotplug CPUs", command, b"\0" * 4096, cpus=4)
    text = output.decode(errors="replace")
    assert outcome.kind == "marker", f"{outcome.message}; serial output: {text[-3000:]}"
    for line in (f"Command line: {command}", "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
                 "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable", "Hypervisor detected: KVM",
                 "ACPI: RSDP 0x00000000000F0000", "ACPI: FACP", "ACPI: DSDT", "ACPI: FACS", "ACPI: APIC",
                 "ACPI: PM-Timer IO Port: 0x608", "IOAPIC[0]: apic_id 0", "RAMDISK: [mem",
                 "ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 high level)",
                 "smpboot: Allowing 4 CPUs, 0 hotplug CPUs"):
        assert line in text, f"expected {line!r} in the kernel's output:\n{text[-3000:]}"


def linux_initramfs(busybox_binary, commands, kernel=None, modules=()):
    image = Initramfs()
    image.add_busybox(busybox_binary)
    for name in modules:
        path = kernel.module(name)
        image.add_file(f"/lib/modules/{path.name}", path.read_bytes())
    image.set_init(commands)
    return image


def run_linux(kernel, initrd_path, *args, append="console=ttyS0 quiet", timeout=120):
    return vmm("run", str(kernel.vmlinuz), "--initrd", str(initrd_path), "--append", append,
               "--timeout", str(timeout), *args, timeout=timeout + 30)


@pytest.mark.kvm
@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_boot_to_init_and_power_off(cpus, kernel, busybox_binary, full_speed_host, tmp_path):
    initrd = linux_initramfs(busybox_binary, 'echo "init: $(nproc) CPUs online"').write(tmp_path / "initrd.cpio")
    result = run_linux(kernel, initrd, "--smp", str(cpus))
    assert f"init: {cpus} CPUs online".encode() in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0, f"expected status 0 (ACPI power-off), got {result.returncode}: {result.stderr!r}"


@pytest.mark.kvm
def test_serial_input_reaches_a_shell(kernel, busybox_binary, full_speed_host, tmp_path):
    initrd = linux_initramfs(busybox_binary, "setsid cttyhack sh").write(tmp_path / "initrd.cpio")
    commands = tmp_path / "input.txt"
    commands.write_bytes(b"echo shell says $((6 * 7))\npoweroff -f\n")
    result = run_linux(kernel, initrd, "--serial-input", str(commands))
    assert b"shell says 42" in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0, result.stderr


@pytest.mark.kvm
def test_reboot_ends_the_run_with_its_status(kernel, busybox_binary, full_speed_host, tmp_path):
    initrd = linux_initramfs(busybox_binary, "echo rebooting; reboot -f").write(tmp_path / "initrd.cpio")
    result = run_linux(kernel, initrd)
    assert b"rebooting" in result.stdout
    assert result.returncode == EXIT_REBOOT, f"expected {EXIT_REBOOT}, got {result.returncode}: {result.stderr!r}"


@pytest.mark.kvm
def test_kernel_panic_ends_the_run_with_its_status(kernel, busybox_binary, full_speed_host, tmp_path):
    """With Debian's pvpanic driver loaded, a panic reaches the pvpanic device the DSDT declares."""
    initrd = linux_initramfs(busybox_binary, "insmod /lib/modules/pvpanic.ko; insmod /lib/modules/pvpanic-mmio.ko; "
                             "echo c > /proc/sysrq-trigger", kernel, ("pvpanic", "pvpanic-mmio"))
    result = run_linux(kernel, initrd.write(tmp_path / "initrd.cpio"))
    assert b"Kernel panic" in result.stdout, result.stdout[-3000:]
    assert result.returncode == EXIT_GUEST_PANIC, f"expected {EXIT_GUEST_PANIC}, got {result.returncode}"


def test_pvh_start_information_for_a_synthetic_kernel():
    entry_note = struct.pack("<III", 4, 4, pvh.XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + struct.pack("<I", 0x1000010)
    image = _elf64_with_note(entry_note)
    assert loaders.detect(image) == "pvh"
    writes, start = pvh.prepare(image, 64 << 20, "k", "root=/dev/ram0", b"\5" * 3000, [], rsdp=0xF0000)
    placed = {gpa: data for gpa, data in writes if not isinstance(data, elf.Segment)}
    assert (start.mode, start.entry, start.regs) == ("protected", 0x1000010, {"rbx": pvh.START_INFO_ADDR})
    info = placed[pvh.START_INFO_ADDR]
    (magic, version, _, modules, modlist, cmdline, rsdp, memmap, entries, _) = pvh.START_INFO.unpack_from(info)
    assert (magic, version, modules, rsdp, entries) == (0x336EC578, 1, 1, 0xF0000, 4)
    assert placed[cmdline] == b"root=/dev/ram0\0"
    initrd_at, initrd_size, _, _ = pvh.MODLIST_ENTRY.unpack_from(info, modlist - pvh.START_INFO_ADDR)
    assert (initrd_size, placed[initrd_at]) == (3000, b"\5" * 3000)
    first = pvh.MEMMAP_ENTRY.unpack_from(info, memmap - pvh.START_INFO_ADDR)
    assert first == (0, platform.LOW_MEMORY_END, platform.E820_RAM, 0)


def _elf64_with_note(note):
    """An ELF64 executable: one PT_LOAD at 16 MiB and one PT_NOTE holding `note`."""
    code_at, note_at = 0x1000, 0x2000
    header = bytearray(64)
    header[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHH", header, 16, 2, 62, 1, 0x1000000, 64, 0, 0, 64, 56, 2)
    phdrs = struct.pack("<IIQQQQQQ", 1, 5, code_at, 0x1000000, 0x1000000, 0x100, 0x100, 0x1000)
    phdrs += struct.pack("<IIQQQQQQ", 4, 4, note_at, 0, 0, len(note), len(note), 4)
    image = bytearray(note_at + len(note))
    image[:64] = header
    image[64:64 + len(phdrs)] = phdrs
    image[code_at:code_at + 0x100] = b"\x90" * 0x100
    image[note_at:] = note
    return bytes(image)


def test_malformed_pvh_note_is_bad_input():
    note = struct.pack("<III", 4, 400, pvh.XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + b"\0" * 4
    with pytest.raises(BadInput, match="malformed note"):
        pvh.prepare(_elf64_with_note(note), 64 << 20, "k", "", b"", [])


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio to read the archive back")
def test_initramfs_writer_makes_a_newc_archive_cpio_reads(tmp_path, busybox_binary):
    image = Initramfs()
    image.add_busybox(busybox_binary)
    image.add_program("/usr/bin/tool", busybox_binary)
    image.add_file("/etc/motd", b"hello\n")
    image.set_init("echo hi")
    archive = image.write(tmp_path / "initrd.cpio")
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=archive.read_bytes(), capture_output=True, check=True)
    names = listing.stdout.decode().split()
    for name in ("bin/busybox", "usr/bin/tool", "usr", "etc/motd", "init", "proc", "sys", "dev"):
        assert name in names, f"{name} missing from {names}"
