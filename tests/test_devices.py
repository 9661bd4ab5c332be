"""Devices and buses on their own, driven the way a guest drives them."""
import io

import pytest

from vmm.devices import serial
from vmm.devices.bus import MAX_COUNTED_ADDRESSES, BusConflict, MmioBus, PortBus
from vmm.devices.debug_exit import exit_status
from vmm.devices.serial import SerialInput, Uart16550


class FakeIo:
    def __init__(self, port, size, is_write, data):
        self.port, self.size, self.is_write = port, size, is_write
        self.data = memoryview(bytearray(data))
        self.count = len(data) // size


class FakeMmio:
    def __init__(self, address, length, is_write, data=b""):
        self.phys_addr, self.length, self.is_write = address, length, is_write
        self.data = memoryview(bytearray(data.ljust(length, b"\0")))


def test_uart_polled_output_and_lsr():
    out = io.BytesIO()
    uart = Uart16550(out)
    assert uart.read(serial.LSR, 1) == serial.LSR_THRE | serial.LSR_TEMT
    for byte in b"hi\n":
        uart.write(serial.RBR_THR_DLL, 1, byte)
    assert out.getvalue() == b"hi\n"


def test_uart_buffers_until_newline_and_flushes_on_demand():
    out = io.BytesIO()
    uart = Uart16550(out)
    uart.write(serial.RBR_THR_DLL, 1, ord("x"))
    assert out.getvalue() == b""
    uart.flush()
    assert out.getvalue() == b"x"


def test_uart_divisor_latch_scratch_and_line_control():
    uart = Uart16550()
    uart.write(serial.LCR, 1, serial.LCR_DLAB | 0x03)
    uart.write(serial.RBR_THR_DLL, 1, 0x01)
    uart.write(serial.IER_DLM, 1, 0x00)
    assert (uart.read(serial.RBR_THR_DLL, 1), uart.read(serial.IER_DLM, 1)) == (0x01, 0x00)
    uart.write(serial.LCR, 1, 0x03)
    assert uart.read(serial.LCR, 1) == 0x03 and uart.bytes_written == 0
    uart.write(serial.SCR, 1, 0x5A)
    assert uart.read(serial.SCR, 1) == 0x5A
    assert uart.read(serial.MSR, 1) == serial.MSR_DCD | serial.MSR_DSR | serial.MSR_CTS


def test_uart_receive_and_data_ready():
    uart = Uart16550(input=SerialInput(io.BytesIO(b"ab")))
    assert uart.read(serial.LSR, 1) & serial.LSR_DR
    assert (uart.read(serial.RBR_THR_DLL, 1), uart.read(serial.RBR_THR_DLL, 1)) == (ord("a"), ord("b"))
    assert not uart.read(serial.LSR, 1) & serial.LSR_DR


def test_uart_loopback_and_interrupt_identification():
    levels = []
    uart = Uart16550(io.BytesIO(), irq_line=levels.append)
    uart.write(serial.MCR, 1, serial.MCR_LOOP)
    uart.write(serial.RBR_THR_DLL, 1, 0x42)
    assert uart.read(serial.LSR, 1) & serial.LSR_DR
    assert uart.read(serial.RBR_THR_DLL, 1) == 0x42
    assert uart.read(serial.IIR_FCR, 1) == serial.IIR_NO_INT
    uart.write(serial.IER_DLM, 1, serial.IER_THRI)
    assert levels == [1]
    assert uart.read(serial.IIR_FCR, 1) == serial.IIR_THRI
    assert uart.read(serial.IIR_FCR, 1) == serial.IIR_NO_INT and levels == [1, 0]
    uart.write(serial.IIR_FCR, 1, serial.FCR_FIFO_ENABLE)
    assert uart.read(serial.IIR_FCR, 1) == serial.IIR_NO_INT | serial.IIR_FIFO_ENABLED


def test_port_bus_routes_string_io_and_answers_unclaimed_with_all_ones():
    out = io.BytesIO()
    bus = PortBus()
    uart = Uart16550(out)
    bus.register(uart, serial.COM1_BASE, serial.PORT_COUNT)
    bus.handle(FakeIo(0x3F8, 1, True, b"string\n"))
    assert out.getvalue() == b"string\n"
    read = FakeIo(0x80, 2, False, bytes(6))
    bus.handle(read)
    assert bytes(read.data) == b"\xff" * 6 and bus.unclaimed_reads == {0x80: 3}
    bus.handle(FakeIo(0x80, 4, True, bytes(8)))
    assert bus.unclaimed_writes == {0x80: 2}
    with pytest.raises(BusConflict):
        bus.register(uart, 0x3FF, 2)


def test_mmio_bus_counts_unclaimed_addresses_with_a_bound():
    bus = MmioBus()
    read = FakeMmio(0xFEE00000, 4, False)
    bus.handle(read)
    assert bytes(read.data) == b"\xff" * 4
    for address in range(MAX_COUNTED_ADDRESSES + 10):
        bus.handle(FakeMmio(address * 8, 8, True))
    assert len(bus.unclaimed_writes) == MAX_COUNTED_ADDRESSES + 1
    assert bus.unclaimed_writes["other"] == 10


def test_mmio_bus_dispatches_by_range():
    class Register:
        value = 0

        def read(self, offset, size):
            return self.value + offset

        def write(self, offset, size, value):
            self.value = value

    bus = MmioBus()
    register = Register()
    bus.register(register, 0xD0000000, 0x1000)
    bus.handle(FakeMmio(0xD0000000, 4, True, (0x1234).to_bytes(4, "little")))
    read = FakeMmio(0xD0000008, 8, False)
    bus.handle(read)
    assert int.from_bytes(read.data, "little") == 0x123C
    with pytest.raises(BusConflict):
        bus.register(register, 0xD0000FFF, 2)
    straddling = FakeMmio(0xD0000FFC, 8, False)
    bus.handle(straddling)
    assert bytes(straddling.data) == b"\xff" * 8


@pytest.mark.parametrize("value, status", [(0, 1), (1, 3), (42, 85), (0x7F, 0xFF), (0x80, 1), (0xFFFFFFFF, 0xFF)])
def test_debug_exit_status_matches_qemu(value, status):
    assert exit_status(value) == status
