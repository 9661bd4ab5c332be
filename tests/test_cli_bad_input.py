"""Every malformed argument or file: exactly one line on stderr, the documented exit
status, no traceback, nothing on stdout (a real `python -m vmm` process each)."""
import concurrent.futures
import struct
import subprocess
import sys

import pytest

from conftest import GUESTS, ROOT

pytestmark = pytest.mark.kvm

HELLO = str(GUESTS / "hello_long.bin")
BAD_INPUT, NO_KVM = 2, 10
MULTIBOOT_MAGIC, MULTIBOOT_AOUT_KLUDGE = 0x1BADB002, 1 << 16


def elf64_header(phoff, phnum):
    """An ELF64 executable header for x86-64 with the given program header table."""
    return (b"\x7fELF\x02\x01\x01" + bytes(9)
            + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x100000, phoff, 0, 0, 64, 56, phnum, 64, 0, 0))


def elf64_with(image, shoff=None, shnum=None, symtab_link=None):
    """A copy of an ELF64 file with its section header offset or count, or its symbol
    table's sh_link, replaced."""
    image = bytearray(image)
    if shoff is not None:
        struct.pack_into("<Q", image, 40, shoff)
    if shnum is not None:
        struct.pack_into("<H", image, 60, shnum)
    if symtab_link is not None:
        (table_at,) = struct.unpack_from("<Q", image, 40)
        (count,) = struct.unpack_from("<H", image, 60)
        for header in range(table_at, table_at + 64 * count, 64):
            if struct.unpack_from("<I", image, header + 4)[0] == 2:   # SHT_SYMTAB
                struct.pack_into("<I", image, header + 40, symtab_link)
    return bytes(image)


ELF_GUEST = (GUESTS / "hello_elf64.elf").read_bytes()


def multiboot_header(flags, checksum=None, addresses=()):
    checksum = -(MULTIBOOT_MAGIC + flags) & 0xFFFFFFFF if checksum is None else checksum
    return struct.pack(f"<III{len(addresses)}I", MULTIBOOT_MAGIC, flags, checksum, *addresses) + bytes(64)


