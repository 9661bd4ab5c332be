"""What this host's KVM does with a debugger's breakpoints, measured once on throwaway VMs.

- int3 under KVM_GUESTDBG_USE_SW_BP: a stock KVM exits with KVM_EXIT_DEBUG (#BP). Some hosts
  (a paravirtual KVM) fail to emulate int3 and exit with an emulation-failure internal error at
  the int3 instead, which serves as well; some deliver it to the guest (real mode there), where
  a debugger cannot use it.
- a data breakpoint (DR7 R/W=01) on a write: a stock KVM exits with KVM_EXIT_DEBUG; some hosts
  never trigger it.
- KVM_GUESTDBG_BLOCKIRQ (no interrupt during a debugger's step): KVM_CAP_SET_GUEST_DEBUG2.
"""
import io
import struct
from dataclasses import dataclass

import kvm_abi as abi

from ..kvm import DebuggerState
from ..machine import Machine
from ..x86.boot import DEFAULT_LOAD_ADDR

INT3_BY_DEBUG_EXIT = "debug exit"
INT3_BY_EMULATION_FAILURE = "emulation failure"
_DATA = 0x180000


@dataclass(slots=True, frozen=True)
class HostDebug:
    int3: dict                 # CPU mode -> INT3_BY_* or None (the guest gets it: unusable)
    data_breakpoints: bool
    block_irq: bool

    def int3_usable(self, mode):
        return self.int3.get(mode) is not None

    def describe(self):
        int3 = "; ".join(f"{mode}: {how or 'not to the VMM'}" for mode, how in self.int3.items())
        data = "trigger" if self.data_breakpoints else "never trigger"
        return f"int3 reaches the VMM by {int3}; data breakpoints {data}"


# Real mode: the interrupt vector table's entry 3 points at a HLT, so an int3 the guest gets
# ends there instead of in whatever the empty table points to.
_REAL_MODE_VECTOR_3 = 3 * 4
_REAL_MODE_HANDLER = 0x10


def _run_once(kvm_path, code, mode, state):
    with Machine(mem_size=4 << 20, serial_output=io.BytesIO(), kvm_path=kvm_path) as machine:
        if mode == "real":
            code = code.ljust(_REAL_MODE_HANDLER, b"\x90") + bytes((0xF4,))
            machine.memory.write(_REAL_MODE_VECTOR_3,
                                 struct.pack("<HH", DEFAULT_LOAD_ADDR["real"] + _REAL_MODE_HANDLER, 0))
        machine.load(code, mode=mode)
        vcpu = machine.vcpus[0]
        vcpu.set_debugger(state)
        exit = vcpu.run()
        return exit, vcpu.get_regs().rip


def _int3(kvm_path, mode):
    # nop; int3; hlt
    start = DEFAULT_LOAD_ADDR[mode]
    exit, rip = _run_once(kvm_path, bytes((0x90, 0xCC, 0xF4)), mode, DebuggerState(software_breakpoints=True))
    if exit.reason == abi.KVM_EXIT_DEBUG and exit.exception == 3:
        return INT3_BY_DEBUG_EXIT
    if (exit.reason == abi.KVM_EXIT_INTERNAL_ERROR and exit.suberror == abi.KVM_INTERNAL_ERROR_EMULATION
            and rip == start + 1):
        return INT3_BY_EMULATION_FAILURE
    return None


def _data_breakpoints(kvm_path):
    # mov %al, (_DATA); hlt, with DR0 = _DATA, L0, R/W0 = write, LEN0 = 1 byte
    code = bytes((0x88, 0x04, 0x25)) + struct.pack("<I", _DATA) + bytes((0xF4,))
    state = DebuggerState(debugreg=(_DATA, 0, 0, 0), dr7=1 | 0b01 << 16)
    exit, _ = _run_once(kvm_path, code, "long", state)
    return exit.reason == abi.KVM_EXIT_DEBUG and bool(exit.dr6 & 1)


def probe(kvm):
    """Measure the host behind `kvm` (an open Kvm): four VMs of 4 MiB, milliseconds."""
    supported = kvm.check_extension(abi.KVM_CAP_SET_GUEST_DEBUG2)
    return HostDebug({mode: _int3(kvm.path, mode) for mode in ("long", "protected", "real")},
                     _data_breakpoints(kvm.path), bool(supported & abi.KVM_GUESTDBG_BLOCKIRQ))
