"""KVM ioctl request numbers, built like the kernel's _IO/_IOR/_IOW/_IOWR."""
from .layouts import ffi

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2

KVMIO = 0xAE


def _ioc(direction, nr, ctype):
    size = ffi.sizeof(ctype) if ctype else 0
    return ((direction << _IOC_DIRSHIFT) | (KVMIO << _IOC_TYPESHIFT)
            | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT))


def _IO(nr):
    return _ioc(_IOC_NONE, nr, None)


def _IOR(nr, ctype):
    return _ioc(_IOC_READ, nr, ctype)


def _IOW(nr, ctype):
    return _ioc(_IOC_WRITE, nr, ctype)


def _IOWR(nr, ctype):
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctype)


# System ioctls (/dev/kvm).
KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(0x05, "struct kvm_cpuid2")

# VM ioctls.
KVM_CREATE_VCPU = _IO(0x41)
KVM_GET_DIRTY_LOG = _IOW(0x42, "struct kvm_dirty_log")
KVM_SET_USER_MEMORY_REGION = _IOW(0x46, "struct kvm_userspace_memory_region")
KVM_SET_TSS_ADDR = _IO(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(0x48, "__u64")
KVM_CREATE_IRQCHIP = _IO(0x60)
KVM_IRQ_LINE = _IOW(0x61, "struct kvm_irq_level")
KVM_GET_IRQCHIP = _IOWR(0x62, "struct kvm_irqchip")
KVM_SET_IRQCHIP = _IOR(0x63, "struct kvm_irqchip")
KVM_REGISTER_COALESCED_MMIO = _IOW(0x67, "struct kvm_coalesced_mmio_zone")
KVM_UNREGISTER_COALESCED_MMIO = _IOW(0x68, "struct kvm_coalesced_mmio_zone")
KVM_CREATE_PIT2 = _IOW(0x77, "struct kvm_pit_config")
KVM_GET_PIT2 = _IOR(0x9F, "struct kvm_pit_state2")
KVM_SET_PIT2 = _IOW(0xA0, "struct kvm_pit_state2")
KVM_SET_EXEC_TRAP = _IOW(0xE8, "struct kvm_exec_trap")  # exec-trap patch

# vCPU ioctls.
KVM_RUN = _IO(0x80)
KVM_GET_REGS = _IOR(0x81, "struct kvm_regs")
KVM_SET_REGS = _IOW(0x82, "struct kvm_regs")
KVM_GET_SREGS = _IOR(0x83, "struct kvm_sregs")
KVM_SET_SREGS = _IOW(0x84, "struct kvm_sregs")
KVM_TRANSLATE = _IOWR(0x85, "struct kvm_translation")
KVM_GET_MSRS = _IOWR(0x88, "struct kvm_msrs")
KVM_SET_CPUID2 = _IOW(0x90, "struct kvm_cpuid2")
KVM_GET_MP_STATE = _IOR(0x98, "struct kvm_mp_state")
KVM_SET_MP_STATE = _IOW(0x99, "struct kvm_mp_state")
KVM_SET_GUEST_DEBUG = _IOW(0x9B, "struct kvm_guest_debug")
KVM_GET_VCPU_EVENTS = _IOR(0x9F, "struct kvm_vcpu_events")
KVM_SET_VCPU_EVENTS = _IOW(0xA0, "struct kvm_vcpu_events")
KVM_GET_DEBUGREGS = _IOR(0xA1, "struct kvm_debugregs")
KVM_SET_DEBUGREGS = _IOW(0xA2, "struct kvm_debugregs")
KVM_ENABLE_CAP = _IOW(0xA3, "struct kvm_enable_cap")   # also a VM ioctl
KVM_SET_DEVICE_ATTR = _IOW(0xE1, "struct kvm_device_attr")
KVM_GET_DEVICE_ATTR = _IOW(0xE2, "struct kvm_device_attr")
KVM_HAS_DEVICE_ATTR = _IOW(0xE3, "struct kvm_device_attr")
KVM_GET_FPU = _IOR(0x8C, "struct kvm_fpu")
KVM_SET_FPU = _IOW(0x8D, "struct kvm_fpu")

# Names of the ioctls above, for error messages and the probe test.
IOCTL_NAMES = {value: name for name, value in globals().items()
               if name.startswith("KVM_")}
