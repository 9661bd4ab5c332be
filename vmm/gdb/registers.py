"""A vCPU's registers as a target description names them, read from KVM_GET_REGS, KVM_GET_SREGS
and KVM_GET_FPU once per stop and written back with the matching set ioctl.

KVM keeps the x87 state in FXSAVE form: an abridged tag byte (one "not empty" bit per physical
register) and the stack registers in ST order. gdb wants the full tag word (two bits per
physical register: valid, zero, special, empty), computed here as FXSAVE's readers do.
"""
from .tdesc import FPU, REGS, SEGMENT_BASE, SREGS

_TAG_VALID, _TAG_ZERO, _TAG_SPECIAL, _TAG_EMPTY = 0, 1, 2, 3
_EXPONENT_MASK = 0x7FFF
_INTEGER_BIT = 1 << 63


def _tag_of(value):
    """The tag of an 80-bit register that is not empty."""
    exponent = (value >> 64) & _EXPONENT_MASK
    mantissa = value & ((1 << 64) - 1)
    if exponent == _EXPONENT_MASK:
        return _TAG_SPECIAL
    if exponent == 0:
        return _TAG_ZERO if mantissa == 0 else _TAG_SPECIAL
    return _TAG_VALID if mantissa & _INTEGER_BIT else _TAG_SPECIAL


def full_tag(abridged, fsw, stack):
    """The x87 tag word from FXSAVE's abridged tag, the status word (its TOP field) and the
    eight registers in ST order."""
    top = (fsw >> 11) & 7
    tag = 0
    for physical in range(8):
        if abridged & (1 << physical):
            kind = _tag_of(stack[(physical - top) & 7])
        else:
            kind = _TAG_EMPTY
        tag |= kind << (2 * physical)
    return tag


def abridged_tag(tag):
    return sum(1 << physical for physical in range(8) if (tag >> (2 * physical)) & 3 != _TAG_EMPTY)


class RegisterFile:
    """The registers of one vCPU under one layout: values() and set() by register number,
    flush() to write what changed."""

    def __init__(self, vcpu, layout):
        self._vcpu = vcpu
        self.layout = layout
        self._regs = vcpu.get_regs()
        self._sregs = vcpu.get_sregs()
        self._fpu = vcpu.get_fpu()
        self._dirty = set()

    def _stack(self):
        return [int.from_bytes(bytes(self._fpu.fpr[i])[:10], "little") for i in range(8)]

    def value(self, number):
        register = self.layout.registers[number]
        where, field = register.source
        if where == REGS:
            value = getattr(self._regs, field)
        elif where == SREGS:
            value = getattr(self._sregs, field)
            if not isinstance(value, int):
                value = value.selector
        elif where == SEGMENT_BASE:
            value = getattr(self._sregs, field).base
        else:
            value = self._fpu_value(field)
        return value & ((1 << register.bits) - 1)

    def _fpu_value(self, field):
        fpu = self._fpu
        if isinstance(field, int):
            return int.from_bytes(bytes(fpu.fpr[field])[:10], "little")
        if field.startswith("xmm"):
            return int.from_bytes(bytes(fpu.xmm[int(field[3:])]), "little")
        return {"fctrl": lambda: fpu.fcw, "fstat": lambda: fpu.fsw,
                "ftag": lambda: full_tag(fpu.ftwx, fpu.fsw, self._stack()),
                "fiseg": lambda: fpu.last_ip >> 32, "fioff": lambda: fpu.last_ip & 0xFFFFFFFF,
                "foseg": lambda: fpu.last_dp >> 32, "fooff": lambda: fpu.last_dp & 0xFFFFFFFF,
                "fop": lambda: fpu.last_opcode & 0x7FF, "mxcsr": lambda: fpu.mxcsr}[field]()

    def encode(self, number):
        register = self.layout.registers[number]
        return self.value(number).to_bytes(register.bits // 8, "little")

    def encode_all(self):
        return b"".join(self.encode(number) for number in range(len(self.layout.registers)))

    def set(self, number, value):
        """Change one register (value already bounded to its width); flush() writes it."""
        register = self.layout.registers[number]
        where, field = register.source
        if where == REGS:
            if field == "rflags":
                value |= self._regs.rflags & ~0xFFFFFFFF
            setattr(self._regs, field, value)
            self._dirty.add(REGS)
        elif where == SREGS:
            if isinstance(getattr(self._sregs, field), int):
                setattr(self._sregs, field, value)
            else:
                getattr(self._sregs, field).selector = value & 0xFFFF
            self._dirty.add(SREGS)
        elif where == SEGMENT_BASE:
            getattr(self._sregs, field).base = value
            self._dirty.add(SREGS)
        else:
            self._set_fpu(field, value)
            self._dirty.add(FPU)

    def _set_fpu(self, field, value):
        fpu = self._fpu
        if isinstance(field, int):
            fpu.fpr[field][0:10] = list(value.to_bytes(10, "little"))
        elif field.startswith("xmm"):
            fpu.xmm[int(field[3:])][0:16] = list(value.to_bytes(16, "little"))
        elif field == "fctrl":
            fpu.fcw = value & 0xFFFF
        elif field == "fstat":
            fpu.fsw = value & 0xFFFF
        elif field == "ftag":
            fpu.ftwx = abridged_tag(value)
        elif field in ("fiseg", "fioff"):
            high, low = fpu.last_ip >> 32, fpu.last_ip & 0xFFFFFFFF
            fpu.last_ip = (value << 32 | low) if field == "fiseg" else (high << 32 | value)
        elif field in ("foseg", "fooff"):
            high, low = fpu.last_dp >> 32, fpu.last_dp & 0xFFFFFFFF
            fpu.last_dp = (value << 32 | low) if field == "foseg" else (high << 32 | value)
        elif field == "fop":
            fpu.last_opcode = value & 0x7FF
        else:
            fpu.mxcsr = value

    def flush(self):
        """Write the changed structures back (a KvmError when KVM refuses a value)."""
        dirty, self._dirty = self._dirty, set()
        if REGS in dirty:
            self._vcpu.set_regs(self._regs)
        if SREGS in dirty:
            self._vcpu.set_sregs(self._sregs)
        if FPU in dirty:
            self._vcpu.set_fpu(self._fpu)
