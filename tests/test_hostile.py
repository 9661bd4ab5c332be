"""Hostile guests: every value a guest steers (string I/O counts, MMIO addresses,
ucall pointers, floods of exits) ends in a classified outcome with bounded VMM
memory and nothing the guest sent lost."""
import io
import os
import struct
import subprocess
import sys
import time

import pytest

from conftest import GUESTS, ROOT
from vmm.devices.bus import MAX_COUNTED_ADDRESSES, OTHER_ADDRESSES
from vmm.devices.ucall import MAX_RECORDED

pytestmark = pytest.mark.kvm

# hostile_rep_string.s and hostile_ucall.s read their variant (and argument)
# from these quadwords, which the tests write after loading the image.
VARIANT = 0x100008
ARGUMENT = 0x100010
UNCLAIMED_PORT = 0x2000
RAM_4M = 4 << 20
MIB = 1 << 20


def load(machine, name, mode, variant=None, argument=None, **kwargs):
    """A machine with the guest loaded and its variant chosen; its COM1 output is vm.output."""
    output = io.BytesIO()
    vm = machine(serial_output=output, **kwargs)
    vm.output = output
    vm.load((GUESTS / f"{name}.bin").read_bytes(), mode=mode)
    if variant is not None:
        vm.memory.write(VARIANT, struct.pack("<Q", variant))
    if argument is not None:
        vm.memory.write(ARGUMENT, struct.pack("<Q", argument))
    return vm


def expect_outcome(outcome, kind, exit_status):
    assert (outcome.kind, outcome.exit_status) == (kind, exit_status), (
        f"expected {kind!r} with status {exit_status}, got {outcome.kind!r} with {outcome.exit_status}: "
        f"{outcome.message}")


def run_bounded(vm, timeout):
    """Run with a timeout and check the run ended within a second of it."""
    started = time.monotonic()
    outcome = vm.run(timeout=timeout)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + 1, f"expected the run to end within {timeout + 1} s, it took {elapsed:.2f} s"
    return outcome


# -- string I/O -----------------------------------------------------------------

def test_rep_insb_of_a_mebibyte_and_rep_outsb_deliver_every_byte(machine):
    vm = load(machine, "hostile_rep_string", "protected", variant=0, mem_size=RAM_4M)
    outcome = vm.run(timeout=20)
    expect_outcome(outcome, "halt", 0)
    assert vm.ports.unclaimed_reads == {UNCLAIMED_PORT: MIB}, (
        f"expected {MIB} unclaimed reads of port {UNCLAIMED_PORT:#x}, got {dict(vm.ports.unclaimed_reads)}")
    filled = vm.memory.read(0x200000, MIB)
    assert filled == b"\xff" * MIB, f"expected 1 MiB of 0xff at 0x200000, first other byte at {filled.find(0):#x}"
    neighbours = vm.memory.read(0x1FFFFF, 1) + vm.memory.read(0x300000, 1)
    assert neighbours == b"\0\0", f"expected the bytes around the buffer untouched, got {neighbours!r}"
    expected = vm.memory.read(0x100000, 4096)
    output = vm.output.getvalue()
    assert output == expected, f"expected the 4096 image bytes on COM1, got {len(output)} bytes that differ"


def test_rep_outsb_running_off_the_end_of_ram_is_stopped_by_the_timeout(machine):
    vm = load(machine, "hostile_rep_string", "protected", variant=1, mem_size=RAM_4M)
    outcome = run_bounded(vm, timeout=1.5)
    expect_outcome(outcome, "timeout", 124)
    output = vm.output.getvalue()
    assert len(output) == vm.serial.bytes_written, (
        f"expected all {vm.serial.bytes_written} transmitted bytes in the output, got {len(output)}")
    assert len(output) > 1000, f"expected the string to run well past RAM, got {len(output)} bytes"
    assert output[:16] == bytes(16), f"expected the last 16 bytes of RAM (zero) first, got {output[:16]!r}"
    assert output[16:] == b"\xff" * (len(output) - 16), "expected all-ones for every byte read past RAM"
    reads = vm.mmio.unclaimed_reads
    past_ram = sum(reads.values())
    # The timeout may stop the guest between a byte's MMIO read and its `out`.
    assert past_ram - (len(output) - 16) in (0, 1), (
        f"expected one unclaimed MMIO read per byte past RAM ({len(output) - 16}), got {past_ram}")
    assert len(reads) == min(past_ram, MAX_COUNTED_ADDRESSES + 1), (
        f"expected {min(past_ram, MAX_COUNTED_ADDRESSES + 1)} counted MMIO addresses, got {len(reads)}")
    if past_ram > MAX_COUNTED_ADDRESSES:
        assert reads[OTHER_ADDRESSES] == past_ram - MAX_COUNTED_ADDRESSES, (
            f"expected {past_ram - MAX_COUNTED_ADDRESSES} reads lumped together, got {reads[OTHER_ADDRESSES]}")


