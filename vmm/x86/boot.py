"""CPU mode set-up done by the VMM: 16-bit real mode, 32-bit flat protected mode,
64-bit long mode with a GDT and identity-mapped page tables built in guest RAM."""
import struct

from .paging import PAGE_SIZE, PTE_P, PTE_PS, PTE_RW
from .registers import (GPRS, CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_LME,
                        RFLAGS_FIXED)

MODES = ("real", "protected", "long")

# Guest-physical layout of what the VMM builds for protected and long mode.
BOOT_GDT = 0x1000
BOOT_PML4 = 0x2000
BOOT_PDPT = 0x3000
BOOT_PD = 0x4000            # four page directories: 0x4000-0x7fff
BOOT_AREA = (BOOT_GDT, 0x8000)
IDENTITY_MAPPED = 4 << 30   # long mode maps the first 4 GiB with 2 MiB pages

SEL_CODE64, SEL_DATA, SEL_CODE32 = 0x08, 0x10, 0x18
_GDT = (0,
        0x00AF9A000000FFFF,  # 0x08: 64-bit code, DPL 0
        0x00CF92000000FFFF,  # 0x10: flat data, 4 GiB
        0x00CF9A000000FFFF)  # 0x18: 32-bit flat code, 4 GiB

DEFAULT_LOAD_ADDR = {"real": 0x7C00, "protected": 0x100000, "long": 0x100000}
DEFAULT_STACK = {"real": 0x7C00, "protected": 0x80000, "long": 0x80000}


def _segment(seg, selector, code, long_mode=False):
    seg.base = 0
    seg.limit = 0xFFFFFFFF
    seg.selector = selector
    seg.type = 0xB if code else 0x3   # execute/read accessed, or read/write accessed
    seg.present = 1
    seg.dpl = 0
    seg.db = 0 if long_mode and code else 1
    seg.s = 1
    seg.l = 1 if long_mode and code else 0
    seg.g = 1
    seg.avl = 0
    seg.unusable = 0


def _write_gdt(memory, sregs):
    memory.write(BOOT_GDT, struct.pack(f"<{len(_GDT)}Q", *_GDT))
    sregs.gdt.base = BOOT_GDT
    sregs.gdt.limit = 8 * len(_GDT) - 1


def _write_page_tables(memory):
    """Identity-map IDENTITY_MAPPED bytes with 2 MiB pages: PML4 -> PDPT -> 4 PDs."""
    directories = IDENTITY_MAPPED >> 30
    memory.write(BOOT_PML4, struct.pack("<Q", BOOT_PDPT | PTE_P | PTE_RW) + bytes(4088))
    memory.write(BOOT_PDPT, struct.pack(f"<{directories}Q", *(
        (BOOT_PD + i * PAGE_SIZE) | PTE_P | PTE_RW for i in range(directories))) + bytes(PAGE_SIZE - 8 * directories))
    memory.write(BOOT_PD, struct.pack(f"<{512 * directories}Q", *(
        (i << 21) | PTE_P | PTE_RW | PTE_PS for i in range(512 * directories))))


def setup_mode(vcpu, memory, mode, entry, stack, extra_regs=None):
    """Put the vCPU in `mode`, at `entry` with the stack at `stack`; extra_regs sets more GPRs."""
    sregs = vcpu.get_sregs()
    segments = (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss)
    if mode == "real":
        for seg in segments:
            seg.base = 0
            seg.selector = 0
    elif mode == "protected":
        _write_gdt(memory, sregs)
        _segment(sregs.cs, SEL_CODE32, code=True)
        for seg in segments[1:]:
            _segment(seg, SEL_DATA, code=False)
        sregs.cr0 = CR0_PE | CR0_ET
        sregs.cr4 = 0
        sregs.efer = 0
    elif mode == "long":
        _write_gdt(memory, sregs)
        _write_page_tables(memory)
        _segment(sregs.cs, SEL_CODE64, code=True, long_mode=True)
        for seg in segments[1:]:
            _segment(seg, SEL_DATA, code=False)
        sregs.cr3 = BOOT_PML4
        sregs.cr4 = CR4_PAE
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
        sregs.efer = EFER_LME | EFER_LMA
    else:
        raise ValueError(f"unknown CPU mode {mode!r}")
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    regs.rip = entry
    regs.rsp = stack
    regs.rflags = RFLAGS_FIXED
    for name, value in (extra_regs or {}).items():
        setattr(regs, name, value)
    vcpu.set_regs(regs)


def setup_real_mode_at(vcpu, selector, ip):
    """Put the vCPU in the state a processor has after INIT, except that it starts at
    selector:ip (what firmware leaves for an ACPI waking vector): real mode, paging and
    interrupts off, flat 64 KiB segments, the IVT at 0."""
    sregs = vcpu.get_sregs()
    for name in ("cs", "ds", "es", "fs", "gs", "ss"):
        seg = getattr(sregs, name)
        seg.base, seg.limit, seg.selector = 0, 0xFFFF, 0
        seg.type, seg.present, seg.dpl, seg.db, seg.s, seg.l, seg.g, seg.avl, seg.unusable = 3, 1, 0, 0, 1, 0, 0, 0, 0
    sregs.cs.type = 0xB
    sregs.cs.selector, sregs.cs.base = selector, selector << 4
    sregs.tr.base, sregs.tr.limit, sregs.tr.selector, sregs.tr.type, sregs.tr.present = 0, 0xFFFF, 0, 0xB, 1
    sregs.ldt.base, sregs.ldt.limit, sregs.ldt.selector, sregs.ldt.type, sregs.ldt.present = 0, 0xFFFF, 0, 0x2, 1
    sregs.gdt.base, sregs.gdt.limit = 0, 0xFFFF
    sregs.idt.base, sregs.idt.limit = 0, 0x3FF
    sregs.cr0 = CR0_ET
    sregs.cr2 = sregs.cr3 = sregs.cr4 = sregs.efer = 0
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    for name in GPRS:
        setattr(regs, name, 0)
    regs.rip = ip
    regs.rflags = RFLAGS_FIXED
    vcpu.set_regs(regs)
