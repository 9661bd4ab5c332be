"""The software page walker against KVM's own (KVM_TRANSLATE) in every paging mode, on page
tables the test builds in guest RAM. Where this host's KVM cannot hold a paging mode (it clears
CR0.PG outside long mode, and a guest enabling 32-bit or PAE paging triple-faults), the walker
is checked against the mappings the tables define."""
import errno
import struct
from types import SimpleNamespace

import pytest

import kvm_abi
from vmm.errors import KvmError
from vmm.kvm import libc
from vmm.x86 import paging
from vmm.x86.registers import CR0_PE, CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA, EFER_LME, EFER_NXE

pytestmark = pytest.mark.kvm

P, RW, US, PS, NX = paging.PTE_P, paging.PTE_RW, paging.PTE_US, paging.PTE_PS, paging.PTE_NX


def kvm_translate(vcpu, linear):
    """(physical, valid) from KVM's walker."""
    translation = libc.ffi.new("struct kvm_translation *", {"linear_address": linear})
    libc.ioctl(vcpu.fd, kvm_abi.KVM_TRANSLATE, translation)
    return translation.physical_address, bool(translation.valid)


def entries(memory, table, values):
    """Write {index: entry} into the table at `table` (8-byte entries)."""
    for index, value in values.items():
        memory.write(table + 8 * index, struct.pack("<Q", value))


def set_paging(vcpu, cr0, cr3, cr4, efer):
    """Put the vCPU in a paging mode (KVM may refuse or not keep it); the control registers as
    asked."""
    sregs = vcpu.get_sregs()
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = cr0, cr3, cr4, efer
    sregs.cs.l, sregs.cs.db = (1, 0) if efer & EFER_LMA else (0, 1)
    try:
        vcpu.set_sregs(sregs)
    except KvmError as error:
        assert error.errno == errno.EINVAL, error
    return SimpleNamespace(cr0=cr0, cr3=cr3, cr4=cr4, efer=efer)


def gigabyte_pages(machine):
    """Whether KVM gives the vCPUs 1 GiB pages (CPUID 0x80000001 EDX bit 26)."""
    return any(entry["function"] == 0x80000001 and entry["edx"] >> 26 & 1 for entry in machine.kvm.supported_cpuid())


def compare(vcpu, memory, sregs, addresses, walker_only=()):
    """The walker under `sregs` must give the expected mappings, and so must KVM when it holds
    the same paging mode."""
    actual = vcpu.get_sregs()
    kvm_holds_mode = all(getattr(sregs, name) & mask == getattr(actual, name) & mask for name, mask in (
        ("cr0", CR0_PG), ("cr4", CR4_PAE | CR4_PSE | CR4_LA57), ("efer", EFER_LMA | EFER_NXE)))
    for linear, expected in addresses.items():
        ours = paging.translate(memory, sregs, linear)
        assert ours == expected, f"linear {linear:#x}: expected {expected}, the walker gave {ours}"
        if linear in walker_only or not kvm_holds_mode:
            continue
        physical, valid = kvm_translate(vcpu, linear)
        assert (physical if valid else None) == expected, (
            f"linear {linear:#x}: expected {expected}, KVM_TRANSLATE gave {physical:#x} valid={valid}")


@pytest.fixture
def vm(machine):
    vm = machine(mem_size=16 << 20)
    vm.load(b"\xf4", mode="long")
    return vm