def test_rep_insb_running_off_the_end_of_ram_is_stopped_by_the_timeout(machine):
    vm = load(machine, "hostile_rep_string", "protected", variant=2, mem_size=RAM_4M)
    outcome = run_bounded(vm, timeout=1.5)
    expect_outcome(outcome, "timeout", 124)
    tail = vm.memory.read(RAM_4M - 16, 16)
    assert tail == b"\xff" * 16, f"expected the last 16 bytes of RAM filled with 0xff, got {tail!r}"
    writes = vm.mmio.unclaimed_writes
    assert len(writes) <= MAX_COUNTED_ADDRESSES + 1, (
        f"expected at most {MAX_COUNTED_ADDRESSES + 1} counted MMIO addresses, got {len(writes)}")
    assert RAM_4M in writes, f"expected the first write past RAM at {RAM_4M:#x} counted, got {list(writes)[:4]}"


def test_string_io_across_page_boundaries(run_guest):
    sent = bytes(range(0x41, 0x61))
    result = run_guest("hostile_page_cross", "protected", serial_input=sent).expect("halt", 0)
    assert result.output == sent, f"expected the 32 bytes echoed across the page boundary, got {result.output!r}"
    vm = result.machine
    assert vm.ports.unclaimed_writes == {0x2002: 0x801}, (
        f"expected 0x801 word writes to port 0x2002, got {dict(vm.ports.unclaimed_writes)}")
    assert vm.ports.unclaimed_reads == {0x2004: 0x401}, (
        f"expected 0x401 dword reads of port 0x2004, got {dict(vm.ports.unclaimed_reads)}")
    written = vm.memory.read(0x400FFD, 0x1004 + 2)
    expected = b"\0" + b"\xff" * 0x1004 + b"\0"
    assert written == expected, "expected exactly 0x401 dwords of 0xff at 0x400ffe and nothing around them"


# -- MMIO at the top of the address space ------------------------------------------

def test_mmio_at_the_top_of_the_32_bit_space(run_guest):
    result = run_guest("hostile_mmio_top", "protected").expect("test-exit", (0x10 << 1) | 1)
    vm = result.machine
    top = {0xFFFFFFFC: 1, 0xFFFFFFFE: 1, 0xFFFFFFFF: 1}
    assert dict(vm.mmio.unclaimed_reads) == top, f"expected reads {top}, got {dict(vm.mmio.unclaimed_reads)}"
    assert dict(vm.mmio.unclaimed_writes) == top, f"expected writes {top}, got {dict(vm.mmio.unclaimed_writes)}"


def test_mmio_at_the_top_of_the_physical_address_space(run_guest):
    result = run_guest("hostile_mmio_top_long", "long").expect("test-exit", (0x10 << 1) | 1)
    vm = result.machine
    leaf = next(entry for entry in vm.kvm.supported_cpuid() if entry["function"] == 0x80000008)
    last = (1 << (leaf["eax"] & 0xFF)) - 8
    assert dict(vm.mmio.unclaimed_reads) == {last: 1}, (
        f"expected one read at {last:#x}, got {dict(vm.mmio.unclaimed_reads)}")
    assert dict(vm.mmio.unclaimed_writes) == {last: 1}, (
        f"expected one write at {last:#x}, got {dict(vm.mmio.unclaimed_writes)}")


# -- ucall pointers ---------------------------------------------------------------

DEFAULT_RAM = 128 << 20


