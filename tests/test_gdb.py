"""Stock gdb, in batch mode, against the project's guests under `vmm run --gdb`: breakpoints,
registers and locals, disassembly, stepping, watchpoints, threads on the SMP guest, Ctrl-C,
V2E events as stop reasons, detach and kill. Once gdb lets the guest go, its serial output and
exit status are those of the same run without gdb."""
import functools
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from conftest import GUESTS, ROOT

GDB = shutil.which("gdb")
pytestmark = [pytest.mark.kvm,
              pytest.mark.skipif(GDB is None, reason="needs gdb (Debian's `gdb`; .ci/run installs it)")]

from vmm.errors import EXIT_GDB_KILL  # noqa: E402
_LISTENING = re.compile(r"vmm: gdb: (?:listening|waiting for gdb) on (\S+)")


def image(name):
    return str(next(path for path in (GUESTS / f"{name}.elf", GUESTS / f"{name}.bin") if path.exists()))


@functools.cache
def reference(name, *args):
    """(stdout, exit status) of the run without gdb."""
    result = subprocess.run([sys.executable, "-m", "vmm", "run", image(name), *args], cwd=ROOT,
                            capture_output=True, timeout=60)
    return result.stdout, result.returncode


class VmmUnderGdb:
    """`vmm run IMAGE ARGS --gdb ENDPOINT` as a process, with the address the stub listens on."""

    def __init__(self, name, *args, endpoint="tcp:127.0.0.1:0", wait=True, verbose=False):
        command = [sys.executable, "-m", "vmm", "run", image(name), *args, "--gdb", endpoint]
        command += ["--gdb-wait"] * wait + ["--verbose"] * verbose
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr_lines = []
        self._address = None
        self._listening = threading.Event()
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr.start()
        self._stdout = b""
        self._stdout_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._stdout_reader.start()
        assert self._listening.wait(30), f"the stub never said where it listens: {self.stderr_lines}"

    def _read_stderr(self):
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.stderr_lines.append(line)
            match = _LISTENING.match(line)
            if match:
                self._address = match.group(1)
                self._listening.set()
        self._listening.set()

    def _read_stdout(self):
        self._stdout = self.process.stdout.read()

    @property
    def target(self):
        """What gdb's `target remote` takes."""
        kind, _, rest = self._address.partition(":")
        return rest if kind == "unix" else ":" + rest.rpartition(":")[2]

    @property
    def port(self):
        return int(self._address.rpartition(":")[2])

    def finish(self, timeout=60):
        """(stdout, exit status, stderr) once the run has ended."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"vmm did not end within {timeout} s: {''.join(self.stderr_lines)}") from None
        self._stdout_reader.join(10)
        self._stderr.join(10)
        stderr = "".join(self.stderr_lines)
        assert "Traceback" not in stderr, stderr
        return self._stdout, status, stderr

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def under_gdb():
    started = []

    def start(*args, **kwargs):
        started.append(VmmUnderGdb(*args, **kwargs))
        return started[-1]

    yield start
    for each in started:
        each.close()


def gdb(vmm, commands, file=None, timeout=60, signal_after=None):
    """gdb -batch connected to `vmm`, running `commands`; its output (stdout and stderr)."""
    command = [GDB, "-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off",
               "-ex", f"directory {GUESTS}", "-ex", f"target remote {vmm.target}"]
    for line in commands:
        command += ["-ex", line]
    if file:
        command.append(image(file))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if signal_after is not None:
        try:
            process.wait(signal_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"gdb did not finish within {timeout} s:\n{output}") from None
    assert "internal-error" not in output and "Remote 'g' packet reply" not in output, output
    return output


def assert_same_as_without_gdb(vmm, name, *args):
    stdout, status, stderr = vmm.finish()
    expected_stdout, expected_status = reference(name, *args)
    assert (stdout, status) == (expected_stdout, expected_status), (
        f"with gdb: status {status}, output {stdout!r}\nwithout: status {expected_status}, output "
        f"{expected_stdout!r}\nstderr: {stderr}")
    return stderr


def values(output, name):
    """Every value gdb printed for register `name` in `info registers` lines."""
    return [int(value, 16) for value in re.findall(rf"^{name}\s+(0x[0-9a-f]+)", output, re.MULTILINE)]


# -- the C guest: functions, locals on the stack, a global ---------------------

def test_break_continue_registers_locals_disassembly_step_and_detach(under_gdb):
    vmm = under_gdb("gdb_target")
    output = gdb(vmm, ["break checksum", "continue", "info registers rip", "bt", "info locals", "info args",
                       "x/4i $pc", "stepi", "info registers rip", "print counter", "print/x $sp",
                       "info registers fs_base cr0 cr3 efer", "detach"], file="gdb_target")
    assert "Breakpoint 1, checksum (text=" in output and 'seed=0) at ./gdb_target.c' in output, output
    assert re.search(r"#1  0x[0-9a-f]+ in main64 \(\) at \./gdb_target\.c", output), output
    # The locals live on the stack (-O0): gdb reads them through the stub's memory reads.
    assert re.search(r"^sum = \d+$", output, re.MULTILINE) and "length = " in output, output
    assert 'text = 0x202000 <message> "debug me"' in output and "seed = 0" in output, output
    disassembly = re.findall(r"^(?:=> )?\s*0x[0-9a-f]+ <checksum\+\d+>:\t(.+)$", output, re.MULTILINE)
    assert len(disassembly) == 4, output
    first, after_step = values(output, "rip")
    assert after_step > first, f"stepi should move rip past {first:#x}, got {after_step:#x}"
    assert "$1 = 0" in output, output   # counter, before the first checksum returns
    assert values(output, "cr0")[0] & 0x80000001 == 0x80000001, "long mode has CR0.PE and CR0.PG"
    assert values(output, "efer")[0] & 0x500 == 0x500, "long mode has EFER.LME and LMA"
    assert "[Inferior 1 (Remote target) detached]" in output, output
    stderr = assert_same_as_without_gdb(vmm, "gdb_target")
    assert "Traceback" not in stderr


def test_watchpoint_on_a_variable(under_gdb):
    vmm = under_gdb("gdb_target")
    output = gdb(vmm, ["break checksum", "continue", "delete", "watch counter", "continue", "print counter",
                       "continue", "print counter", "delete", "continue"], file="gdb_target")
    changes = re.findall(r"Old value = (\d+)\nNew value = (\d+)", output)
    assert changes == [("0", "8"), ("8", "16")], output
    assert "$1 = 8" in output and "$2 = 16" in output, output
    assert re.search(r"checksum \(text=.*\) at \./gdb_target\.c:\d+", output), output
    assert "exited with code 061" in output, output   # (0x18 << 1) | 1 = 49 = 061
    assert_same_as_without_gdb(vmm, "gdb_target")


def test_registers_are_written_back(under_gdb):
    vmm = under_gdb("gdb_target")
    output = gdb(vmm, ["break checksum", "continue", "set $r12 = 0x1122334455667788",
                       "set $xmm3.v2_int64[1] = 0x0102030405060708", "set $st0 = 1.5", "set $fs_base = 0x7000",
                       "flushregs", "info registers r12 fs_base", "print/x $xmm3.v2_int64", "print $st0",
                       "set $r12 = 0", "set $fs_base = 0", "detach"], file="gdb_target")
    assert values(output, "r12") == [0x1122334455667788], output
    assert values(output, "fs_base") == [0x7000], output
    assert "{0x0, 0x102030405060708}" in output, output
    assert re.search(r"^\$\d+ = 1\.5$", output, re.MULTILINE), output
    assert_same_as_without_gdb(vmm, "gdb_target")


def test_a_breakpoint_is_invisible_to_the_guest_reading_its_code(under_gdb):
    """The guest prints the first byte of checksum's code; a breakpoint on it (a debug
    register) must not show there, and its own debug registers read back as it set them."""
    vmm = under_gdb("gdb_target")
    output = gdb(vmm, ["break *checksum", "hbreak *0x3ff000", *["continue"] * 4], file="gdb_target")
    assert output.count("Breakpoint 1, ") == 3, output
    assert "exited with code 061" in output, output
    assert_same_as_without_gdb(vmm, "gdb_target")
    stdout, _ = reference("gdb_target")
    assert b"first code byte of checksum 0x55" in stdout and b"own debug registers: intact" in stdout


def test_int3_breakpoints_once_the_debug_registers_are_taken(under_gdb):
    """Four hardware breakpoints take DR0-DR3; the fifth breakpoint is an int3 in memory, which
    this host reports as an emulation failure at the int3 (a stock KVM: a debug exit)."""
    vmm = under_gdb("gdb_target", verbose=True)
    output = gdb(vmm, [*(f"hbreak *{0x300000 + 16 * n:#x}" for n in range(4)), "break checksum",
                       "continue", "info registers rip", "x/1xb $pc", "stepi", "continue", "delete", "continue"],
                 file="gdb_target")
    assert output.count("Breakpoint 5, checksum (text=") == 2, output
    assert re.search(r"<checksum\+16>:\t0x48", output), "gdb reads the original byte, not int3: " + output
    stderr = assert_same_as_without_gdb(vmm, "gdb_target")
    assert "breakpoint at 0x201144 moved to int3" in stderr or "breakpoint at 0x201144 (1): int3" in stderr, stderr


def test_kill_ends_the_run_with_its_status(under_gdb):
    vmm = under_gdb("gdb_target")
    output = gdb(vmm, ["break checksum", "continue", "kill"], file="gdb_target")
    assert "[Inferior 1 (Remote target) killed]" in output, output
    stdout, status, stderr = vmm.finish()
    assert status == EXIT_GDB_KILL, f"expected status {EXIT_GDB_KILL}, got {status}: {stderr}"
    assert "vmm: killed from gdb" in stderr, stderr


def test_a_client_leaving_without_detaching_lets_the_guest_run_on(under_gdb):
    vmm = under_gdb("gdb_target")
    gdb(vmm, ["break checksum", "continue"], file="gdb_target")   # gdb -batch exits: the socket closes
    assert_same_as_without_gdb(vmm, "gdb_target")


# -- other guests, modes and transports ------------------------------------------------

def test_info_threads_and_stepping_one_vcpu_on_the_smp_guest(under_gdb):
    vmm = under_gdb("smp", "--smp", "4")
    # The breakpoint goes before the step: thread 2 may be stopped on it too, and stepping a
    # thread from an inserted breakpoint's address reports that breakpoint, as on hardware.
    output = gdb(vmm, ["info threads", "break shared_code", "continue", "info threads", "delete", "thread 2",
                       "set scheduler-locking on", "info registers eip", "stepi", "info registers eip",
                       "thread 1", "info registers eip", "set scheduler-locking off", "detach"], file="smp")
    first, after = output.split("Breakpoint 1 at", 1)
    assert len(re.findall(r"^\*?\s+\d\s+Thread \d \(vCPU \d:", first, re.MULTILINE)) == 4, output
    assert first.count("waiting for INIT") == 3, "the application processors have not started yet: " + output
    assert re.search(r"Thread (\d) hit Breakpoint 1, 0x00101000 in shared_code", after), output
    assert len(re.findall(r"^\*?\s+\d\s+Thread \d \(vCPU \d: protected mode, 32-bit code", after, re.MULTILINE)) == 4
    eips = values(after, "eip")
    assert len(eips) == 3 and eips[1] != eips[0], f"thread 2 stepped: {eips}"
    assert eips[2] == 0x101000, "thread 1 stayed at the breakpoint while thread 2 stepped alone"
    assert_same_as_without_gdb(vmm, "smp", "--smp", "4")


def test_ctrl_c_stops_a_spinning_guest(under_gdb):
    vmm = under_gdb("forever", "--timeout", "30", wait=False)
    output = gdb(vmm, ["continue", "info registers rip", "x/1i $pc", "kill"], signal_after=1.5)
    assert "Program received signal SIGINT, Interrupt." in output, output
    assert re.search(r"=> 0x[0-9a-f]+:\tjmp", output), output
    assert vmm.finish()[1] == EXIT_GDB_KILL


def test_real_mode_uses_the_16_bit_description(under_gdb):
    vmm = under_gdb("hello_real", "--mode", "real")
    output = gdb(vmm, ["show architecture", "x/2i $pc", "break *0x7c10", "continue", "info registers eip",
                       "delete", "stepi", "stepi", "info registers eip", "continue"])
    assert '(currently "i8086")' in output, output
    assert "mov    $0x7c1b,%si" in output, "16-bit disassembly: " + output
    assert values(output, "eip")[0] == 0x7c10, output
    assert_same_as_without_gdb(vmm, "hello_real", "--mode", "real")


def test_mode_switch_after_connecting_is_said(under_gdb):
    """multiboot_long enters in protected mode and switches to long mode on its own."""
    vmm = under_gdb("multiboot_long")
    output = gdb(vmm, ["break long_mode", "continue", "x/1i $pc", "delete", "continue"], file="multiboot_long")
    assert "Breakpoint 1, 0x001000a9 in long_mode ()" in output, output
    assert "vmm: vCPU 0 now runs 64-bit code; gdb read the 32-bit description" in output, output
    assert_same_as_without_gdb(vmm, "multiboot_long")


def test_unix_socket(under_gdb, tmp_path):
    path = tmp_path / "gdb.sock"
    vmm = under_gdb("hello_long", endpoint=f"unix:{path}")
    output = gdb(vmm, ["info registers rip", "continue"])
    assert values(output, "rip") == [0x100000], output
    assert "[Inferior 1 (Remote target) exited normally]" in output, output
    assert_same_as_without_gdb(vmm, "hello_long")
    assert not path.exists(), "the socket is removed at the end"


# -- V2E -----------------------------------------------------------------------------

def test_v2e_events_stop_into_gdb_and_stepi_steps_the_traced_code(under_gdb, tmp_path):
    trace = tmp_path / "trace.jsonl"
    vmm = under_gdb("packed_long", "--watch", "0x200000", "--trace", str(trace), "--gdb-on-event")
    output = gdb(vmm, ["continue", "info registers rip", "x/3i $pc", "stepi", "stepi", "info registers rip",
                       "monitor v2e status", "info threads", "continue"])
    assert re.search(r"vmm: V2E event 1: vCPU 0 entered watched gpa 0x200000 at rip 0x200000 "
                     r"\((stock|patched) backend, long mode\)", output), output
    assert values(output, "rip") == [0x200000, 0x200006], output
    assert "V2E watches 0x200000-0x201000" in output and "2 instructions traced" in output, output
    assert "traced by V2E" in output, output
    assert_same_as_without_gdb(vmm, "packed_long")
    records = [line for line in trace.read_text().splitlines()]
    assert sum('"type":"insn"' in line for line in records) == 264, "the trace holds every instruction"
    assert '"instructions":264' in records[-1], records[-1]


def test_stepping_another_thread_alone_during_a_v2e_event(under_gdb):
    """While one vCPU is inside a V2E event every vCPU is single-stepped, none held: another
    one stepped alone moves on one instruction; resuming everyone lets the guest finish."""
    vmm = under_gdb("smp", "--smp", "2", "--watch", "0x101000", "--gdb-on-event")
    other = "python gdb.execute('thread %d' % (2 if gdb.selected_thread().num == 1 else 1))"
    # Its first stepi may stop at once where it is, entering a V2E event of its own (--gdb-on-event).
    output = gdb(vmm, ["continue", other, "set scheduler-locking on", "info registers eip", "stepi", "stepi",
                       "info registers eip", "set scheduler-locking off", *["continue"] * 60], file="smp")
    eips = values(output, "eip")
    assert len(eips) == 2 and eips[1] != eips[0], f"the other vCPU did not step: {eips}\n{output}"
    assert output.count("vmm: V2E event ") == 50, "two vCPUs, 25 calls each, every one an event"
    assert_same_as_without_gdb(vmm, "smp", "--smp", "2", "--watch", "0x101000")


@pytest.mark.parametrize("watch", [[], ["--watch", "0x200000"]], ids=["unwatched", "watched"])
def test_breakpoints_on_code_a_packer_writes(under_gdb, watch):
    """The packed sample decrypts its payload into 0x200000 after gdb set breakpoints there:
    in a debug register (unwatched) or checked at each traced instruction (watched), neither
    is overwritten."""
    vmm = under_gdb("packed_long", *watch)
    output = gdb(vmm, ["break *0x200000", "break *0x200020", "continue", "x/1i $pc", "continue",
                       "info registers rip", "stepi", "info registers rip", "delete", "continue"])
    assert "Breakpoint 1, 0x0000000000200000" in output and "mov    $0x200036,%esi" in output, output
    assert "Breakpoint 2, 0x0000000000200020" in output, output
    assert values(output, "rip") == [0x200020, 0x200025], output
    assert_same_as_without_gdb(vmm, "packed_long")


PACKED_LONG_AFTER_THE_PAYLOAD = 0x10006E   # the loader's instruction after `call *%rax`


def test_monitor_starts_and_stops_v2e(under_gdb):
    vmm = under_gdb("packed_long", "--gdb-on-event")
    output = gdb(vmm, ["monitor v2e status", "monitor v2e watch 0x200000+0x1000", "monitor v2e watch 0x300000",
                       f"break *{PACKED_LONG_AFTER_THE_PAYLOAD:#x}", "continue", "info registers rip",
                       "monitor pa 0x200000", "monitor v2e unwatch", "continue", "monitor v2e status",
                       "monitor v2e unwatch", "monitor v2e status", "delete", "continue"])
    assert output.count("V2E watches nothing") == 2, output
    assert re.search(r"V2E watches 0x200000-0x201000 \((stock|patched) backend\): 0 events", output), output
    assert "vmm: V2E already watches 0x200000-0x201000: `monitor v2e unwatch` first" in output, output
    assert "vmm: V2E event 1: vCPU 0 entered watched gpa 0x200000" in output, output
    assert values(output, "rip")[0] == 0x200000, output
    assert "0x200000 -> physical 0x200000 (2048 KiB page, writable, executable)" in output, output
    assert "vmm: V2E is inside an event on vCPU 0: continue until it leaves the watched pages" in output, output
    assert "1 event, 264 instructions traced" in output and "V2E stopped" in output, output
    assert_same_as_without_gdb(vmm, "packed_long")


def test_each_unpacking_layer_is_a_stop(under_gdb, tmp_path):
    """With --unpack and --gdb-on-event, gdb stops at each layer's first instruction, the stop
    named on its console; stepi there runs the unpacked code; the guest ends as without gdb."""
    vmm = under_gdb("unpack_three_long", "--unpack", "--dump-dir", str(tmp_path), "--gdb-on-event")
    output = gdb(vmm, ["continue", "info registers rip", "x/1i $pc", "stepi", "info registers rip",
                       "continue", "info registers rip", "continue"])
    assert re.search(r"vmm: unpack layer 1: vCPU 0 runs written code at rip 0x200000 \(gpa 0x200000\), "
                     r"1 page\(s\) from 0x200000 dumped to layer-1-0x200000\.bin", output), output
    assert "vmm: unpack layer 2: vCPU 0 runs written code at rip 0x300000" in output, output
    rips = values(output, "rip")
    assert rips[0] == 0x200000 and rips[1] != 0x200000 and rips[2] == 0x300000, f"rips {rips}\n{output}"
    assert_same_as_without_gdb(vmm, "unpack_three_long", "--unpack", "--dump-dir", str(tmp_path / "plain"))


def test_monitor_info_registers(under_gdb):
    vmm = under_gdb("hello_long")
    output = gdb(vmm, ["monitor info registers", "monitor pa 0xffff800000000000", "monitor help", "continue"])
    assert re.search(r"^cs\s+0x0008  base=0x0 limit=0xffffffff type=0xb", output, re.MULTILINE), output
    assert "gdt  base=0x1000" in output and "efer 0x500" in output, output
    assert "guest's own: dr0 0x0" in output, output
    assert "0xffff800000000000: not mapped" in output, output
    assert_same_as_without_gdb(vmm, "hello_long")


def test_without_gdb_wait_the_guest_runs_until_gdb_connects():
    result = subprocess.run([sys.executable, "-m", "vmm", "run", image("hello_long"), "--gdb", "tcp:127.0.0.1:0"],
                            cwd=ROOT, capture_output=True, timeout=60)
    assert (result.stdout, result.returncode) == reference("hello_long"), result
    assert re.match(rb"vmm: gdb: listening on tcp:127\.0\.0\.1:\d+\n$", result.stderr), result.stderr
