"""Python + cffi (ABI mode) KVM smoke test, run inside the emulated machine.

    python3 kvm_smoke.py [patched|stock]

Self-contained (it does not use the harness): proves that the trimmed Python
in the initramfs drives /dev/kvm. A real-mode guest does port I/O and HLT;
with "patched" it also marks the page it jumps to with KVM_SET_EXEC_TRAP and
expects one KVM_EXIT_EMULATE for that page, with RIP at the jump target.
Prints one line "E2E py-smoke key=value ... verdict=PASS|FAIL".
"""
import mmap
import os
import sys

import cffi

ffi = cffi.FFI()
ffi.cdef("""
int ioctl(int fd, unsigned long request, ...);
struct kvm_userspace_memory_region {
    uint32_t slot; uint32_t flags; uint64_t guest_phys_addr;
    uint64_t memory_size; uint64_t userspace_addr;
};
struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
};
struct kvm_segment {
    uint64_t base; uint32_t limit; uint16_t selector;
    uint8_t type, present, dpl, db, s, l, g, avl, unusable, padding;
};
struct kvm_dtable { uint64_t base; uint16_t limit; uint16_t padding[3]; };
struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    uint64_t interrupt_bitmap[4];
};
struct kvm_exec_trap { uint64_t address, size, attributes, flags; };
struct kvm_run_head {
    uint8_t request_interrupt_window, immediate_exit, padding1[6];
    uint32_t exit_reason;
    uint8_t ready_for_interrupt_injection, if_flag;
    uint16_t flags;
    uint64_t cr8, apic_base;
    union {
        struct { uint8_t direction, size; uint16_t port; uint32_t count; uint64_t data_offset; } io;
        struct { uint64_t flags, gpa, size, gva; } emulate;
        char padding[256];
    };
};
""")
libc = ffi.dlopen(None)

KVMIO = 0xAE


def _IO(nr):
    return (KVMIO << 8) | nr


def _IOW(nr, size):
    return (1 << 30) | (size << 16) | (KVMIO << 8) | nr


def _IOR(nr, size):
    return (2 << 30) | (size << 16) | (KVMIO << 8) | nr


KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
KVM_CREATE_VCPU = _IO(0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(0x46, ffi.sizeof("struct kvm_userspace_memory_region"))
KVM_SET_TSS_ADDR = _IO(0x47)
KVM_RUN = _IO(0x80)
KVM_GET_REGS = _IOR(0x81, ffi.sizeof("struct kvm_regs"))
KVM_SET_REGS = _IOW(0x82, ffi.sizeof("struct kvm_regs"))
KVM_GET_SREGS = _IOR(0x83, ffi.sizeof("struct kvm_sregs"))
KVM_SET_SREGS = _IOW(0x84, ffi.sizeof("struct kvm_sregs"))
KVM_SET_EXEC_TRAP = _IOW(0xE8, ffi.sizeof("struct kvm_exec_trap"))
KVM_CAP_EXEC_TRAP = 4096
KVM_EXEC_TRAP_FEATURE_NX = 1 << 1
KVM_EXEC_TRAP_ATTR_NX = 1 << 2
KVM_EXIT_IO, KVM_EXIT_HLT, KVM_EXIT_EMULATE = 2, 5, 4096

CODE = 0x1000
TARGET = 0x3010          # in the trapped page 0x3000
GUEST = bytes([
    0xb0, 0x42, 0xe6, 0x10,                   # mov al,0x42; out 0x10,al
    0xa0, 0x00, 0x30,                         # mov al,[0x3000]  (data read of the page)
    0xe6, 0x11,                               # out 0x11,al
    0xe9, TARGET - (CODE + 12) & 0xff, (TARGET - (CODE + 12)) >> 8,  # jmp near TARGET
])
TARGET_CODE = bytes([0xb0, 0x77, 0xe6, 0x12, 0xf4])   # mov al,0x77; out 0x12,al; hlt


def ioctl(fd, req, arg=0):
    if isinstance(arg, int):
        arg = ffi.cast("unsigned long", arg)
    r = libc.ioctl(ffi.cast("int", fd), ffi.cast("unsigned long", req), arg)
    if r < 0:
        raise OSError(ffi.errno, os.strerror(ffi.errno))
    return r


def main():
    want_patched = len(sys.argv) > 1 and sys.argv[1] == "patched"
    out = ["E2E py-smoke"]
    problems = []
    kvm = os.open("/dev/kvm", os.O_RDWR)
    out.append("api=%d" % ioctl(kvm, KVM_GET_API_VERSION))
    vm = ioctl(kvm, KVM_CREATE_VM)
    ioctl(vm, KVM_SET_TSS_ADDR, ffi.cast("unsigned long", 0xfffbd000))
    mem = mmap.mmap(-1, 0x10000, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    mem[CODE:CODE + len(GUEST)] = GUEST
    mem[0x3000] = 0x5a
    mem[TARGET:TARGET + len(TARGET_CODE)] = TARGET_CODE
    buf = ffi.from_buffer(mem)
    region = ffi.new("struct kvm_userspace_memory_region *", {
        "slot": 0, "guest_phys_addr": 0, "memory_size": len(mem),
        "userspace_addr": int(ffi.cast("uintptr_t", buf))})
    ioctl(vm, KVM_SET_USER_MEMORY_REGION, region)
    vcpu = ioctl(vm, KVM_CREATE_VCPU, ffi.cast("int", 0))
    run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
    run_map = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    run = ffi.cast("struct kvm_run_head *", ffi.from_buffer(run_map))

    sregs = ffi.new("struct kvm_sregs *")
    ioctl(vcpu, KVM_GET_SREGS, sregs)
    sregs.cs.base = 0
    sregs.cs.selector = 0
    ioctl(vcpu, KVM_SET_SREGS, sregs)
    regs = ffi.new("struct kvm_regs *", {"rip": CODE, "rflags": 2})
    ioctl(vcpu, KVM_SET_REGS, regs)

    cap = libc.ioctl(ffi.cast("int", vm), ffi.cast("unsigned long", KVM_CHECK_EXTENSION),
                     ffi.cast("int", KVM_CAP_EXEC_TRAP))
    out.append("cap=%d" % cap)
    trap = ffi.new("struct kvm_exec_trap *", {"address": 0x3000, "size": 0x1000,
                                             "attributes": KVM_EXEC_TRAP_ATTR_NX})
    rc = libc.ioctl(ffi.cast("int", vm), ffi.cast("unsigned long", KVM_SET_EXEC_TRAP), trap)
    out.append("set=%d" % (rc if rc >= 0 else -ffi.errno))
    if want_patched and (not cap & KVM_EXEC_TRAP_FEATURE_NX or rc != 0):
        problems.append("exec trap not available")
    if not want_patched and (cap > 0 or rc == 0):
        problems.append("stock module accepts the exec trap")

    ports, events = [], []
    for _ in range(50):
        ioctl(vcpu, KVM_RUN)
        reason = run.exit_reason
        if reason == KVM_EXIT_IO:
            off = run.io.data_offset
            ports.append((run.io.port, run_map[off]))
        elif reason == KVM_EXIT_EMULATE:
            ioctl(vcpu, KVM_GET_REGS, regs)
            events.append((run.emulate.gpa, run.emulate.size, regs.rip))
            trap.attributes = 0
            ioctl(vm, KVM_SET_EXEC_TRAP, trap)
        elif reason == KVM_EXIT_HLT:
            break
        else:
            problems.append("unexpected exit %d" % reason)
            break
    out.append("io=%s" % ",".join("%#x:%#x" % p for p in ports))
    out.append("emulate=%d" % len(events))
    for gpa, size, rip in events:
        out.append("gpa=%#x size=%#x rip=%#x" % (gpa, size, rip))
    if ports != [(0x10, 0x42), (0x11, 0x5a), (0x12, 0x77)]:
        problems.append("wrong port output")
    expected = [(TARGET & ~0xfff, 0x1000, TARGET)] if want_patched else []
    if events != expected:
        problems.append("EMULATE events %s, wanted %s" % (events, expected))
    for p in problems:
        print("E2E-ERROR py-smoke: " + p)
    out.append("verdict=" + ("FAIL" if problems else "PASS"))
    print(" ".join(out), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