def test_four_level_paging_with_4k_2m_and_1g_pages(vm):
    memory = vm.memory
    pml4, pdpt, pd, pt, pdpt_high, pd_high = 0x10000, 0x11000, 0x12000, 0x13000, 0x14000, 0x15000
    entries(memory, pml4, {0xFE: pdpt | P | RW, 0x100: pdpt_high | P | RW | US, 0: pdpt | P})
    entries(memory, pdpt, {1: pd | P | RW, 2: 0x40000000 | P | RW | PS})       # index 2: a 1 GiB page
    entries(memory, pd, {2: pt | P | RW, 3: 0x600000 | P | PS | NX})          # index 3: a 2 MiB page
    entries(memory, pt, {0: 0x123000 | P | RW, 1: 0x7000})                      # index 1: not present
    entries(memory, pdpt_high, {0: pd_high | P | RW})
    entries(memory, pd_high, {1: 0xA00000 | P | RW | PS})
    sregs = set_paging(vm.vcpus[0], CR0_PE | CR0_PG, pml4, CR4_PAE, EFER_LME | EFER_LMA | EFER_NXE)
    # Where KVM's CPUID has no 1 GiB pages its walker faults on them; the walker maps them.
    one_gigabyte = () if gigabyte_pages(vm) else (0x7F0080012345,)
    compare(vm.vcpus[0], memory, sregs, walker_only=one_gigabyte, addresses={
        0x7F0040400ABC: 0x123ABC,            # PML4 0xFE, PDPT 1, PD 2, PT 0
        0x7F0040401000: None,                # PT entry not present
        0x7F0040600123: 0x600123,            # 2 MiB page
        0x7F00812345678 & ((1 << 48) - 1): None,
        0x7F0080012345: 0x40012345,          # 1 GiB page
        0xFFFF800000212345: 0xA12345,        # PML4 0x100: the higher half
        0x0000800000000000: None,            # not canonical
        0x7F00C0000000: None,                # PDPT entry 3: not present
    })
    walk = paging.walk(memory, sregs, 0x7F0040600123)
    assert (walk.page_size, walk.writable, walk.executable) == (2 << 20, False, False), walk
    # Without EFER.NXE the NX bit is reserved: the 2 MiB page's entry faults.
    sregs = set_paging(vm.vcpus[0], CR0_PE | CR0_PG, pml4, CR4_PAE, EFER_LME | EFER_LMA)
    compare(vm.vcpus[0], memory, sregs, {0x7F0040600123: None, 0x7F0040400ABC: 0x123ABC})


def test_pae_paging(vm):
    memory = vm.memory
    pdpt, pd, pt = 0x20000, 0x21000, 0x22000
    entries(memory, pdpt, {1: pd | P})
    entries(memory, pd, {0: pt | P | RW, 5: 0xC00000 | P | RW | PS})
    entries(memory, pt, {3: 0x345000 | P | RW})
    sregs = set_paging(vm.vcpus[0], CR0_PE | CR0_PG, pdpt, CR4_PAE, 0)
    compare(vm.vcpus[0], memory, sregs, {
        0x40003123: 0x345123, 0x40004000: None, 0x40A01234: 0xC01234, 0x80000000: None})


def test_32bit_paging_with_4m_pages(vm):
    memory = vm.memory
    pd, pt = 0x30000, 0x31000
    memory.write(pd + 4 * 1, struct.pack("<I", pt | P | RW))
    memory.write(pd + 4 * 2, struct.pack("<I", 0x800000 | P | RW | PS))     # a 4 MiB page
    memory.write(pt + 4 * 7, struct.pack("<I", 0x456000 | P))
    sregs = set_paging(vm.vcpus[0], CR0_PE | CR0_PG, pd, CR4_PSE, 0)
    compare(vm.vcpus[0], memory, sregs, {
        0x00407ABC: 0x456ABC, 0x00408000: None, 0x00923456: 0x923456, 0x00C00000: None})


def test_no_paging_and_entries_outside_ram(vm):
    memory = vm.memory
    sregs = set_paging(vm.vcpus[0], CR0_PE, 0, 0, 0)
    assert paging.translate(memory, sregs, 0x12345678) == 0x12345678
    sregs = set_paging(vm.vcpus[0], CR0_PE | CR0_PG, 0xF000000, CR4_PAE, EFER_LME | EFER_LMA)
    assert paging.translate(memory, sregs, 0x1000) is None, "a PML4 outside RAM translates nothing"


def test_five_level_paging(vm):
    memory = vm.memory
    pml5, pml4, pdpt, pd = 0x40000, 0x41000, 0x42000, 0x43000
    entries(memory, pml5, {1: pml4 | P | RW})
    entries(memory, pml4, {0: pdpt | P | RW})
    entries(memory, pdpt, {0: pd | P | RW})
    entries(memory, pd, {0: 0x200000 | P | RW | PS})
    sregs = set_paging(vm.vcpus[0], CR0_PE | CR0_PG, pml5, CR4_PAE | CR4_LA57, EFER_LME | EFER_LMA)
    compare(vm.vcpus[0], memory, sregs, {0x0001000000012345: 0x212345, 0x0000000000012345: None})
