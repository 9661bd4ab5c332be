"""The ACPI tables the VMM writes for the PC machine, in the BIOS area where kernels look
for them (the RSDP on a 16-byte boundary in 0xe0000-0xfffff).

RSDP (revision 2) -> RSDT and XSDT -> FADT (-> FACS, DSDT) and MADT. The FADT describes the
power-management block (PM1a event and control registers, PM timer) and says there is no
SMI port (the machine is always in ACPI mode), no i8042 and no VGA; the MADT lists one
local APIC per vCPU, the I/O APIC and the SCI's interrupt override; the DSDT holds the
sleep states the PM1a control register implements (\\_S3, \\_S5, with QEMU's values) and
the pvpanic device.
"""
import struct

from ..devices.acpi_pm import (PM1_CNT_BLK, PM1_CNT_LEN, PM1_EVT_BLK, PM1_EVT_LEN, PM_TMR_BLK, PM_TMR_LEN, SCI_IRQ,
                               SLP_TYP_S3, SLP_TYP_S5)
from ..devices.pvpanic import PVPANIC_PORT
from ..devices.rtc import CENTURY_REGISTER
from ..loaders.platform import BIOS_AREA

RSDP_ADDR = BIOS_AREA[0]
LOCAL_APIC_ADDR = 0xFEE00000
IO_APIC_ADDR = 0xFEC00000
IO_APIC_ID = 0
OEM_ID = b"V2EVMM"
OEM_TABLE_ID = b"V2EVMM  "
CREATOR_ID = b"V2EV"

_HEADER = struct.Struct("<4sIBB6s8sI4sI")   # signature, length, revision, checksum, OEM ids, creator
FADT_REVISION = 3                          # ACPI 2.0: 244 bytes, with the 64-bit X_ fields
FADT_SIZE = 244
FACS_SIZE = 64
FACS_WAKING_VECTOR = 12          # offset of the 32-bit firmware waking vector

# FADT flags and IA-PC boot architecture flags.
FADT_WBINVD, FADT_C1_SUPPORTED, FADT_POWER_BUTTON_METHOD, FADT_SLEEP_BUTTON_METHOD = 1 << 0, 1 << 2, 1 << 4, 1 << 5
FADT_TMR_VAL_EXT = 1 << 8
BOOT_LEGACY_DEVICES, BOOT_NO_VGA = 1 << 0, 1 << 2   # 8042 (bit 1) clear: no PS/2 controller to probe
C2_UNSUPPORTED_LATENCY, C3_UNSUPPORTED_LATENCY = 101, 1001
GAS_SYSTEM_IO = 1

MADT_PCAT_COMPAT = 1
MADT_LOCAL_APIC, MADT_IO_APIC, MADT_OVERRIDE, MADT_LOCAL_APIC_NMI = 0, 1, 2, 4
OVERRIDE_LEVEL_HIGH = 0x000D     # polarity active high (01), trigger mode level (11)


def checksum(data):
    """The byte that makes the sum of `data` and itself 0 modulo 256."""
    return -sum(data) & 0xFF


def _table(signature, revision, body):
    length = _HEADER.size + len(body)
    header = _HEADER.pack(signature, length, revision, 0, OEM_ID, OEM_TABLE_ID, 1, CREATOR_ID, 1)
    table = bytearray(header + body)
    table[9] = checksum(table)
    return bytes(table)


# -- AML, the few constructs the DSDT needs ------------------------------------------

