"""The VM file descriptor."""
import os

import kvm_abi

from . import libc
from .vcpu import Vcpu


class Vm(libc.FileDescriptor):
    """A KVM virtual machine (the fd KVM_CREATE_VM returned)."""

    def __init__(self, fd, kvm):
        super().__init__(fd)
        self.kvm = kvm

    def check_extension(self, capability):
        """KVM_CHECK_EXTENSION on the VM fd (per-VM answers, e.g. the exec trap)."""
        return libc.ioctl(self.fd, kvm_abi.KVM_CHECK_EXTENSION, capability)

    def enable_cap(self, capability, *args):
        """KVM_ENABLE_CAP on the VM fd with up to four arguments."""
        request = libc.ffi.new("struct kvm_enable_cap *", {"cap": capability, "args": list(args)})
        libc.ioctl(self.fd, kvm_abi.KVM_ENABLE_CAP, request)

    def set_user_memory_region(self, slot, guest_phys_addr, memory_size, userspace_addr, flags=0):
        region = libc.ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr,
            "memory_size": memory_size, "userspace_addr": userspace_addr})
        libc.ioctl(self.fd, kvm_abi.KVM_SET_USER_MEMORY_REGION, region)

    def get_dirty_log(self, slot, pages):
        """KVM_GET_DIRTY_LOG: the bitmap of a slot's pages written since the last call (one bit
        per page, as 64-bit words), which KVM then clears and write-protects again."""
        bitmap = libc.ffi.new("__u64[]", (pages + 63) // 64)
        log = libc.ffi.new("struct kvm_dirty_log *", {"slot": slot})
        log.dirty_bitmap = bitmap
        libc.ioctl(self.fd, kvm_abi.KVM_GET_DIRTY_LOG, log)
        return bitmap

    def set_tss_addr(self, address):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_TSS_ADDR, address)

    def set_identity_map_addr(self, address):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_IDENTITY_MAP_ADDR, libc.ffi.new("__u64 *", address))

    def create_irqchip(self):
        libc.ioctl(self.fd, kvm_abi.KVM_CREATE_IRQCHIP)

    def create_pit2(self, flags=0):
        libc.ioctl(self.fd, kvm_abi.KVM_CREATE_PIT2, libc.ffi.new("struct kvm_pit_config *", {"flags": flags}))

    def get_irqchip(self, chip_id):
        """KVM_GET_IRQCHIP: the state of one in-kernel interrupt controller (PIC master or slave)."""
        chip = libc.ffi.new("struct kvm_irqchip *", {"chip_id": chip_id})
        libc.ioctl(self.fd, kvm_abi.KVM_GET_IRQCHIP, chip)
        return chip

    def set_irqchip(self, chip):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_IRQCHIP, chip)

    def get_pit2(self):
        state = libc.ffi.new("struct kvm_pit_state2 *")
        libc.ioctl(self.fd, kvm_abi.KVM_GET_PIT2, state)
        return state

    def set_pit2(self, state):
        libc.ioctl(self.fd, kvm_abi.KVM_SET_PIT2, state)

    def irq_line(self, irq, level):
        libc.ioctl(self.fd, kvm_abi.KVM_IRQ_LINE, libc.ffi.new("struct kvm_irq_level *", {"irq": irq, "level": level}))

    def register_coalesced_mmio(self, gpa, size):
        """Guest writes to [gpa, gpa + size) that would exit as MMIO go to the coalesced ring
        instead (reads still exit)."""
        zone = libc.ffi.new("struct kvm_coalesced_mmio_zone *", {"addr": gpa, "size": size})
        libc.ioctl(self.fd, kvm_abi.KVM_REGISTER_COALESCED_MMIO, zone)

    def unregister_coalesced_mmio(self, gpa, size):
        zone = libc.ffi.new("struct kvm_coalesced_mmio_zone *", {"addr": gpa, "size": size})
        libc.ioctl(self.fd, kvm_abi.KVM_UNREGISTER_COALESCED_MMIO, zone)

    def set_exec_trap(self, gpa, size, mark):
        """The exec-trap patch's KVM_SET_EXEC_TRAP: mark (or clear) a page-aligned gpa range."""
        trap = libc.ffi.new("struct kvm_exec_trap *", {
            "address": gpa, "size": size, "attributes": kvm_abi.KVM_EXEC_TRAP_ATTR_NX if mark else 0})
        libc.ioctl(self.fd, kvm_abi.KVM_SET_EXEC_TRAP, trap)

    def create_vcpu(self, vcpu_id):
        fd = libc.ioctl(self.fd, kvm_abi.KVM_CREATE_VCPU, vcpu_id)
        try:
            return Vcpu(fd, vcpu_id, self.kvm.vcpu_mmap_size())
        except BaseException:
            os.close(fd)
            raise