FILES = {
    "empty.bin": b"",
    "elf_magic_only.bin": b"\x7fELF\x02\x01\x01",
    "elf_phoff_past_end.bin": elf64_header(0xFFFFFF, 5),
    "multiboot_bad_checksum.bin": multiboot_header(MULTIBOOT_AOUT_KLUDGE, checksum=0),
    "multiboot_header_below_load.bin": multiboot_header(MULTIBOOT_AOUT_KLUDGE,
                                                        addresses=(0, 0xFFF00000, 0xFFF00000, 0xFFF00000, 0xFFF00000)),
    "not_json.jsonl": b"{not json\n",
    "elf_stripped.elf": elf64_with(ELF_GUEST, shnum=0),
    "elf_shoff_past_end.elf": elf64_with(ELF_GUEST, shoff=0xFFFFFF),
    "elf_symtab_bad_link.elf": elf64_with(ELF_GUEST, symtab_link=0xFFFF),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad-input")
    for name, data in FILES.items():
        (directory / name).write_bytes(data)
    return directory


# (arguments, with {dir} for the directory of FILES; exit status; text the line must contain)
CASES = [
    ([], BAD_INPUT, "the following arguments are required: COMMAND"),
    (["bogus"], BAD_INPUT, "invalid choice: 'bogus'"),
    (["run"], BAD_INPUT, "the following arguments are required: image"),
    (["run", "/nonexistent.bin"], BAD_INPUT, "/nonexistent.bin: no such file"),
    (["run", "{dir}"], BAD_INPUT, "is a directory"),
    (["run", "{dir}/empty.bin"], BAD_INPUT, "the image is empty"),
    (["run", HELLO, "--mode", "bogus"], BAD_INPUT, "argument --mode: invalid choice"),
    (["run", HELLO, "--mem", "0"], BAD_INPUT, "size must be positive"),
    (["run", HELLO, "--mem", "abc"], BAD_INPUT, "invalid size 'abc'"),
    (["run", HELLO, "--mem", "5G"], BAD_INPUT, "between 4 KiB and 3 GiB"),
    (["run", HELLO, "--mem", "4097"], BAD_INPUT, "must be a multiple of 4 KiB"),
    (["run", HELLO, "--mem", "4K"], BAD_INPUT, "load address 0x100000 is outside guest memory"),
    (["run", HELLO, "--load-addr", "abc"], BAD_INPUT, "invalid address 'abc'"),
    (["run", HELLO, "--load-addr", "-1"], BAD_INPUT, "is out of range"),
    (["run", HELLO, "--load-addr", "0x10000000000000000"], BAD_INPUT, "is out of range"),
    (["run", HELLO, "--load-addr", "0x7fffff0"], BAD_INPUT, "runs past the end of guest memory"),
    (["run", HELLO, "--load-addr", "0x1000"], BAD_INPUT, "overlaps the VMM's GDT and page tables"),
    (["run", HELLO, "--entry", "0x80000000"], BAD_INPUT, "entry point 0x80000000 is outside guest memory"),
    (["run", HELLO, "--timeout", "0"], BAD_INPUT, "timeout must be positive"),
    (["run", HELLO, "--timeout", "-1"], BAD_INPUT, "timeout must be positive"),
    (["run", HELLO, "--timeout", "nan"], BAD_INPUT, "timeout must be positive"),
    (["run", HELLO, "--timeout", "inf"], BAD_INPUT, "timeout must be positive"),
    (["run", HELLO, "--timeout", "abc"], BAD_INPUT, "invalid timeout 'abc'"),
    (["run", HELLO, "--serial", "bogus"], BAD_INPUT, "invalid serial backend 'bogus'"),
    (["run", HELLO, "--serial", "file:"], BAD_INPUT, "invalid serial backend 'file:'"),
    (["run", HELLO, "--serial", "file:/nonexistent/dir/out"], BAD_INPUT, "cannot write serial output"),
    (["run", HELLO, "--serial-input", "/nonexistent"], BAD_INPUT, "cannot read serial input"),
    (["run", HELLO, "--format", "elf"], BAD_INPUT, "not an ELF file"),
    (["run", HELLO, "--format", "bogus"], BAD_INPUT, "argument --format: invalid choice"),
    (["run", "{dir}/elf_magic_only.bin", "--format", "elf"], BAD_INPUT, "elf_magic_only.bin"),
    (["run", "{dir}/elf_phoff_past_end.bin"], BAD_INPUT, "run past the end of the 64-byte file"),
    (["run", "{dir}/multiboot_bad_checksum.bin", "--format", "multiboot"], BAD_INPUT, "bad checksum"),
    (["run", "{dir}/multiboot_header_below_load.bin"], BAD_INPUT, "is below load_addr"),
    (["run", HELLO, "--smp", "0"], BAD_INPUT, "vCPU count must be between 1 and 64"),
    (["run", HELLO, "--smp", "65"], BAD_INPUT, "vCPU count must be between 1 and 64"),
    (["run", HELLO, "--smp", "2"], BAD_INPUT, "--smp needs --machine pc"),
    (["run", HELLO, "--machine", "bogus"], BAD_INPUT, "argument --machine: invalid choice"),
    (["run", HELLO, "--watch", "bogus"], BAD_INPUT, "expected GPA, GPA-END or GPA+LEN"),
    (["run", HELLO, "--watch", "0x100001"], BAD_INPUT, "is not page aligned"),
    (["run", HELLO, "--watch", "0x100000000"], BAD_INPUT, "is outside guest memory"),
    (["run", HELLO, "--trace", "{dir}/trace.jsonl"], BAD_INPUT, "--trace needs at least one --watch range"),
    (["run", HELLO, "--watch-symbol", "main"], BAD_INPUT, "--watch-symbol needs an ELF image"),
    (["run", str(GUESTS / "hello_elf64.elf"), "--watch-symbol", "nope"], BAD_INPUT, "no symbol 'nope'"),
    (["run", "{dir}/elf_stripped.elf", "--watch-symbol", "main64"], BAD_INPUT, "no section headers"),
    (["run", "{dir}/elf_shoff_past_end.elf", "--watch-symbol", "main64"], BAD_INPUT, "section headers at offset"),
    (["run", "{dir}/elf_symtab_bad_link.elf", "--watch-symbol", "main64"], BAD_INPUT, "malformed symbol table"),
    (["run", HELLO, "--watch", "0x100000", "--trace", "/nonexistent/t.jsonl"], BAD_INPUT, "cannot write the trace"),
    (["run", HELLO, "--max-instructions", "0"], BAD_INPUT, "must be at least 1"),
    (["run", HELLO, "--backend", "bogus"], BAD_INPUT, "argument --backend: invalid choice"),
    (["run", HELLO, "--stats-json", "/nonexistent/stats.json"], BAD_INPUT, "cannot write statistics"),
    (["run", HELLO, "--initrd", "{dir}/empty.bin"], BAD_INPUT, "--initrd needs a multiboot or Linux kernel, not a flat image"),
    (["run", HELLO, "--append", "console=ttyS0"], BAD_INPUT, "--append needs a multiboot or Linux kernel, not a flat image"),
    (["trace", "show", "{dir}/empty.bin"], BAD_INPUT, "empty.bin: empty, not a trace file"),
    (["run", HELLO, "--bogus-option"], BAD_INPUT, "unrecognized arguments: --bogus-option"),
    (["trace"], BAD_INPUT, "the following arguments are required"),
    (["trace", "show", "/nonexistent"], BAD_INPUT, "/nonexistent: no such file"),
    (["trace", "show", "{dir}/not_json.jsonl"], BAD_INPUT, "not_json.jsonl:1: not a JSON record"),
    (["doctor", "extra"], BAD_INPUT, "unrecognized arguments: extra"),
]


@pytest.fixture(scope="module")
def results(files):
    """Every case's finished process, run a few at a time (start-up dominates each)."""
    def run(args):
        args = [arg.replace("{dir}", str(files)) for arg in args]
        return subprocess.run([sys.executable, "-m", "vmm", *args], cwd=ROOT, capture_output=True, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(run, (args for args, _, _ in CASES)))


@pytest.mark.parametrize("case", range(len(CASES)), ids=[" ".join(args) or "(none)" for args, _, _ in CASES])
def test_bad_input_is_one_line_with_its_status(results, case):
    _, status, text = CASES[case]
    result = results[case]
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == status, f"expected exit status {status}, got {result.returncode}: {stderr!r}"
    assert "Traceback" not in stderr, f"expected no traceback, got {stderr}"
    assert stderr.startswith("vmm: ") and stderr.count("\n") == 1, f"expected exactly one line, got {stderr!r}"
    assert text in stderr, f"expected {text!r} in {stderr!r}"
    assert result.stdout == b"", f"expected nothing on stdout, got {result.stdout[:200]!r}"
