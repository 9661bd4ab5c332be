"""The `vmm` command as users run it: a real process, its output and exit status."""
import os
import subprocess
import sys
import time

import pytest

from conftest import GUESTS, ROOT

pytestmark = pytest.mark.kvm


def vmm(*args, env=None, timeout=30, **kwargs):
    environment = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "vmm", *args], cwd=ROOT, capture_output=True,
                          env=environment, timeout=timeout, **kwargs)


def guest(name):
    return str(GUESTS / f"{name}.bin")


def assert_one_line_error(result, status, text):
    stderr = result.stderr.decode()
    assert result.returncode == status, f"expected exit status {status}, got {result.returncode}: {stderr}"
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("vmm: "), f"expected one line, got {stderr!r}"
    assert text in stderr, f"expected {text!r} in {stderr!r}"


@pytest.mark.parametrize("name, mode, text", [
    ("hello_real", "real", b"Hello from real mode!\n"),
    ("hello_protected", "protected", b"Hello from protected mode!\n"),
    ("hello_long", "long", b"Hello from long mode!\n"),
])
def test_run_prints_the_serial_output(name, mode, text):
    result = vmm("run", guest(name), "--mode", mode)
    assert (result.returncode, result.stdout, result.stderr) == (0, text, b"")


def test_serial_to_file_and_input_from_file(tmp_path):
    (tmp_path / "in").write_bytes(b"fedcba9876543210")
    result = vmm("run", guest("string_io"), "--mode", "protected", "--serial", f"file:{tmp_path / 'out'}",
                 "--serial-input", str(tmp_path / "in"))
    assert (result.returncode, result.stdout) == (0, b"")
    assert (tmp_path / "out").read_bytes().endswith(b"echo: fedcba9876543210\n")


def test_serial_input_from_stdin():
    result = vmm("run", guest("exit_status"), "--mode", "protected", "--serial-input", "-", input=b"\x05")
    assert result.returncode == (5 << 1) | 1


def test_test_exit_status_is_the_process_status():
    assert vmm("run", guest("exit_status"), "--mode", "protected").returncode == 85


def test_triple_fault_report_and_status():
    result = vmm("run", guest("triple_fault"))
    stderr = result.stderr.decode()
    assert result.returncode == 4, stderr
    assert result.stdout == b"about to triple fault\n"
    assert "SHUTDOWN: the guest triple-faulted" in stderr and "RIP=0000000000100028" in stderr
    assert stderr.rstrip().endswith("vmm: vCPU 0: guest triple fault (SHUTDOWN)")


def test_timeout_ends_a_runaway_guest_within_a_second():
    started = time.monotonic()
    result = vmm("run", guest("forever"), "--timeout", "1")
    elapsed = time.monotonic() - started
    assert result.returncode == 124, result.stderr
    assert result.stdout == b"spinning forever\n"
    assert result.stderr == b"vmm: timeout: the guest ran for 1 s\n"
    assert elapsed < 1 + 1 + 1.5, f"took {elapsed:.2f} s (1 s limit, plus interpreter start-up)"


def test_verbose_counts_unclaimed_accesses():
    result = vmm("run", guest("selftest_long"), "--verbose")
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "vmm: the guest reported done" in stderr
    assert "vmm: unclaimed port reads: 0x2f0: 1" in stderr
    assert "vmm: unclaimed MMIO reads: 0xd0000000: 1" in stderr
    assert "vmm: unclaimed MMIO writes: 0xd0000000: 1" in stderr


def test_guest_assertion_status():
    result = vmm("run", guest("assert_fail"))
    assert_one_line_error(result, 8, "six times seven (expected 0x2b, got 0x2a)")


@pytest.mark.parametrize("args, status, text", [
    (["run", "no-such-image.bin"], 2, "no-such-image.bin: no such file"),
    (["run", str(GUESTS)], 2, "is a directory"),
    (["run", guest("hello_long"), "--mem", "64K"], 2, "load address 0x100000 is outside guest memory (0x10000"),
    (["run", guest("hello_long"), "--load-addr", "0x40000000"], 2, "outside guest memory"),
    (["run", guest("hello_long"), "--load-addr", "0x7fffff0"], 2, "runs past the end of guest memory"),
    (["run", guest("hello_long"), "--load-addr", "0x2000"], 2, "overlaps the VMM's GDT and page tables"),
    (["run", guest("hello_long"), "--entry", "0x90000000"], 2, "entry point 0x90000000 is outside"),
    (["run", guest("hello_long"), "--mem", "lots"], 2, "invalid size 'lots'"),
    (["run", guest("hello_long"), "--mem", "4G"], 2, "between 4 KiB and 3 GiB"),
    (["run", guest("hello_long"), "--mode", "v86"], 2, "invalid choice: 'v86'"),
    (["run", guest("hello_long"), "--timeout", "-1"], 2, "timeout must be positive"),
    (["run", guest("hello_long"), "--serial", "tcp:1234"], 2, "invalid serial backend"),
    (["run", guest("hello_long"), "--serial", "file:/no/such/dir/out"], 2, "cannot write serial output"),
    (["run", guest("hello_long"), "--serial-input", "/no/such/input"], 2, "cannot read serial input"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ([], 2, "the following arguments are required: COMMAND"),
])
def test_bad_input_is_one_line(args, status, text):
    assert_one_line_error(vmm(*args), status, text)


def test_image_larger_than_memory(tmp_path):
    image = tmp_path / "big.bin"
    image.write_bytes(bytes(70 << 10))
    assert_one_line_error(vmm("run", str(image), "--mem", "64K", "--mode", "real"), 2,
                          f"{image}: image of 71680 bytes does not fit in 65536 bytes")


def test_missing_kvm_device(tmp_path):
    result = vmm("run", guest("hello_long"), env={"VMM_KVM_DEVICE": str(tmp_path / "kvm")})
    assert_one_line_error(result, 10, "does not exist: KVM is not available on this host")


def test_permission_denied_on_kvm_device(monkeypatch, capsys):
    # As root no file mode denies access, so the refusal is simulated at os.open.
    from vmm import cli
    from vmm.kvm import system

    def refuse(path, flags):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(system.os, "open", refuse)
    assert cli.main(["run", guest("hello_long")]) == 10
    stderr = capsys.readouterr().err
    assert stderr == ("vmm: permission denied opening /dev/kvm: run as root or join the 'kvm' group\n")