@pytest.mark.parametrize("address, message", [
    (0xFFFFFFF0, "malformed ucall: ucall structure at 0xfffffff0 is outside guest RAM"),
    (DEFAULT_RAM - 20, f"malformed ucall: ucall structure at {DEFAULT_RAM - 20:#x} is outside guest RAM"),
    (DEFAULT_RAM - 40, "malformed ucall: unknown ucall command 0"),
])
def test_ucall_structure_outside_ram(machine, address, message):
    vm = load(machine, "hostile_ucall", "long", variant=0, argument=address)
    outcome = vm.run(timeout=10)
    expect_outcome(outcome, "guest-assert", 8)
    assert outcome.message == message, f"expected {message!r}, got {outcome.message!r}"


@pytest.mark.parametrize("address, shown", [
    (1 << 40, "<message address 0x10000000000 outside guest RAM>"),
    (0xFFFFFFFFFFFFFFFF, "<message address 0xffffffffffffffff outside guest RAM>"),
    (DEFAULT_RAM - 3, "abc"),
])
def test_ucall_assert_message_outside_or_at_the_end_of_ram(machine, address, shown):
    vm = load(machine, "hostile_ucall", "long", variant=1, argument=address)
    if address < DEFAULT_RAM:
        vm.memory.write(address, b"abc")  # no NUL before the end of RAM
    outcome = vm.run(timeout=10)
    expect_outcome(outcome, "guest-assert", 8)
    expected = f"guest assertion failed at line 1: {shown} (expected 0x0, got 0x0)"
    assert outcome.message == expected, f"expected {expected!r}, got {outcome.message!r}"


def test_ucall_narrow_write_is_refused(machine):
    vm = load(machine, "hostile_ucall", "long", variant=2)
    outcome = vm.run(timeout=10)
    expect_outcome(outcome, "guest-assert", 8)
    expected = "malformed ucall: ucall write of 2 bytes at port offset 0"
    assert outcome.message == expected, f"expected {expected!r}, got {outcome.message!r}"


def test_ucall_report_flood_keeps_a_bounded_record(machine):
    vm = load(machine, "hostile_ucall", "long", variant=3)
    outcome = vm.run(timeout=60)
    expect_outcome(outcome, "done", 0)
    assert len(vm.ucalls.reports) == MAX_RECORDED, (
        f"expected the first {MAX_RECORDED} of 70000 reports kept, got {len(vm.ucalls.reports)}")


# -- port flood -------------------------------------------------------------------

# Seconds of flooding; the default makes a few hundred thousand writes, and
# VMM_FLOOD_SECONDS=60 makes millions.
FLOOD_SECONDS = float(os.environ.get("VMM_FLOOD_SECONDS", "3"))
# Peak RSS of a flood may exceed that of a run of the hello guest by this much.
FLOOD_RSS_MARGIN = 8 << 20


def peak_rss_of_vmm_run(*args):
    """(exit status, peak RSS in bytes) of one `python -m vmm run` process."""
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen([sys.executable, "-m", "vmm", "run", *args], cwd=ROOT,
                                   stdout=devnull, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stderr.close()
    return process.returncode, usage.ru_maxrss * 1024


def test_serial_port_flood_keeps_memory_bounded_and_loses_nothing(tmp_path):
    hello_status, hello_rss = peak_rss_of_vmm_run(str(GUESTS / "hello_long.bin"), "--serial", "none")
    assert hello_status == 0, f"expected the hello guest to exit 0, got {hello_status}"
    output = tmp_path / "flood.txt"
    status, flood_rss = peak_rss_of_vmm_run(str(GUESTS / "hostile_port_flood.bin"), "--serial", f"file:{output}",
                                            "--timeout", str(FLOOD_SECONDS))
    assert status == 124, f"expected the flood to end with the timeout status 124, got {status}"
    data = output.read_bytes()
    line = b"x" * 63 + b"\n"
    lines = len(data) // len(line)
    assert lines > 100, f"expected a flood of many lines, got {len(data)} bytes"
    assert data == line * lines + line[:len(data) % len(line)], "expected only whole 64-byte lines and one prefix"
    assert flood_rss - hello_rss < FLOOD_RSS_MARGIN, (
        f"expected the peak RSS of {len(data)} writes within {FLOOD_RSS_MARGIN >> 20} MiB of a hello run "
        f"({hello_rss >> 20} MiB), got {flood_rss >> 20} MiB")
