"""The PC's firmware tables and devices one by one, then the pc_power guest using them the
way a kernel does: ACPI power-off and suspend/resume, the i8042 reset, pvpanic."""
import calendar
import io
import os
import struct
import threading
import time

import pytest

from test_cli import guest, vmm
from vmm.devices import acpi_pm, i8042, pvpanic, rtc, serial
from vmm.devices.serial import SerialInput, Uart16550
from vmm.errors import EXIT_GUEST_PANIC, EXIT_REBOOT
from vmm.machine import acpi


# -- ACPI tables -----------------------------------------------------------------

def tables_by_signature(block, base=acpi.RSDP_ADDR):
    """Follow RSDP -> XSDT -> tables (and FADT -> FACS, DSDT) in a block written at `base`,
    checking every checksum on the way; {signature: bytes}."""
    def at(address, length):
        return block[address - base:address - base + length]

    rsdp = at(base, 36)
    assert rsdp[:8] == b"RSD PTR " and sum(rsdp[:20]) % 256 == 0 and sum(rsdp) % 256 == 0
    rsdt_at, length, xsdt_at = struct.unpack_from("<IIQ", rsdp, 16)
    found = {}
    for pointer_size, table_at in ((4, rsdt_at), (8, xsdt_at)):
        header = at(table_at, 36)
        table = at(table_at, struct.unpack_from("<I", header, 4)[0])
        assert sum(table) % 256 == 0, f"{table[:4]} checksum"
        pointers = struct.unpack_from(f"<{(len(table) - 36) // pointer_size}{'I' if pointer_size == 4 else 'Q'}",
                                      table, 36)
        for pointer in pointers:
            child = at(pointer, struct.unpack_from("<I", at(pointer, 8), 4)[0])
            assert sum(child) % 256 == 0, f"{child[:4]} checksum"
            found[child[:4].decode()] = child
    fadt = found["FACP"]
    facs_at, dsdt_at = struct.unpack_from("<II", fadt, 36)
    found["FACS"] = at(facs_at, 64)
    found["DSDT"] = at(dsdt_at, struct.unpack_from("<I", at(dsdt_at, 8), 4)[0])
    assert sum(found["DSDT"]) % 256 == 0 and facs_at % 64 == 0
    return found


@pytest.mark.parametrize("cpus", [1, 4, 64])
def test_acpi_tables_checksums_fadt_and_one_local_apic_per_cpu(cpus):
    block, facs = acpi.build(cpus, acpi_pm.PM_BASE)
    tables = tables_by_signature(block)
    fadt = tables["FACP"]
    assert len(fadt) == 244 and fadt[8] == 3
    sci, smi_cmd = struct.unpack_from("<HI", fadt, 46)
    pm1a_evt, _, pm1a_cnt, _, _, pm_tmr = struct.unpack_from("<6I", fadt, 56)
    assert (sci, smi_cmd) == (9, 0), "SCI on IRQ 9, no SMI port (always in ACPI mode)"
    assert (pm1a_evt, pm1a_cnt, pm_tmr) == (0x600, 0x604, 0x608)
    assert fadt[108] == rtc.CENTURY_REGISTER
    boot_flags, = struct.unpack_from("<H", fadt, 109)
    assert boot_flags & 0b111 == 0b101, "legacy devices, no i8042 to probe, no VGA"
    assert facs == acpi.RSDP_ADDR + block.find(b"FACS") and tables["FACS"][:4] == b"FACS"
    madt = tables["APIC"]
    entries, at = [], 44
    while at < len(madt):
        entries.append(madt[at:at + madt[at + 1]])
        at += madt[at + 1]
    local_apics = [entry for entry in entries if entry[0] == 0]
    assert [(entry[2], entry[3], entry[4] & 1) for entry in local_apics] == [(cpu, cpu, 1) for cpu in range(cpus)]
    io_apics = [entry for entry in entries if entry[0] == 1]
    assert [struct.unpack_from("<I", entry, 4)[0] for entry in io_apics] == [0xFEC00000]
    overrides = [struct.unpack_from("<BBIH", entry, 2) for entry in entries if entry[0] == 2]
    assert overrides == [(0, 9, 9, 0x000D)]


def test_dsdt_declares_sleep_states_and_the_pvpanic_device():
    aml = acpi.dsdt_aml()
    # Name(_S5_, Package(4){0, 0, 0, 0}) and Name(_S3_, Package(4){1, 1, 0, 0}), as QEMU declares them.
    assert b"\x08_S5_\x12\x06\x04\x00\x00\x00\x00" in aml
    assert b"\x08_S3_\x12\x06\x04\x01\x01\x00\x00" in aml
    assert b"QEMU0001\x00" in aml and struct.pack("<BBHHBB", 0x47, 1, 0x505, 0x505, 1, 1) in aml


