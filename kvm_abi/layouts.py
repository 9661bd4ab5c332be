"""C layouts of the KVM userspace ABI (x86-64), declared for cffi in ABI mode.

The declarations mirror <linux/kvm.h> and <asm/kvm.h>; tests/test_abi_probe.py
compiles a probe against the system headers and compares every size and offset.
Members added by the exec-trap patch (patches/) are listed in PATCH_ONLY so the
probe against an unpatched header knows to skip them.

The install pre-parses CDEF into _layouts_ffi (cffi's out-of-line ABI mode, see
ffibuild.py): parsing it here takes longer than the rest of a small guest's run. Without
that module, or with VMM_FASTPATH=0, CDEF is parsed at import (PREPARSED is then False).
"""
import os

CDEF = r"""
typedef uint8_t  __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef int32_t  __s32;
typedef int64_t  __s64;

struct kvm_regs {
    __u64 rax, rbx, rcx, rdx;
    __u64 rsi, rdi, rsp, rbp;
    __u64 r8,  r9,  r10, r11;
    __u64 r12, r13, r14, r15;
    __u64 rip, rflags;
};

struct kvm_segment {
    __u64 base;
    __u32 limit;
    __u16 selector;
    __u8  type;
    __u8  present, dpl, db, s, l, g, avl;
    __u8  unusable;
    __u8  padding;
};

struct kvm_dtable {
    __u64 base;
    __u16 limit;
    __u16 padding[3];
};

struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss;
    struct kvm_segment tr, ldt;
    struct kvm_dtable gdt, idt;
    __u64 cr0, cr2, cr3, cr4, cr8;
    __u64 efer;
    __u64 apic_base;
    __u64 interrupt_bitmap[4];
};

struct kvm_userspace_memory_region {
    __u32 slot;
    __u32 flags;
    __u64 guest_phys_addr;
    __u64 memory_size;
    __u64 userspace_addr;
};

struct kvm_debug_exit_arch {
    __u32 exception;
    __u32 pad;
    __u64 pc;
    __u64 dr6;
    __u64 dr7;
};

struct kvm_guest_debug_arch {
    __u64 debugreg[8];
};

struct kvm_guest_debug {
    __u32 control;
    __u32 pad;
    struct kvm_guest_debug_arch arch;
};

struct kvm_cpuid_entry2 {
    __u32 function;
    __u32 index;
    __u32 flags;
    __u32 eax;
    __u32 ebx;
    __u32 ecx;
    __u32 edx;
    __u32 padding[3];
};

struct kvm_cpuid2 {
    __u32 nent;
    __u32 padding;
    struct kvm_cpuid_entry2 entries[];
};

/* KVM_ENABLE_CAP (on the VM fd): turn a capability on with its arguments. */
struct kvm_enable_cap {
    __u32 cap;
    __u32 flags;
    __u64 args[4];
    __u8  pad[64];
};

struct kvm_translation {
    __u64 linear_address;
    __u64 physical_address;
    __u8  valid;
    __u8  writeable;
    __u8  usermode;
    __u8  pad[5];
};

struct kvm_pit_config {
    __u32 flags;
    __u32 pad[15];
};

struct kvm_pic_state {
    __u8 last_irr;
    __u8 irr;
    __u8 imr;
    __u8 isr;
    __u8 priority_add;
    __u8 irq_base;
    __u8 read_reg_select;
    __u8 poll;
    __u8 special_mask;
    __u8 init_state;
    __u8 auto_eoi;
    __u8 rotate_on_auto_eoi;
    __u8 special_fully_nested_mode;
    __u8 init4;
    __u8 elcr;
    __u8 elcr_mask;
};

struct kvm_irqchip {
    __u32 chip_id;
    __u32 pad;
    union {
        char dummy[512];
        struct kvm_pic_state pic;
    } chip;
};

struct kvm_pit_channel_state {
    __u32 count;
    __u16 latched_count;
    __u8 count_latched;
    __u8 status_latched;
    __u8 status;
    __u8 read_state;
    __u8 write_state;
    __u8 write_latch;
    __u8 rw_mode;
    __u8 mode;
    __u8 bcd;
    __u8 gate;
    __s64 count_load_time;
};

struct kvm_pit_state2 {
    struct kvm_pit_channel_state channels[3];
    __u32 flags;
    __u32 reserved[9];
};

struct kvm_irq_level {
    union {
        __u32 irq;
        __s32 status;
    };
    __u32 level;
};

struct kvm_mp_state {
    __u32 mp_state;
};

struct kvm_vcpu_events {
    struct {
        __u8 injected;
        __u8 nr;
        __u8 has_error_code;
        __u8 pending;
        __u32 error_code;
    } exception;
    struct {
        __u8 injected;
        __u8 nr;
        __u8 soft;
        __u8 shadow;
    } interrupt;
    struct {
        __u8 injected;
        __u8 pending;
        __u8 masked;
        __u8 pad;
    } nmi;
    __u32 sipi_vector;
    __u32 flags;
    struct {
        __u8 smm;
        __u8 pending;
        __u8 smm_inside_nmi;
        __u8 latched_init;
    } smi;
    struct {
        __u8 pending;
    } triple_fault;
    __u8 reserved[26];
    __u8 exception_has_payload;
    __u64 exception_payload;
};

struct kvm_debugregs {
    __u64 db[4];
    __u64 dr6;
    __u64 dr7;
    __u64 flags;
    __u64 reserved[9];
};

struct kvm_msr_entry {
    __u32 index;
    __u32 reserved;
    __u64 data;
};

struct kvm_msrs {
    __u32 nmsrs;
    __u32 pad;
    struct kvm_msr_entry entries[];
};

struct kvm_device_attr {
    __u32 flags;
    __u32 group;
    __u64 attr;
    __u64 addr;
};

struct kvm_dirty_log {
    __u32 slot;
    __u32 padding1;
    union {
        void *dirty_bitmap;
        __u64 padding2;
    };
};

struct kvm_coalesced_mmio_zone {
    __u64 addr;
    __u32 size;
    __u32 pad;
};

struct kvm_coalesced_mmio {
    __u64 phys_addr;
    __u32 len;
    __u32 pad;
    __u8 data[8];
};

struct kvm_coalesced_mmio_ring {
    __u32 first, last;
    struct kvm_coalesced_mmio coalesced_mmio[];
};

struct kvm_exec_trap {
    __u64 address;
    __u64 size;
    __u64 attributes;
    __u64 flags;
};

/* The x87 and SSE state in FXSAVE terms (ftwx: the abridged tag byte). */
struct kvm_fpu {
    __u8  fpr[8][16];
    __u16 fcw;
    __u16 fsw;
    __u8  ftwx;
    __u8  pad1;
    __u16 last_opcode;
    __u64 last_ip;
    __u64 last_dp;
    __u8  xmm[16][16];
    __u32 mxcsr;
    __u32 pad2;
};

/* The guest's own debug registers, as the guest sees them. */
/* KVM_CAP_SYNC_REGS: the registers KVM copies into kvm_run at every exit. */
struct kvm_sync_regs {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_vcpu_events events;
};

struct kvm_run {
    __u8 request_interrupt_window;
    __u8 immediate_exit;
    __u8 padding1[6];

    __u32 exit_reason;
    __u8 ready_for_interrupt_injection;
    __u8 if_flag;
    __u16 flags;

    __u64 cr8;
    __u64 apic_base;

    union {
        struct {
            __u64 hardware_exit_reason;
        } hw;
        struct {
            __u64 hardware_entry_failure_reason;
            __u32 cpu;
        } fail_entry;
        struct {
            __u32 exception;
            __u32 error_code;
        } ex;
        struct {
            __u8 direction;
            __u8 size;
            __u16 port;
            __u32 count;
            __u64 data_offset;
        } io;
        struct {
            struct kvm_debug_exit_arch arch;
        } debug;
        struct {
            __u64 phys_addr;
            __u8  data[8];
            __u32 len;
            __u8  is_write;
        } mmio;
        struct {
            __u32 suberror;
            __u32 ndata;
            __u64 data[16];
        } internal;
        struct {
            __u32 suberror;
            __u32 ndata;
            __u64 flags;
            __u8  insn_size;
            __u8  insn_bytes[15];
        } emulation_failure;
        struct {
            __u32 type;
            __u32 ndata;
            union {
                __u64 flags;
                __u64 data[16];
            };
        } system_event;
        struct {
            __u64 flags;
            __u64 gpa;
            __u64 size;
            __u64 gva;
        } emulate;
        char padding[256];
    };

    __u64 kvm_valid_regs;
    __u64 kvm_dirty_regs;
    union {
        struct kvm_sync_regs regs;
        char padding[2048];
    } s;
};
"""

# Declared above but only present in a kernel carrying the exec-trap patch.
PATCH_ONLY = frozenset({"struct kvm_exec_trap", "struct kvm_run.emulate"})



def _load():
    if os.environ.get("VMM_FASTPATH") != "0":
        try:
            from ._layouts_ffi import ffi as preparsed
            return preparsed, True
        except ImportError:
            pass
    import cffi
    parsed = cffi.FFI()
    parsed.cdef(CDEF)
    return parsed, False


ffi, PREPARSED = _load()
