/* Anti-analysis probes in long mode (the scheme: include/probe.inc).
 *
 * The guest loads its own GDT, page tables (the first GiB in 2 MiB pages, but
 * for one left out, to fault on, and the local APIC's page) and IDT, copies
 * its probe window into place and runs the checks. Ends through the
 * test-exit device with status 33.
 *
 * Assembled several times (see the Makefile): the checks run in 64-bit code,
 * or, with COMPAT, in 32-bit compatibility mode (a 32-bit program under a
 * 64-bit kernel, as WoW64 runs it); the set-up and the handlers are 64-bit
 * code. With TIMER the guest runs the local APIC timer checks alone, on
 * `--machine pc`; with SOFTINT the software interrupt checks alone.
 */
        .include "probe.inc"

        .set PROBE_PAGE, 0x200000
        .set PML4, 0x300000             /* the guest's page tables and IDT, built at run time */
        .set PDPT, 0x301000
        .set PD, 0x302000
        .set IDT, 0x303000
        .set PD_HIGH, 0x304000          /* the 4th GiB, for the local APIC */
        .set LAPIC_PAGE, 0xfee00000
        .set UNMAPPED, 0x3fe00000       /* the 2 MiB page the tables leave out */
        .set PTE_P, 0x1
        .set PTE_RW, 0x2
        .set PTE_PS, 0x80
        .set PTE_UNCACHED, 0x18         /* PCD | PWT */
        .set SEL_CODE64, 0x08
        .set SEL_DATA, 0x10
        .set SEL_CODE32, 0x18
        .set MOV_IMM32_LENGTH, 5

        .if COMPAT
        .set SEL_CHECKS, SEL_CODE32
.macro checks_code
        .code32
.endm
.macro call_ebx
        call *%ebx
.endm
.macro flags_to_eax
        pushfl
        pop %eax
.endm
.macro set_tf_popf
        pushfl
        orl $FLAGS_TF, (%esp)
        popfl
.endm
.macro eax_to_dr n
        mov %eax, %dr\n
.endm
.macro dr_to_eax n
        mov %dr\n, %eax
.endm
        .else
        .set SEL_CHECKS, SEL_CODE64
.macro checks_code
        .code64
.endm
.macro call_ebx
        call *%rbx
.endm
.macro flags_to_eax
        pushfq
        pop %rax
.endm
.macro set_tf_popf
        pushfq
        orq $FLAGS_TF, (%rsp)
        popfq
.endm
.macro eax_to_dr n
        mov %rax, %dr\n
.endm
.macro dr_to_eax n
        mov %dr\n, %rax
.endm
        .endif

        .if TIMER
        lapic_timer
        .endif

        .code64
        .text
        .globl _start
_start:
        jmp main
        .if TIMER
        probe_header "--mode long --machine pc"
        .else
        probe_header "--mode long"
        .endif

main:
        lgdt gdt_pointer
        pushq $SEL_CODE64
        lea 1f(%rip), %rax
        push %rax
        lretq
1:      mov $SEL_DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        call build_page_tables
        pushq $SEL_CHECKS               /* on to the checks' code segment */
        pushq $checks
        lretq

/* Identity-map the first GiB with 2 MiB pages, all but UNMAPPED's, and the local
 * APIC's, and switch to them. */
build_page_tables:
        mov $PML4, %edi
        mov $5 * 4096 / 4, %ecx
        xor %eax, %eax
        rep stosl
        movl $PDPT | PTE_P | PTE_RW, PML4
        movl $PD | PTE_P | PTE_RW, PDPT
        movl $PD_HIGH | PTE_P | PTE_RW, PDPT + 3 * 8
        movl $LAPIC_PAGE | PTE_P | PTE_RW | PTE_PS | PTE_UNCACHED, PD_HIGH + ((LAPIC_PAGE >> 21) & 511) * 8
        mov $PD, %edi
        mov $PTE_P | PTE_RW | PTE_PS, %eax
        mov $512, %ecx
1:      cmp $UNMAPPED | PTE_P | PTE_RW | PTE_PS, %eax
        je 2f
        mov %eax, (%rdi)
2:      add $8, %rdi
        add $0x200000, %eax
        dec %ecx
        jnz 1b
        mov $PML4, %eax
        mov %rax, %cr3
        ret

/* -- the checks (64-bit code, or 32-bit with COMPAT) ------------------------- */

        checks_code