@pytest.mark.parametrize("length, encoded", [(0, b"\x01"), (62, b"\x3f"), (63, b"\x41\x04"), (4000, b"\x42\xfa"), (5000, b"\x8b\x38\x01")])
def test_aml_package_length_encoding_counts_itself(length, encoded):
    assert acpi._pkg_length(length) == encoded


# -- the devices -----------------------------------------------------------------

def cmos_read(clock, register):
    clock.write(0, 1, register)
    return clock.read(1, 1)


def cmos_write(clock, register, value):
    clock.write(0, 1, register)
    clock.write(1, 1, value)


def test_rtc_keeps_the_host_time_in_bcd():
    moment = calendar.timegm((2026, 12, 1, 21, 34, 56)) + 0.5
    clock = rtc.CmosRtc(clock=lambda: moment)
    fields = [cmos_read(clock, register) for register in (0, 2, 4, 6, 7, 8, 9, 0x32)]
    assert fields == [0x56, 0x34, 0x21, 0x03, 0x01, 0x12, 0x26, 0x20]   # Tuesday = 3
    assert cmos_read(clock, 0x0D) == rtc.D_VRT and not cmos_read(clock, 0x0A) & rtc.A_UIP


def test_rtc_binary_12_hour_mode_and_setting_the_time():
    now = [calendar.timegm((2026, 12, 1, 21, 34, 56)) + 0.5]
    clock = rtc.CmosRtc(clock=lambda: now[0])
    cmos_write(clock, 0x0B, rtc.B_DM_BINARY)                 # binary, 12-hour
    assert cmos_read(clock, 4) == 9 | rtc.HOUR_PM
    cmos_write(clock, 0x0B, rtc.B_DM_BINARY | rtc.B_24H | rtc.B_SET)
    cmos_write(clock, 9, 30)                                  # 2030
    cmos_write(clock, 2, 0)
    cmos_write(clock, 0x0B, rtc.B_DM_BINARY | rtc.B_24H)
    now[0] += 10
    assert [cmos_read(clock, register) for register in (9, 2, 0)] == [30, 1, 6]   # 0:56.5 + 10 s


def test_rtc_update_in_progress_window_and_flags():
    now = [1000.0 - 100e-6]
    clock = rtc.CmosRtc(clock=lambda: now[0])
    assert cmos_read(clock, 0x0A) & rtc.A_UIP, "244 us before the second"
    now[0] = 1000.0 + 1e-3
    assert cmos_read(clock, 0x0A) & rtc.A_UIP, "during the update"
    now[0] = 1000.5
    assert not cmos_read(clock, 0x0A) & rtc.A_UIP
    cmos_read(clock, 0x0C)
    for register in (1, 3, 5):
        cmos_write(clock, register, rtc.ALARM_DONT_CARE)
    cmos_write(clock, 0x0B, rtc.B_24H | rtc.B_AIE)
    assert clock.next_alarm() == 1001.0
    now[0] = 1001.2
    assert cmos_read(clock, 0x0C) == rtc.C_IRQF | rtc.C_AF | rtc.C_UF | rtc.C_PF
    assert cmos_read(clock, 0x0C) == 0, "reading register C clears it"


def test_rtc_alarm_at_a_given_time():
    now = calendar.timegm((2026, 12, 1, 21, 34, 56)) + 0.25
    clock = rtc.CmosRtc(clock=lambda: now)
    cmos_write(clock, 1, 0x00)
    cmos_write(clock, 3, 0x36)
    cmos_write(clock, 5, 0x21)
    cmos_write(clock, 0x0B, rtc.B_24H | rtc.B_AIE)
    assert clock.next_alarm() == calendar.timegm((2026, 12, 1, 21, 36, 0))


def test_i8042_self_test_command_byte_and_reset():
    resets = []
    controller = i8042.I8042(lambda: resets.append(1))
    controller.write(4, 1, 0xAA)
    assert controller.read(4, 1) & i8042.STATUS_OUTPUT_FULL and controller.read(0, 1) == 0x55
    controller.write(4, 1, 0x60)
    controller.write(0, 1, 0x47)
    controller.write(4, 1, 0x20)
    assert controller.read(0, 1) == 0x47 and not controller.read(4, 1) & i8042.STATUS_OUTPUT_FULL
    controller.write(4, 1, 0xFF)          # pulse no line: not a reset
    assert resets == []
    controller.write(4, 1, 0xFE)
    assert resets == [1]
    controller.write(4, 1, 0xD1)          # the output port with the reset bit clear
    controller.write(0, 1, 0x02)
    assert resets == [1, 1]


