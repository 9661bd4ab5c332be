"""The VM file descriptor."""
import os

import kvm_abi

from . import sys as _sys
from .vcpu import Vcpu


class Vm(_sys.FileDescriptor):
    """A KVM virtual machine (the fd KVM_CREATE_VM returned)."""

    def __init__(self, fd, kvm):
        super().__init__(fd)
        self.kvm = kvm

    def check_extension(self, capability):
        """KVM_CHECK_EXTENSION on the VM fd (per-VM answers, e.g. the exec trap)."""
        return _sys.ioctl(self.fd, kvm_abi.KVM_CHECK_EXTENSION, capability)

    def set_user_memory_region(self, slot, guest_phys_addr, memory_size, userspace_addr, flags=0):
        region = _sys.ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr,
            "memory_size": memory_size, "userspace_addr": userspace_addr})
        _sys.ioctl(self.fd, kvm_abi.KVM_SET_USER_MEMORY_REGION, region)

    def set_tss_addr(self, address):
        _sys.ioctl(self.fd, kvm_abi.KVM_SET_TSS_ADDR, address)

    def set_identity_map_addr(self, address):
        _sys.ioctl(self.fd, kvm_abi.KVM_SET_IDENTITY_MAP_ADDR, _sys.ffi.new("__u64 *", address))

    def create_irqchip(self):
        _sys.ioctl(self.fd, kvm_abi.KVM_CREATE_IRQCHIP)

    def create_pit2(self, flags=0):
        _sys.ioctl(self.fd, kvm_abi.KVM_CREATE_PIT2, _sys.ffi.new("struct kvm_pit_config *", {"flags": flags}))

    def irq_line(self, irq, level):
        _sys.ioctl(self.fd, kvm_abi.KVM_IRQ_LINE, _sys.ffi.new("struct kvm_irq_level *", {"irq": irq, "level": level}))

    def set_exec_trap(self, gpa, size, mark):
        """The exec-trap patch's KVM_SET_EXEC_TRAP: mark (or clear) a page-aligned gpa range."""
        trap = _sys.ffi.new("struct kvm_exec_trap *", {
            "gpa": gpa, "size": size, "flags": kvm_abi.KVM_EXEC_TRAP_SET if mark else 0})
        _sys.ioctl(self.fd, kvm_abi.KVM_SET_EXEC_TRAP, trap)

    def create_vcpu(self, vcpu_id):
        fd = _sys.ioctl(self.fd, kvm_abi.KVM_CREATE_VCPU, vcpu_id)
        try:
            return Vcpu(fd, vcpu_id, self.kvm.vcpu_mmap_size())
        except BaseException:
            os.close(fd)
            raise
