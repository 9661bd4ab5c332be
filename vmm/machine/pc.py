"""The minimal QEMU-compatible PC: what `--machine pc` adds to the bare machine.

KVM's in-kernel chipset (LAPICs, IOAPIC, PIC, PIT), the firmware configuration
device, an empty PCI bus, and COM1 wired to IRQ 4. The chipset must exist
before the vCPUs are created; devices are added once the buses exist.
"""
import kvm_abi

from ..devices.fw_cfg import FW_CFG_PORT_SEL, FwCfg, pc_items
from ..devices.fw_cfg import PORT_COUNT as FW_CFG_PORTS
from ..devices.pci import PCI_CONFIG_ADDRESS, EmptyPciHost
from ..devices.pci import PORT_COUNT as PCI_PORTS
from ..devices.serial import COM1_IRQ

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


def add_devices(ports, ram_size, cpu_count):
    ports.register(FwCfg(pc_items(ram_size, cpu_count)), FW_CFG_PORT_SEL, FW_CFG_PORTS)
    ports.register(EmptyPciHost(), PCI_CONFIG_ADDRESS, PCI_PORTS)


def hold_application_processors(vcpus):
    """Every vCPU but the first waits for INIT/SIPI from the bootstrap processor's LAPIC."""
    for vcpu in vcpus[1:]:
        vcpu.set_mp_state(kvm_abi.KVM_MP_STATE_UNINITIALIZED)