def test_acpi_pm_sleep_requests_status_and_timer():
    states = []
    power = acpi_pm.AcpiPm(states.append)
    assert power.read(acpi_pm.PM1_CNT, 2) & acpi_pm.SCI_EN
    power.write(acpi_pm.PM1_CNT, 2, 5 << 10)                        # a sleep type without SLP_EN
    power.write(acpi_pm.PM1_CNT, 2, acpi_pm.SLP_EN | 1 << 10)        # S3
    power.write(acpi_pm.PM1_CNT, 2, acpi_pm.SLP_EN)                  # S5
    assert states == [3, 5]
    assert not power.read(acpi_pm.PM1_CNT, 2) & acpi_pm.SLP_EN, "SLP_EN reads as 0"
    power.write(acpi_pm.PM1_EN, 2, acpi_pm.RTC_EN)
    power.woke(acpi_pm.RTC_STS)
    assert power.read(0, 4) == (acpi_pm.WAK_STS | acpi_pm.RTC_STS) | acpi_pm.RTC_EN << 16
    power.write(acpi_pm.PM1_STS, 2, acpi_pm.WAK_STS)                 # write 1 to clear
    assert power.read(acpi_pm.PM1_STS, 2) == acpi_pm.RTC_STS
    first = power.read(acpi_pm.PM_TMR, 4)
    time.sleep(0.01)
    ticks = (power.read(acpi_pm.PM_TMR, 4) - first) & 0xFFFFFFFF
    assert 0.009 * acpi_pm.PM_TIMER_HZ <= ticks <= 0.5 * acpi_pm.PM_TIMER_HZ


def test_pvpanic_reports_panics_not_crash_kernels():
    panics = []
    device = pvpanic.PvPanic(lambda: panics.append(1))
    assert device.read(0, 1) == pvpanic.PVPANIC_PANICKED | pvpanic.PVPANIC_CRASH_LOADED
    device.write(0, 1, pvpanic.PVPANIC_CRASH_LOADED)
    device.write(0, 1, pvpanic.PVPANIC_PANICKED)
    assert panics == [1]


def test_uart_fifo_trigger_level_and_receive_timeout_interrupts():
    levels = []
    uart = Uart16550(io.BytesIO(), SerialInput(io.BytesIO(b"abcdefghijklmnopqrstuvwxyz")), levels.append)
    uart.write(serial.IIR_FCR, 1, serial.FCR_FIFO_ENABLE | 2 << serial.FCR_TRIGGER_SHIFT)   # trigger at 8
    assert uart.read(serial.IIR_FCR, 1) == serial.IIR_NO_INT | serial.IIR_FIFO_ENABLED
    uart.write(serial.IER_DLM, 1, serial.IER_RDI)
    assert uart.read(serial.IIR_FCR, 1) == serial.IIR_RDI | serial.IIR_FIFO_ENABLED
    assert levels == [1]
    received = bytes(uart.read(serial.RBR_THR_DLL, 1) for _ in range(20))
    assert received == b"abcdefghijklmnopqrst"
    assert uart.read(serial.IIR_FCR, 1) == serial.IIR_RX_TIMEOUT | serial.IIR_FIFO_ENABLED, "6 left: under 8"
    while uart.read(serial.LSR, 1) & serial.LSR_DR:
        uart.read(serial.RBR_THR_DLL, 1)
    assert levels == [1, 0] and uart.read(serial.IIR_FCR, 1) & 0x0F == serial.IIR_NO_INT


def test_uart_raises_its_interrupt_when_input_arrives_later():
    read_end, write_end = os.pipe()
    levels = []
    raised = threading.Event()
    with open(read_end, "rb", buffering=0) as source, open(write_end, "wb", buffering=0) as sink:
        uart = Uart16550(io.BytesIO(), SerialInput(source),
                         lambda level: (levels.append(level), raised.set() if level else None))
        uart.write(serial.IER_DLM, 1, serial.IER_RDI)
        uart.read(serial.IIR_FCR, 1)
        assert levels == []
        sink.write(b"x")
        assert raised.wait(5), "no interrupt after input arrived"
        assert uart.read(serial.RBR_THR_DLL, 1) == ord("x")
        assert levels == [1, 0]


# -- the pc_power guest ------------------------------------------------------------

def pc_power(request, tmp_path, *args):
    requests = tmp_path / "request"
    requests.write_bytes(request)
    return vmm("run", guest("pc_power"), "--machine", "pc", "--mode", "protected",
               "--serial-input", str(requests), "--timeout", "20", *args)