def _pkg_length(length):
    """AML PkgLength encoding of a package whose contents are `length` bytes (the encoding
    counts its own bytes)."""
    if length + 1 < 0x40:
        return bytes([length + 1])
    for extra in (1, 2, 3):
        total = length + 1 + extra
        if total < 1 << (4 + 8 * extra):
            return bytes([extra << 6 | (total & 0x0F)]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package of {length} bytes is too large")


def aml_integer(value):
    if value in (0, 1):
        return bytes([value])                         # ZeroOp, OneOp
    for prefix, size in ((0x0A, 1), (0x0B, 2), (0x0C, 4), (0x0E, 8)):
        if value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise ValueError(f"AML integer {value:#x} is too large")


def aml_string(text):
    return b"\x0D" + text.encode("ascii") + b"\0"


def aml_name(name, value):
    return b"\x08" + name + value


def aml_package(elements):
    body = bytes([len(elements)]) + b"".join(elements)
    return b"\x12" + _pkg_length(len(body)) + body


def aml_buffer(data):
    body = aml_integer(len(data)) + data
    return b"\x11" + _pkg_length(len(body)) + body


def aml_device(name, body):
    return b"\x5B\x82" + _pkg_length(len(name) + len(body)) + name + body


def aml_scope(path, body):
    return b"\x10" + _pkg_length(len(path) + len(body)) + path + body


def resource_io(port, length):
    """An I/O port descriptor (16-bit decode, fixed base) followed by the end tag."""
    return struct.pack("<BBHHBB", 0x47, 1, port, port, 1, length) + b"\x79\x00"


def _sleep_state(slp_typ):
    """A sleep-state package (\\_S3, \\_S5): the PM1a and PM1b SLP_TYP values and two reserved zeros."""
    return aml_package([aml_integer(slp_typ)] * 2 + [aml_integer(0)] * 2)


def dsdt_aml():
    pvpanic = aml_device(b"PEVT", aml_name(b"_HID", aml_string("QEMU0001"))
                         + aml_name(b"_CRS", aml_buffer(resource_io(PVPANIC_PORT, 1)))
                         + aml_name(b"_STA", aml_integer(0x0F)))
    return (aml_name(b"_S3_", _sleep_state(SLP_TYP_S3)) + aml_name(b"_S5_", _sleep_state(SLP_TYP_S5))
            + aml_scope(b"\\_SB_", pvpanic))


# -- the tables ------------------------------------------------------------------

def _gas(port, width_bytes):
    """A Generic Address Structure for `width_bytes` of I/O ports at `port`."""
    return struct.pack("<BBBBQ", GAS_SYSTEM_IO, 8 * width_bytes, 0, 0, port) if port else bytes(12)


def fadt(facs, dsdt, pm_base):
    pm1_evt, pm1_cnt, pm_tmr = pm_base + PM1_EVT_BLK, pm_base + PM1_CNT_BLK, pm_base + PM_TMR_BLK
    body = struct.pack(
        "<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI12sB3sQQ12s12s12s12s12s12s12s12s",
        facs, dsdt, 0, 0, SCI_IRQ, 0, 0, 0, 0, 0,            # no SMI port: always in ACPI mode
        pm1_evt, 0, pm1_cnt, 0, 0, pm_tmr, 0, 0,
        PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, 0, 0, 0, 0,
        C2_UNSUPPORTED_LATENCY, C3_UNSUPPORTED_LATENCY, 0, 0, 0, 0, 0, 0, CENTURY_REGISTER,
        BOOT_LEGACY_DEVICES | BOOT_NO_VGA, 0,
        FADT_WBINVD | FADT_C1_SUPPORTED | FADT_POWER_BUTTON_METHOD | FADT_SLEEP_BUTTON_METHOD | FADT_TMR_VAL_EXT,
        bytes(12), 0, bytes(3),                              # no reset register: the i8042 resets
        0, dsdt, _gas(pm1_evt, PM1_EVT_LEN), bytes(12), _gas(pm1_cnt, PM1_CNT_LEN), bytes(12), bytes(12),
        _gas(pm_tmr, PM_TMR_LEN), bytes(12), bytes(12))
    table = _table(b"FACP", FADT_REVISION, body)
    assert len(table) == FADT_SIZE
    return table


def facs():
    """Hardware signature 0, waking vectors 0 (the guest writes them before it sleeps)."""
    return struct.pack("<4sIIIII8xB31x", b"FACS", FACS_SIZE, 0, 0, 0, 0, 1)


def madt(cpu_count):
    entries = b"".join(struct.pack("<BBBBI", MADT_LOCAL_APIC, 8, cpu, cpu, 1) for cpu in range(cpu_count))
    entries += struct.pack("<BBBBII", MADT_IO_APIC, 12, IO_APIC_ID, 0, IO_APIC_ADDR, 0)
    # ISA IRQs map to the same I/O APIC pins (KVM's default routing), except that the SCI is
    # level-triggered, active high.
    entries += struct.pack("<BBBBIH", MADT_OVERRIDE, 10, 0, SCI_IRQ, SCI_IRQ, OVERRIDE_LEVEL_HIGH)
    entries += struct.pack("<BBBHB", MADT_LOCAL_APIC_NMI, 6, 0xFF, 0, 1)   # LINT1 of every CPU is NMI
    return _table(b"APIC", 3, struct.pack("<II", LOCAL_APIC_ADDR, MADT_PCAT_COMPAT) + entries)


def build(cpu_count, pm_base, base=RSDP_ADDR):
    """(block, FACS address): the tables as one block to write at `base`, the RSDP first,
    then RSDT, XSDT, FADT, FACS (64-byte aligned), DSDT and MADT."""
    def align(value, to):
        return (value + to - 1) & ~(to - 1)

    rsdt_at = base + 48
    rsdt_size = _HEADER.size + 4 * 2
    xsdt_at = align(rsdt_at + rsdt_size, 8)
    xsdt_size = _HEADER.size + 8 * 2
    fadt_at = align(xsdt_at + xsdt_size, 16)
    facs_at = align(fadt_at + FADT_SIZE, 64)
    dsdt_at = facs_at + FACS_SIZE
    dsdt_table = _table(b"DSDT", 2, dsdt_aml())
    madt_at = align(dsdt_at + len(dsdt_table), 16)
    madt_table = madt(cpu_count)
    placed = {
        rsdt_at: _table(b"RSDT", 1, struct.pack("<II", fadt_at, madt_at)),
        xsdt_at: _table(b"XSDT", 1, struct.pack("<QQ", fadt_at, madt_at)),
        fadt_at: fadt(facs_at, dsdt_at, pm_base),
        facs_at: facs(),
        dsdt_at: dsdt_table,
        madt_at: madt_table,
    }
    rsdp = bytearray(struct.pack("<8sB6sBIIQB3x", b"RSD PTR ", 0, OEM_ID, 2, rsdt_at, 36, xsdt_at, 0))
    rsdp[8] = checksum(rsdp[:20])
    rsdp[32] = checksum(rsdp)
    block = bytearray(madt_at + len(madt_table) - base)
    block[:len(rsdp)] = rsdp
    for at, table in placed.items():
        block[at - base:at - base + len(table)] = table
    return bytes(block), facs_at
