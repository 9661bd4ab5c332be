"""The KVM file descriptors over kvm_abi, as rust-vmm's kvm-ioctls is to kvm-bindings: /dev/kvm
(Kvm), a VM (Vm) and a vCPU (Vcpu), one small class each, every ioctl through cffi (libc), a
failed one raising KvmError; Vcpu.run() returns a typed exit (exits)."""
from ..errors import KvmError, KvmUnavailable
from . import exits
from .system import KVM_DEVICE, Kvm
from .vcpu import NO_DEBUGGER, DebuggerState, Vcpu, install_kick_handler, kick_handler_installed
from .vm import Vm

__all__ = ["KVM_DEVICE", "NO_DEBUGGER", "DebuggerState", "Kvm", "KvmError", "KvmUnavailable", "Vcpu", "Vm",
           "exits", "install_kick_handler", "kick_handler_installed"]
