"""The ELF loader: a freestanding C guest boots from its ELF64 file; malformed files
are refused with one line and the bad-input status, never a traceback."""
import random
import struct
import subprocess
import sys

import pytest

from conftest import GUESTS, ROOT
from test_cli import assert_one_line_error, vmm
from vmm.errors import EXIT_BAD_INPUT, BadInput
from vmm.loaders import elf, multiboot

pytestmark = pytest.mark.kvm

HELLO_ELF64 = GUESTS / "hello_elf64.elf"
HELLO_OUTPUT = (b"Hello from freestanding C (ELF64)!\n"
                b"bss: zeroed\n"
                b"fib(90) = 2880067194370816120\n"
                b"crc32(\"123456789\") = 0xcbf43926\n")
HELLO_STATUS = (0x2A << 1) | 1

# ELF64 header field offsets.
E_TYPE, E_MACHINE, E_ENTRY, E_PHOFF, E_PHENTSIZE, E_PHNUM = 16, 18, 24, 32, 54, 56
# ELF64 program header field offsets.
P_TYPE, P_OFFSET, P_PADDR, P_FILESZ, P_MEMSZ = 0, 8, 24, 32, 40


def _load_headers(image):
    """File offsets of the PT_LOAD program headers of an ELF64 image."""
    phoff, = struct.unpack_from("<Q", image, E_PHOFF)
    phnum, = struct.unpack_from("<H", image, E_PHNUM)
    return [phoff + 56 * i for i in range(phnum) if struct.unpack_from("<I", image, phoff + 56 * i)[0] == 1]


def _patched(fmt, offset, value):
    image = bytearray(HELLO_ELF64.read_bytes())
    struct.pack_into(fmt, image, offset, value)
    return bytes(image)


def _segment_patched(index, field, fmt, value):
    image = HELLO_ELF64.read_bytes()
    return _patched(fmt, _load_headers(image)[index] + field, value)


def test_elf64_c_guest_boots_with_exact_output_and_status():
    result = vmm("run", str(HELLO_ELF64), "--timeout", "10")
    assert result.stdout == HELLO_OUTPUT, result.stderr.decode()
    assert result.returncode == HELLO_STATUS, f"expected {HELLO_STATUS}, got {result.returncode}: {result.stderr}"
    assert result.stderr == b""


def test_format_elf_loads_a_multiboot_kernel_as_plain_elf32():
    """Without the multiboot hand-over (EAX magic), the kernel notices and exits with 1."""
    result = vmm("run", str(GUESTS / "multiboot_long.elf"), "--format", "elf", "--timeout", "10")
    assert result.stdout == b"multiboot: bad boot magic in EAX\n"
    assert result.returncode == (1 << 1) | 1


