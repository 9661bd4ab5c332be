"""The system file descriptor: /dev/kvm."""
import errno
import os

import kvm_abi

from . import libc
from ..errors import KvmError, KvmUnavailable
from .vm import Vm

KVM_DEVICE = "/dev/kvm"


class Kvm(libc.FileDescriptor):
    """An open /dev/kvm."""

    def __init__(self, path=KVM_DEVICE):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmUnavailable(f"{path} does not exist: KVM is not available on this host") from None
        except PermissionError:
            raise KvmUnavailable(f"permission denied opening {path}: run as root or join the 'kvm' group") from None
        except OSError as error:
            raise KvmUnavailable(f"cannot open {path}: {error.strerror}") from None
        try:
            version = libc.ioctl(self.fd, kvm_abi.KVM_GET_API_VERSION)
            if version != kvm_abi.KVM_API_VERSION:
                raise KvmUnavailable(f"{path} speaks KVM API version {version}, expected {kvm_abi.KVM_API_VERSION}")
        except BaseException:
            self.close()
            raise

    def check_extension(self, capability):
        """KVM_CHECK_EXTENSION on the system fd: 0 when absent, else the capability's value."""
        return libc.ioctl(self.fd, kvm_abi.KVM_CHECK_EXTENSION, capability)

    def vcpu_mmap_size(self):
        return libc.ioctl(self.fd, kvm_abi.KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self):
        """KVM_GET_SUPPORTED_CPUID as a list of dicts (function, index, flags, eax..edx)."""
        count = 64
        while True:
            buf = libc.ffi.new("char[]", libc.ffi.sizeof("struct kvm_cpuid2")
                               + count * libc.ffi.sizeof("struct kvm_cpuid_entry2"))
            header = libc.ffi.cast("struct kvm_cpuid2 *", buf)
            header.nent = count
            try:
                libc.ioctl(self.fd, kvm_abi.KVM_GET_SUPPORTED_CPUID, header)
            except KvmError as error:
                if error.errno == errno.E2BIG and count < 4096:
                    count *= 2
                    continue
                raise
            return [{name: getattr(header.entries[i], name)
                     for name in ("function", "index", "flags", "eax", "ebx", "ecx", "edx")}
                    for i in range(header.nent)]

    def create_vm(self):
        return Vm(libc.ioctl(self.fd, kvm_abi.KVM_CREATE_VM, 0), self)
