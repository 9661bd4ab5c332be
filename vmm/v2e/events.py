"""What the V2E engine reports: events (entries into the watched pages), steps (traced
instructions), and the analysis's decisions about them."""
import enum
from dataclasses import dataclass
from types import SimpleNamespace

from ..x86.mode import privilege_level
from ..x86.registers import general_registers_as_dict


class Decision(enum.Enum):
    """What the analysis wants for an event (or, from an instruction callback, from now on)."""
    TRACE = "trace"             # record every instruction until execution leaves the watched pages
    UNRECORDED = "unrecorded"   # step it as TRACE does (the guest sees the same), record nothing
    STOP = "stop"               # stop the guest now


@dataclass(slots=True, repr=False)
class EmulateEvent:
    """One entry into the watched pages, whichever backend trapped it: the first instruction's
    guest-physical and linear address and RIP, the CPU mode, the registers before it (regs,
    sregs: dicts; cpl and cr3 come from them), and the watched page it touches (its own page,
    or the next one for an instruction that runs into a watched page)."""

    index: int
    vcpu_id: int
    backend: str
    gpa: int
    gva: int | None
    rip: int
    mode: str
    regs: dict
    sregs: dict
    page: int

    @property
    def cpl(self):
        """The privilege level the first instruction runs at (3: user mode)."""
        sregs = SimpleNamespace(cr0=self.sregs["cr0"], cs=SimpleNamespace(selector=self.sregs["cs"]["selector"]))
        return privilege_level(sregs, self.regs["rflags"])

    @property
    def cr3(self):
        """CR3 at the event: which address space the code runs in."""
        return self.sregs["cr3"]

    def __repr__(self):
        gva = "None" if self.gva is None else f"{self.gva:#x}"
        return (f"EmulateEvent(#{self.index}, vcpu={self.vcpu_id}, backend={self.backend}, "
                f"gpa={self.gpa:#x}, gva={gva}, rip={self.rip:#x}, cpl={self.cpl}, cr3={self.cr3:#x})")


@dataclass(slots=True, repr=False)
class Step:
    """One traced instruction: where it was, its bytes, the registers after it (values: a
    tuple in GENERAL_REGISTERS order; regs: the same as a dict), and its memory operands as
    (linear address, size, the bytes there after it or None when they cannot be read)."""

    event: EmulateEvent
    index: int
    rip: int
    gpa: int
    code: bytes
    values: tuple
    memory: tuple = ()

    @property
    def regs(self):
        return general_registers_as_dict(self.values)

    def __repr__(self):
        return f"Step(#{self.event.index}.{self.index}, rip={self.rip:#x}, {self.code.hex(' ')})"
