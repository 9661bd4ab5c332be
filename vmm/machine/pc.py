"""The QEMU-compatible PC: what `--machine pc` adds to the bare machine.

KVM's in-kernel chipset (LAPICs, IOAPIC, PIC, PIT), the firmware configuration device,
an empty PCI bus, COM1 wired to IRQ 4, the CMOS RTC, the i8042 (for its reset line),
the ACPI power-management block, the pvpanic device, and the ACPI tables that describe
them. The chipset must exist before the vCPUs are created; devices are added once the
buses exist.
"""
import struct
from dataclasses import dataclass

import kvm_abi

from ..devices import acpi_pm, i8042, pvpanic, rtc
from ..devices.fw_cfg import FW_CFG_PORT_SEL, FwCfg, pc_items
from ..devices.fw_cfg import PORT_COUNT as FW_CFG_PORTS
from ..devices.pci import PCI_CONFIG_ADDRESS, EmptyPciHost
from ..devices.pci import PORT_COUNT as PCI_PORTS
from ..devices.serial import COM1_IRQ
from . import acpi

MACHINES = ("pc", "bare")

# Where QEMU puts the pages KVM needs for real-mode emulation on Intel hosts:
# just below the BIOS, far above any RAM this VMM gives a guest (at most 3 GiB).
IDENTITY_MAP_ADDR = 0xFEFFC000
TSS_ADDR = 0xFFFBD000



def create_chipset(vm):
    """The in-kernel interrupt controllers and PIT; call before creating vCPUs."""
    vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
    vm.set_tss_addr(TSS_ADDR)
    vm.create_irqchip()
    vm.create_pit2(kvm_abi.KVM_PIT_SPEAKER_DUMMY)


def serial_irq(vm):
    """COM1's interrupt output, wired to IRQ 4 of the in-kernel PIC and IOAPIC."""
    return lambda level: vm.irq_line(COM1_IRQ, level)


@dataclass(slots=True)
class PcDevices:
    """The PC devices a machine keeps a hand on (the others only answer the guest), and where
    the FACS is."""

    rtc: rtc.CmosRtc
    power: acpi_pm.AcpiPm
    facs: int
    firmware_areas: list     # (start, end, what) the loaders must leave alone: the ACPI tables

    def waking_vector(self, memory):
        """The real-mode address the guest wrote into the FACS to resume at (0: none)."""
        return struct.unpack("<I", memory.read(self.facs + acpi.FACS_WAKING_VECTOR, 4))[0]


def add_devices(ports, memory, ram_size, cpu_count, on_reset, on_sleep, on_panic):
    """Register the PC's devices on the port bus and write the ACPI tables into RAM.
    on_reset() is the i8042's reset line, on_sleep(state) the ACPI sleep request (3 or 5),
    on_panic() the pvpanic report."""
    ports.register(FwCfg(pc_items(ram_size, cpu_count)), FW_CFG_PORT_SEL, FW_CFG_PORTS)
    ports.register(EmptyPciHost(), PCI_CONFIG_ADDRESS, PCI_PORTS)
    clock = rtc.CmosRtc()
    ports.register(clock, rtc.RTC_INDEX_PORT, rtc.PORT_COUNT)
    ports.register(i8042.I8042(on_reset), i8042.DATA_PORT, i8042.PORT_COUNT)
    power = acpi_pm.AcpiPm(on_sleep)
    ports.register(power, acpi_pm.PM_BASE, acpi_pm.PORT_COUNT)
    ports.register(pvpanic.PvPanic(on_panic), pvpanic.PVPANIC_PORT, 1)
    tables, facs = acpi.build(cpu_count, acpi_pm.PM_BASE)
    memory.write(acpi.RSDP_ADDR, tables)
    return PcDevices(clock, power, facs, [(acpi.RSDP_ADDR, acpi.RSDP_ADDR + len(tables), "the VMM's ACPI tables")])


def hold_application_processors(vcpus):
    """Every vCPU but the first waits for INIT/SIPI from the bootstrap processor's LAPIC."""
    for vcpu in vcpus[1:]:
        vcpu.set_mp_state(kvm_abi.KVM_MP_STATE_UNINITIALIZED)