@pytest.mark.kvm
@pytest.mark.parametrize("request_byte, status, message", [
    (b"o", 0, b""),
    (b"r", EXIT_REBOOT, b"vmm: the guest reset the machine (reboot)\n"),
    (b"p", EXIT_GUEST_PANIC, b"vmm: the guest kernel panicked (pvpanic)\n"),
])
def test_power_off_reset_and_panic_end_the_run_with_their_status(request_byte, status, message, tmp_path):
    result = pc_power(request_byte, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (status, b"", message)


@pytest.mark.kvm
def test_suspend_to_ram_resumes_at_the_waking_vector_on_the_rtc_alarm(tmp_path):
    start = time.monotonic()
    result = pc_power(b"s", tmp_path)
    assert result.stdout == b"resumed\n", result.stderr
    assert result.returncode == (0x21 << 1) | 1
    assert time.monotonic() - start < 15


@pytest.mark.kvm
def test_on_reboot_restart_boots_the_image_again(tmp_path):
    """The first boot reads 'r' and resets; the restarted one finds no input and exits 0x7f."""
    result = pc_power(b"r", tmp_path, "--on-reboot", "restart")
    assert result.returncode == 0xFF, result.stderr   # (0x7f << 1) | 1


def test_uart_fifo_reset_loses_no_input_waiting_on_the_line():
    """Linux resets the FIFOs when it opens the port: input that came before must survive."""
    uart = Uart16550(io.BytesIO(), SerialInput(io.BytesIO(b"echo hi\n")))
    uart.write(serial.IIR_FCR, 1, serial.FCR_FIFO_ENABLE)
    assert uart.read(serial.LSR, 1) & serial.LSR_DR
    uart.write(serial.IIR_FCR, 1, serial.FCR_FIFO_ENABLE | serial.FCR_CLEAR_RX | serial.FCR_CLEAR_TX)
    assert bytes(uart.read(serial.RBR_THR_DLL, 1) for _ in range(8)) == b"echo hi\n"


def test_cpuid_sets_the_hypervisor_bit_when_kvm_offers_its_leaves():
    from vmm.x86.cpuid import cpuid_for_vcpu
    leaf_1 = {"function": 1, "index": 0, "flags": 0, "eax": 0, "ebx": 0, "ecx": 0x2000, "edx": 0}
    kvm_leaf = {"function": 0x40000000, "index": 0, "flags": 0, "eax": 0x40000001, "ebx": 0x4B4D564B,
                "ecx": 0x564B4D56, "edx": 0x4D}
    with_kvm = cpuid_for_vcpu([leaf_1, kvm_leaf], 2, 4)
    assert with_kvm[0]["ecx"] == 0x80002000 and with_kvm[0]["ebx"] >> 16 == 0x0204
    assert cpuid_for_vcpu([leaf_1], 0, 1)[0]["ecx"] == 0x2000


def test_uart_input_waits_for_linux_to_open_the_port():
    """Linux's 8250 driver probes the port (IER written 0x0f then 0), clears the FIFOs and
    reads the receiver to empty it, enables the receive interrupt, reads LSR, RBR, IIR and
    MSR "for luck", and only then takes interrupts: the input must still be whole."""
    levels = []
    uart = Uart16550(io.BytesIO(), SerialInput(io.BytesIO(b"echo hi\n")), levels.append)
    uart.write(serial.IER_DLM, 1, 0x0F)
    uart.write(serial.IER_DLM, 1, 0)
    assert levels == [1, 0], "the probe's transmitter interrupt, and no receive interrupt"
    uart.read(serial.IIR_FCR, 1)
    uart.write(serial.IIR_FCR, 1, serial.FCR_FIFO_ENABLE | serial.FCR_CLEAR_RX)
    assert uart.read(serial.RBR_THR_DLL, 1) == 0, "the probe's read empties nothing"
    uart.write(serial.IER_DLM, 1, serial.IER_RDI)
    assert not uart.read(serial.LSR, 1) & serial.LSR_DR and uart.read(serial.RBR_THR_DLL, 1) == 0
    assert levels == [1, 0]
    assert uart.read(serial.IIR_FCR, 1) & 0x0F == serial.IIR_RDI, "identified: the line sends (trigger level 1)"
    assert levels == [1, 0, 1]
    assert bytes(uart.read(serial.RBR_THR_DLL, 1) for _ in range(8)) == b"echo hi\n"
    assert levels == [1, 0, 1, 0]
    uart.close()


def test_uart_guest_waiting_for_its_first_receive_interrupt_gets_it():
    raised = threading.Event()
    uart = Uart16550(io.BytesIO(), SerialInput(io.BytesIO(b"x")), lambda level: raised.set() if level else None)
    uart.write(serial.IER_DLM, 1, serial.IER_RDI)         # then it halts, reading no IIR
    assert raised.wait(5), "no receive interrupt"
    assert uart.read(serial.IIR_FCR, 1) & 0x0F == serial.IIR_RDI and uart.read(serial.RBR_THR_DLL, 1) == ord("x")
    uart.close()


def test_uart_polling_guest_gets_input_at_once():
    uart = Uart16550(io.BytesIO(), SerialInput(io.BytesIO(b"x")))
    assert uart.read(serial.LSR, 1) & serial.LSR_DR and uart.read(serial.RBR_THR_DLL, 1) == ord("x")