checks:
        call build_idt
        copy_probe_window
        call read_selection

        .if TIMER
        check "lapic-timer", check_timer
        check "lapic-timer-inpage", check_timer_inpage
        .elseif SOFTINT
        check "int3", check_int3
        check "int-2d", check_int2d
        check "icebp", check_icebp
        .else
        check "pushf-tf", check_pushf_tf
        check "trap-flag", check_trap_flag
        check "ss-shadow", check_ss_shadow
        check "rdtsc-loop", check_rdtsc_loop
        check "rdtsc-cpuid", check_rdtsc_cpuid
        check "debug-regs", check_debug_regs
        check "dr0-breakpoint", check_dr0_breakpoint
        check "divide-error", check_divide_error
        check "invalid-opcode", check_invalid_opcode
        check "page-fault", check_page_fault
        check "invalid-opcode-inpage", check_invalid_opcode_inpage
        check "smc", check_smc
        check "page-cross", check_page_cross
        check "hypervisor", check_hypervisor
        .endif
        exit_with PROBES_DONE

        probe_library
        .if TIMER
        lapic_timer_routines
        timer_checks
        .elseif SOFTINT
        softint_checks
        .else
        common_checks
        probe_page_fault_check

/* 3. POP SS and MOV SS hold off a single-step trap for one instruction: a
 * debugger's TF shows in the pushf right after them (64-bit code has no POP SS). */
check_ss_shadow:
        call reset_events
        .if COMPAT
        call probe_pop_ss_run
        say "pop ss then pushf: "
        call put_tf
        say ", "
        .endif
        call probe_mov_ss_run
        say "mov ss then pushf: "
        call put_tf
        jmp put_db_count
        .endif

/* Every vector to a stub that reports it, then the handlers the checks use. */
build_idt:
        xor %edx, %edx
1:      mov %edx, %eax
        cmp $32, %eax
        jb 2f
        mov $32, %eax                   /* vectors 32-255 share one stub */
2:      shl $4, %eax
        add $exception_stubs, %eax
        call set_gate
        inc %edx
        cmp $256, %edx
        jne 1b
        mov $0, %edx
        mov $de_handler, %eax
        call set_gate
        mov $1, %edx
        mov $db_handler, %eax
        call set_gate
        mov $UD_VECTOR, %edx
        mov $ud_handler, %eax
        call set_gate
        mov $14, %edx
        mov $pf_handler, %eax
        call set_gate
        .if TIMER
        mov $TIMER_VECTOR, %edx
        mov $timer_handler, %eax
        call set_gate
        .elseif SOFTINT
        softint_gates
        .endif
        lidt idt_pointer
        ret

set_gate:
        mov %edx, %edi
        shl $4, %edi
        add $IDT, %edi
        mov %ax, (%edi)
        movw $SEL_CODE64, 2(%edi)
        movw $0x8e00, 4(%edi)           /* present, DPL 0, 64-bit interrupt gate */
        shr $16, %eax
        mov %ax, 6(%edi)
        movl $0, 8(%edi)
        movl $0, 12(%edi)
        ret

/* An exception no check expects (unexpected_vector, unexpected_rip). */
report_unexpected:
        say "\nprobe: broken: unexpected vector "
        mov unexpected_vector, %eax
        call put_dec
        say " at "
        mov unexpected_rip, %eax
        call put_hex
        say "\n"
        exit_with PROBES_BROKEN

/* -- handlers (64-bit code, whatever the checks' mode) ------------------------- */

        .code64
/* Stubs for the vectors no check expects, 16 bytes each (the last one serves
 * 32-255): the vector on the stack above the CPU's frame, without its error code. */
        .balign 16
exception_stubs:
        .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32
        .balign 16
        .if \vector == 8 || (\vector >= 10 && \vector <= 14) || \vector == 17 || \vector == 21 || \vector >= 29 && \vector <= 30
        add $8, %rsp                    /* drop the error code */
        .endif
        push $\vector
        jmp unexpected
        .endr

/* [rsp] = the vector, then the CPU's frame: report it from the checks' code. */
unexpected:
        pop %rax
        mov %eax, unexpected_vector
        mov (%rsp), %rax
        mov %eax, unexpected_rip
        movq $report_unexpected, (%rsp)
        movq $SEL_CHECKS, 8(%rsp)
        iretq

