"""The QEMU-compatible PC: what `--machine pc` adds to the bare machine.

KVM's in-kernel chipset (LAPICs, IOAPIC, PIC, PIT), the firmware configuration device,
a PCI bus with only its host bridge, COM1 wired to IRQ 4, the CMOS RTC, the i8042 (for its reset line),
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
from ..devices.pci import PCI_CONFIG_ADDRESS, PciHost
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


# What a PC BIOS leaves behind for a kernel it boots (SeaBIOS's choices): the PICs
# initialised with vector bases 0x08 and 0x70, only the timer and the cascade unmasked,
# the PIT's channel 0 ticking at 18.2 Hz, and a real-mode interrupt vector table whose
# handlers acknowledge hardware interrupts and return. Real-mode guests (kvm-unit-tests'
# realmode) rely on it; kernels reprogram all of it.
MASTER_VECTOR_BASE, SLAVE_VECTOR_BASE = 0x08, 0x70
MASTER_IMR, SLAVE_IMR = 0xFA, 0xFF
PIT_MODE_RATE_GENERATOR, PIT_ACCESS_LOHI, PIT_COUNT_18_2_HZ = 2, 3, 0x10000
IVT_SIZE = 0x400
BIOS_SEGMENT = 0xF000
HANDLERS_AT = 0xFE000                      # in the BIOS area, clear of the ACPI tables
IRET = b"\xCF"
MASTER_EOI = b"\x50\xB0\x20\xE6\x20\x58\xCF"           # push ax; mov al,0x20; out 0x20,al; pop ax; iret
SLAVE_EOI = b"\x50\xB0\x20\xE6\xA0\xE6\x20\x58\xCF"   # ... out 0xa0,al; out 0x20,al ...


def set_legacy_state(vm, memory):
    """The PIC, PIT and interrupt vector table as a PC BIOS leaves them; returns the
    (start, end, what) ranges of guest memory it wrote."""
    for chip_id, base, imr in ((kvm_abi.KVM_IRQCHIP_PIC_MASTER, MASTER_VECTOR_BASE, MASTER_IMR),
                               (kvm_abi.KVM_IRQCHIP_PIC_SLAVE, SLAVE_VECTOR_BASE, SLAVE_IMR)):
        chip = vm.get_irqchip(chip_id)
        chip.chip.pic.irq_base = base
        chip.chip.pic.imr = imr
        chip.chip.pic.init4 = 1
        vm.set_irqchip(chip)
    pit = vm.get_pit2()
    channel = pit.channels[0]
    channel.count, channel.mode, channel.rw_mode, channel.gate = (PIT_COUNT_18_2_HZ, PIT_MODE_RATE_GENERATOR,
                                                                  PIT_ACCESS_LOHI, 1)
    vm.set_pit2(pit)
    handlers = IRET + MASTER_EOI + SLAVE_EOI
    iret_at, master_at, slave_at = HANDLERS_AT, HANDLERS_AT + 1, HANDLERS_AT + 1 + len(MASTER_EOI)
    vectors = []
    for vector in range(256):
        handler = iret_at
        if MASTER_VECTOR_BASE <= vector < MASTER_VECTOR_BASE + 8:
            handler = master_at
        elif SLAVE_VECTOR_BASE <= vector < SLAVE_VECTOR_BASE + 8:
            handler = slave_at
        vectors.append(struct.pack("<HH", handler - (BIOS_SEGMENT << 4), BIOS_SEGMENT))
    memory.write(0, b"".join(vectors))
    memory.write(HANDLERS_AT, handlers)
    return [(0, IVT_SIZE, "the real-mode interrupt vector table"),
            (HANDLERS_AT, HANDLERS_AT + len(handlers), "the BIOS interrupt handlers")]


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
    ports.register(PciHost(), PCI_CONFIG_ADDRESS, PCI_PORTS)
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
