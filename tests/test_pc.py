"""The minimal PC: fw_cfg and PCI as QEMU answers them, the in-kernel chipset, COM1 on IRQ 4."""
import struct

import pytest

import kvm_abi
from vmm.devices.fw_cfg import FwCfg, pc_items
from vmm.devices.pci import PciHost
from vmm.devices.serial import IER_DLM, IER_THRI, IIR_FCR
from vmm.errors import BadInput
from vmm.kvm import exits

SELECTOR, DATA = 0, 1


def port_access(bus, port, size, value=None):
    """One guest access to `port` through the bus, as an I/O exit brings it; a read returns
    the value."""
    data = memoryview(bytearray(value.to_bytes(size, "little") if value is not None else size))
    bus.handle(exits.Io(kvm_abi.KVM_EXIT_IO, port, size, 1, value is not None, data))
    return int.from_bytes(data, "little")


def read_item(device, key, length):
    device.write(SELECTOR, 2, key)
    return bytes(device.read(DATA, 1) for _ in range(length))


def test_fw_cfg_items_as_qemu_defines_them():
    device = FwCfg(pc_items(128 << 20, 4))
    assert read_item(device, 0x00, 4) == b"QEMU"
    assert read_item(device, 0x01, 4) == struct.pack("<I", 1)     # traditional interface, no DMA
    assert read_item(device, 0x03, 8) == struct.pack("<Q", 128 << 20)
    assert read_item(device, 0x05, 2) == struct.pack("<H", 4)
    assert read_item(device, 0x19, 4) == b"\0\0\0\0"               # an empty file directory


def test_fw_cfg_reads_past_the_end_or_of_unknown_items_are_zero():
    device = FwCfg(pc_items(64 << 20, 1))
    assert read_item(device, 0x05, 4) == b"\x01\x00\x00\x00"
    assert read_item(device, 0x1234, 3) == b"\0\0\0"


def test_fw_cfg_selecting_restarts_the_item_and_wide_reads_are_little_endian():
    device = FwCfg(pc_items(64 << 20, 1))
    device.write(SELECTOR, 2, 0)
    assert device.read(DATA, 1) == ord("Q")
    device.write(SELECTOR, 2, 0)
    assert device.read(DATA, 4) == int.from_bytes(b"QEMU", "little")


def test_pci_bus_holds_only_the_host_bridge():
    host = PciHost()
    host.write(0, 4, 0x80000000)              # bus 0, device 0, function 0, register 0
    assert host.read(0, 4) == 0x80000000
    assert host.read(4, 4) == 0x12378086      # i440FX: device 1237, vendor 8086
    host.write(0, 4, 0x80000008)              # revision and class
    assert (host.read(4, 1), host.read(7, 1), host.read(6, 2)) == (0x02, 0x06, 0x0600)
    host.write(0, 4, 0x8000000C)
    assert host.read(6, 1) == 0x00            # header type 0
    host.write(0, 4, 0x80000800)              # device 1: nothing there
    assert host.read(4, 4) == 0xFFFFFFFF and host.read(6, 2) == 0xFFFF
    host.write(4, 4, 0x12345678)              # the host bridge's registers are read-only here
    host.write(0, 4, 0x80000000)
    assert host.read(4, 4) == 0x12378086


@pytest.mark.kvm
def test_pc_machine_ports(machine):
    vm = machine(mem_size=32 << 20, vcpus=2, machine_type="pc")
    port_access(vm.ports, 0x510, 2, 0x05)                      # fw_cfg: select the CPU count
    assert port_access(vm.ports, 0x511, 1) == 2
    port_access(vm.ports, 0xCF8, 4, 0x80000800)                # PCI: bus 0, device 1, register 0
    assert port_access(vm.ports, 0xCF8, 4) == 0x80000800
    assert port_access(vm.ports, 0xCFC, 4) == 0xFFFFFFFF       # no device
    port_access(vm.ports, 0x3FF, 1, 0x5A)                      # COM1's scratch register
    assert port_access(vm.ports, 0x3FF, 1) == 0x5A
    assert not vm.ports.unclaimed_reads and not vm.ports.unclaimed_writes, (
        f"unclaimed: {vm.ports.unclaimed_reads}, {vm.ports.unclaimed_writes}")


@pytest.mark.kvm
def test_bare_machine_has_no_pc_devices(machine):
    vm = machine(mem_size=32 << 20)
    port_access(vm.ports, 0x510, 2, 0x05)
    assert port_access(vm.ports, 0x511, 1) == 0xFF
    assert port_access(vm.ports, 0xCF8, 4) == 0xFFFFFFFF
    assert (dict(vm.ports.unclaimed_writes), dict(vm.ports.unclaimed_reads)) == ({0x510: 1}, {0x511: 1, 0xCF8: 1})


@pytest.mark.kvm
def test_com1_raises_irq_4_through_the_in_kernel_irqchip(machine, monkeypatch):
    vm = machine(mem_size=32 << 20, machine_type="pc")
    lines = []
    real_irq_line = vm.vm.irq_line
    monkeypatch.setattr(vm.vm, "irq_line", lambda irq, level: (lines.append((irq, level)), real_irq_line(irq, level)))
    vm.serial.write(IER_DLM, 1, IER_THRI)     # enable the transmitter-empty interrupt: raised at once
    vm.serial.read(IIR_FCR, 1)                # reading IIR acknowledges it
    assert lines == [(4, 1), (4, 0)]


@pytest.mark.kvm
def test_unknown_machine_is_bad_input(machine):
    with pytest.raises(BadInput, match="unknown machine 'isa'"):
        machine(machine_type="isa")
