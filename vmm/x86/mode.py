"""CPU modes, the privilege level, and the linear address of RIP.

Outside 64-bit mode the code segment's base is added to RIP and the sum wraps at 4 GiB; in
64-bit mode CS has no base. A CodeSegment keeps the two numbers that express both, so a hot
loop computes (base + rip) & mask without looking at the mode again.
"""
from dataclasses import dataclass

from .registers import CR0_PE, EFER_LMA, RFLAGS_VM

_WRAP_32 = (1 << 32) - 1
_WRAP_64 = (1 << 64) - 1


def cpu_mode(sregs):
    """('real' | 'protected' | 'long', code size in bits) of a struct kvm_sregs."""
    if not sregs.cr0 & CR0_PE:
        return "real", 16
    if sregs.efer & EFER_LMA and sregs.cs.l:
        return "long", 64
    return ("long" if sregs.efer & EFER_LMA else "protected"), (32 if sregs.cs.db else 16)


def privilege_level(sregs, rflags):
    """The CPL: 0 in real mode, 3 in virtual-8086 mode, else the RPL of CS (the CPU keeps the
    CPL there, conforming code segments included)."""
    if not sregs.cr0 & CR0_PE:
        return 0
    if rflags & RFLAGS_VM:
        return 3
    return sregs.cs.selector & 3


@dataclass(slots=True, frozen=True)
class CodeSegment:
    """What turns RIP into a linear address: linear = (base + rip) & mask."""

    base: int
    mask: int

    def linear(self, rip):
        return (self.base + rip) & self.mask


def code_segment(sregs):
    if sregs.efer & EFER_LMA and sregs.cs.l:
        return CodeSegment(0, _WRAP_64)
    return CodeSegment(sregs.cs.base, _WRAP_32)


def linear_rip(rip, sregs):
    """The linear address of the instruction at RIP."""
    return code_segment(sregs).linear(rip)