MALFORMED = {
    "header-truncated": (lambda: HELLO_ELF64.read_bytes()[:40], "truncated ELF header"),
    "body-truncated": (lambda: HELLO_ELF64.read_bytes()[:0x1100], "truncated"),
    "wrong-machine": (lambda: _patched("<H", E_MACHINE, 40), "machine 40, expected 62 (EM_X86_64)"),
    "elf32-wrong-machine": (lambda: _patched("<H", E_MACHINE, 3), "machine 3"),
    "bad-class": (lambda: _patched("<B", 4, 7), "unknown ELF class 7"),
    "big-endian": (lambda: _patched("<B", 5, 2), "not little-endian"),
    "shared-object": (lambda: _patched("<H", E_TYPE, 3), "not a static executable"),
    "phdrs-past-end": (lambda: _patched("<Q", E_PHOFF, 0xFFFF0), "program headers"),
    "bad-phentsize": (lambda: _patched("<H", E_PHENTSIZE, 32), "program header size 32"),
    "no-phdrs": (lambda: _patched("<H", E_PHNUM, 0), "no program headers"),
    "segment-outside-memory": (lambda: _segment_patched(1, P_PADDR, "<Q", 0xFFFFF000), "outside guest memory"),
    "segment-data-past-end": (lambda: _segment_patched(1, P_OFFSET, "<Q", 0x7FFFFFFF), "truncated"),
    "filesz-above-memsz": (lambda: _segment_patched(1, P_FILESZ, "<Q", 0x100000), "exceeds its memory size"),
    "overlapping-segments": (lambda: _segment_patched(2, P_PADDR, "<Q", 0x201000), "overlap"),
    "over-vmm-page-tables": (lambda: _segment_patched(0, P_PADDR, "<Q", 0x2000), "VMM's GDT and page tables"),
    "entry-outside-segments": (lambda: _patched("<Q", E_ENTRY, 0x7000000), "entry point 0x7000000"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_elf_is_one_line_bad_input(case, tmp_path):
    make, text = MALFORMED[case]
    path = tmp_path / f"{case}.elf"
    path.write_bytes(make())
    result = vmm("run", str(path), "--format", "auto", "--mem", "64M")
    assert_one_line_error(result, EXIT_BAD_INPUT, text)
    assert result.stdout == b""


def test_fuzzed_headers_raise_only_bad_input():
    """Random bytes over every header the loaders read: each file parses or is refused, nothing else."""
    rng = random.Random(20121)
    sources = [HELLO_ELF64.read_bytes(), (GUESTS / "multiboot_long.elf").read_bytes()]
    for _ in range(3000):
        image = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 6)):
            image[rng.randrange(0x140)] = rng.randrange(256)
        if rng.random() < 0.2:
            image = image[:rng.randrange(len(image))]
        try:
            elf.parse(bytes(image), 64 << 20)
        except BadInput:
            pass
        try:
            multiboot.prepare(bytes(image), 64 << 20, "k", "k", "", [], [])
        except BadInput:
            pass


def test_symbols_are_found_at_their_addresses():
    image = HELLO_ELF64.read_bytes()
    elf.parse(image, 64 << 20)
    # nm -S: main64 at 0x2010e0 (0xbb bytes), stack at 0x203080 (0x4000 bytes)
    assert (elf.find_symbol(image, "main64"), elf.find_symbol(image, "stack")) == ((0x2010E0, 0xBB), (0x203080, 0x4000))
    with pytest.raises(BadInput, match="no symbol 'main'"):   # a prefix of main64 is not main64
        elf.find_symbol(image, "main")


def test_fuzzed_section_headers_and_symbols_raise_only_bad_input():
    """Random bytes over the section headers, the symbol table and its strings: each lookup
    finds a symbol or is refused, nothing else."""
    rng = random.Random(2026)
    source = HELLO_ELF64.read_bytes()
    (shoff,) = struct.unpack_from("<Q", source, 40)
    regions = [(40, 64), (shoff, len(source))] + [(0, len(source))]
    for _ in range(3000):
        image = bytearray(source)
        for _ in range(rng.randint(1, 8)):
            start, end = rng.choice(regions)
            image[rng.randrange(start, end)] = rng.randrange(256)
        if rng.random() < 0.1:
            image = image[:rng.randrange(64, len(image))]
        try:
            elf.parse(bytes(image), 64 << 20)
        except BadInput:
            continue
        try:
            elf.find_symbol(bytes(image), rng.choice(["main64", "puts", "stack", "x" * 40]))
        except BadInput:
            pass


def test_fuzzed_files_through_the_cli_never_trace_back(tmp_path):
    rng = random.Random(2012)
    source = HELLO_ELF64.read_bytes()
    processes = []
    for index in range(8):
        image = bytearray(source)
        for _ in range(4):
            image[rng.randrange(0x40, 0x120)] = rng.randrange(256)
        path = tmp_path / f"fuzz{index}.elf"
        path.write_bytes(image)
        processes.append(subprocess.Popen([sys.executable, "-m", "vmm", "run", str(path), "--format", "elf",
                                           "--timeout", "3", "--serial", "none"],
                                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for process in processes:
        _, stderr = process.communicate(timeout=30)
        text = stderr.decode()
        assert "Traceback" not in text and "internal error" not in text, text
        if process.returncode == EXIT_BAD_INPUT:
            assert text.count("\n") == 1 and text.startswith("vmm: "), text
