"""Every guest image boots in its CPU mode on the real /dev/kvm; outputs are exact."""
import pytest

from conftest import GUESTS

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("name, mode, text", [
    ("hello_real", "real", b"Hello from real mode!\n"),
    ("hello_protected", "protected", b"Hello from protected mode!\n"),
    ("hello_long", "long", b"Hello from long mode!\n"),
])
def test_hello_in_each_mode(run_guest, name, mode, text):
    run = run_guest(name, mode).expect("halt", exit_status=0)
    assert run.output == text


def test_triple_fault_stops_with_a_shutdown_report(run_guest):
    run = run_guest("triple_fault", "long").expect("triple-fault", exit_status=4)
    assert run.output == b"about to triple fault\n"
    report = run.outcome.report
    assert report.startswith("vCPU 0: SHUTDOWN: the guest triple-faulted")
    assert "IDT base=0x0 limit=0x0" in report
    assert "CR0=0x80010033" in report and "EFER=0x500" in report
    assert "bytes at RIP (linear 0x100028): 0f 0b f4" in report  # ud2; hlt


def test_forever_loop_is_ended_by_the_timeout(run_guest):
    run = run_guest("forever", "long", timeout=0.5).expect("timeout", exit_status=124)
    assert run.output == b"spinning forever\n"


def test_string_io_delivers_every_byte_both_ways(run_guest):
    run = run_guest("string_io", "protected", serial_input=b"0123456789abcdefEXTRA").expect("halt", exit_status=0)
    assert run.output == (b"The quick brown fox jumps over the lazy dog; string I/O delivers every byte.\n"
                          b"echo: 0123456789abcdef\n")


def test_string_io_without_input_reads_zero_bytes(run_guest):
    run = run_guest("string_io", "protected").expect("halt")
    assert run.output.endswith(b"echo: " + bytes(16) + b"\n")


@pytest.mark.parametrize("serial_input, status", [(None, (42 << 1) | 1), (b"\x07", (7 << 1) | 1),
                                                 (b"\x00", 1), (b"\xff", 0xFF)])
def test_test_exit_device_status(run_guest, serial_input, status):
    run_guest("exit_status", "protected", serial_input=serial_input).expect("test-exit", exit_status=status)


def test_selftest_reports_through_the_ucall_port(run_guest):
    run = run_guest("selftest_long", "long").expect("done", exit_status=0)
    vendor, control, mmio = run.reports
    name = b"".join(word.to_bytes(4, "little") for word in vendor[:3])
    assert name in (b"GenuineIntel", b"AuthenticAMD", b"HygonGenuine"), name
    assert control == (0x80010033, 0x20, 0x2000, 0x500), [hex(value) for value in control]
    assert mmio[0] == 0xFFFFFFFF
    assert run.machine.ports.unclaimed_reads == {0x2F0: 1}
    assert dict(run.machine.mmio.unclaimed_reads) == {0xD0000000: 1}
    assert dict(run.machine.mmio.unclaimed_writes) == {0xD0000000: 1}


def test_guest_assertion_becomes_a_readable_failure(run_guest):
    run = run_guest("assert_fail", "long", allow_assert=True).expect("guest-assert", exit_status=8)
    assert run.outcome.message == "guest assertion failed at line 12: six times seven (expected 0x2b, got 0x2a)"


def test_guest_runs_in_a_small_memory(run_guest):
    run = run_guest("hello_real", "real", mem_size=64 << 10).expect("halt")
    assert run.output == b"Hello from real mode!\n"


def test_run_off_the_main_thread_needs_the_kick_handler(machine, monkeypatch):
    import threading

    from vmm.kvm import vcpu as vcpu_module
    from vmm.errors import VmmError

    vm = machine()
    vm.load((GUESTS / "hello_long.bin").read_bytes(), mode="long")
    monkeypatch.setattr(vcpu_module, "kick_handler_installed", lambda: False)
    import vmm.machine.machine
    monkeypatch.setattr(vmm.machine.machine, "kick_handler_installed", lambda: False)
    failures = []
    worker = threading.Thread(target=lambda: failures.append(pytest.raises(VmmError, vm.run, 1.0)))
    worker.start()
    worker.join()
    assert "install_kick_handler" in str(failures[0].value)