/* #DB: count it, note where and why, disarm DR7 (an instruction breakpoint
 * would fire again), end the guest's single-step. */
db_handler:
        push %rax
        incl db_count
        mov 8(%rsp), %rax
        mov %eax, db_rip
        mov %dr6, %rax
        mov %eax, db_dr6
        xor %eax, %eax
        mov %rax, %dr6
        mov $DR7_RESET, %eax
        mov %rax, %dr7
        andq $~FLAGS_TF, 24(%rsp)
        pop %rax
        iretq

de_handler:
        push $0                         /* no error code */
        push $0
        jmp fault
ud_handler:
        push $0
        push $UD_VECTOR
        jmp fault
bp_handler:
        push $0
        push $BP_VECTOR
        jmp fault
int2d_handler:
        push $0
        push $INT2D_VECTOR
        jmp fault
pf_handler:
        push $14
/* [rsp] = vector, 8 = error code, 16 = RIP, 24 = CS, 32 = RFLAGS: note the
 * fault and resume where the check said (fault_resume). */
fault:
        push %rax
        incl fault_count
        mov 8(%rsp), %rax
        mov %eax, fault_vector
        mov 16(%rsp), %rax
        mov %eax, fault_error
        mov 24(%rsp), %rax
        mov %eax, fault_rip
        mov 40(%rsp), %rax
        mov %eax, fault_flags
        mov %cr2, %rax
        mov %eax, fault_cr2
        mov fault_resume, %eax
        test %eax, %eax
        jz 1f
        mov %rax, 24(%rsp)
        movl $0, fault_resume
        pop %rax
        add $16, %rsp
        iretq
1:      pop %rax
        add $16, %rsp
        push fault_vector               /* as a stub would */
        jmp unexpected

        .if TIMER
timer_handler:
        push %rax
        push %rdi
        incl irq_count
        mov 16(%rsp), %rax
        mov %eax, irq_rip
        mov 32(%rsp), %rax
        mov %eax, irq_flags
        timer_eoi
        pop %rdi
        pop %rax
        iretq
        .endif

/* -- the probe window: copied to PROBE_PAGE - WINDOW_LEAD ---------------------- */

.macro long_probes
        .if TIMER
        probe_timer_bodies
/* A timer handler in the probed page (64-bit code, as handlers are). */
        .code64
at inpage_timer_handler
        push %rax
        push %rdi
        incl irq_count
        mov 16(%rsp), %rax
        mov %eax, irq_rip
        mov 32(%rsp), %rax
        mov %eax, irq_flags
        timer_eoi
        pop %rdi
        pop %rax
        iretq
        checks_code
        .elseif SOFTINT
        probe_softint_bodies
        .else
        probe_common_bodies
        .if COMPAT
at probe_pop_ss
        push %ss
        pop %ss
        pushfl
        pop %eax
        ret
        .endif

at probe_mov_ss
        mov %ss, %ax
        mov %ax, %ss
        flags_to_eax
        ret

        probe_page_fault_body

/* A #UD handler in the probed page (64-bit code, as handlers are): note the
 * fault, resume after the ud2. */
        .code64
at inpage_ud_handler
        push %rax
        incl fault_count
        movl $UD_VECTOR, fault_vector
        mov 8(%rsp), %rax
        mov %eax, fault_rip
        mov 24(%rsp), %rax
        mov %eax, fault_flags
        movq $inpage_ud_resume_run, 8(%rsp)
        pop %rax
        iretq
        checks_code
        .endif
.endm

        checks_code
        .if TIMER | SOFTINT
        probe_window_begin cross=0
        long_probes
        probe_window_end cross=0
        .else
        probe_window_begin
        long_probes
        probe_window_end
        .endif

        .data
        .balign 8
gdt:
        .quad 0
        .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code */
        .quad 0x00CF92000000FFFF        /* 0x10: flat data */
        .quad 0x00CF9A000000FFFF        /* 0x18: 32-bit code (compatibility mode) */
gdt_end:
        .balign 8
        .word 0, 0, 0
gdt_pointer:
        .word gdt_end - gdt - 1
        .quad gdt
        .word 0, 0, 0
idt_pointer:
        .word 256 * 16 - 1
        .quad IDT
unexpected_vector: .long 0
unexpected_rip:    .long 0
        probe_library_data
