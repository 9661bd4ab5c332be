/* Anti-analysis probes in 32-bit protected mode (the scheme: include/probe.inc).
 *
 * The guest loads its own GDT and IDT, copies its probe window into place and
 * runs the checks. Ends through the test-exit device with status 33.
 *
 * Assembled in variants (see the Makefile): flat; with PAGING, where it first
 * turns paging on with one 4 MiB page mapping the first 4 MiB (the next 4 MiB
 * are left out, to fault on) and adds the page-fault check; with TIMER, where
 * it runs the local APIC timer checks alone, on `--machine pc`; with SOFTINT,
 * where it runs the software interrupt checks alone.
 */
        .include "probe.inc"

        .set PROBE_PAGE, 0x200000
        .set PAGE_DIRECTORY, 0x300000   /* built at run time, like the IDT */
        .set IDT, 0x301000
        .set UNMAPPED, 0x400000         /* the 4 MiB page the directory leaves out */
        .set PDE_4M, 0x83               /* present, writable, 4 MiB */
        .set CR0_PG, 0x80000000
        .set CR4_PSE, 0x10
        .set SEL_CODE, 0x08
        .set SEL_DATA, 0x10
        .set MOV_IMM32_LENGTH, 5

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

        .if TIMER
        lapic_timer
        .endif

        .code32
        .text
        .globl _start
_start:
        jmp main
        .if TIMER
        probe_header "--mode protected --machine pc"
        .else
        probe_header "--mode protected"
        .endif

main:
        lgdt gdt_pointer
        ljmp $SEL_CODE, $1f
1:      mov $SEL_DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        .if PAGING
        call enable_paging
        .endif
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
        .if PAGING
        check "page-fault", check_page_fault
        .endif
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
        .if PAGING
        probe_page_fault_check
        .endif

/* 3. POP SS and MOV SS hold off a single-step trap for one instruction: a
 * debugger's TF shows in the pushf right after them. */
check_ss_shadow:
        call reset_events
        call probe_pop_ss_run
        say "pop ss then pushf: "
        call put_tf
        call probe_mov_ss_run
        say ", mov ss then pushf: "
        call put_tf
        jmp put_db_count
        .endif

/* -- set-up ------------------------------------------------------------------- */

        .if PAGING
enable_paging:
        mov $PAGE_DIRECTORY, %edi
        mov $1024, %ecx
        xor %eax, %eax
        rep stosl
        movl $PDE_4M, PAGE_DIRECTORY    /* 0-4 MiB, identity */
        mov %cr4, %eax
        or $CR4_PSE, %eax
        mov %eax, %cr4
        mov $PAGE_DIRECTORY, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $CR0_PG, %eax
        mov %eax, %cr0
        ret
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
        lea IDT(,%edx,8), %edi
        mov %ax, (%edi)
        movw $SEL_CODE, 2(%edi)
        movw $0x8e00, 4(%edi)           /* present, DPL 0, 32-bit interrupt gate */
        shr $16, %eax
        mov %ax, 6(%edi)
        ret

/* -- handlers ------------------------------------------------------------------- */

/* Stubs for the vectors no check expects, 16 bytes each (the last one serves
 * 32-255): the vector on the stack above the CPU's frame, without its error code. */
        .balign 16
exception_stubs:
        .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32
        .balign 16
        .if \vector == 8 || (\vector >= 10 && \vector <= 14) || \vector == 17 || \vector == 21 || \vector >= 29 && \vector <= 30
        add $4, %esp                    /* drop the error code */
        .endif
        push $\vector
        jmp unexpected
        .endr

/* [esp] = the vector, then the CPU's frame. */
unexpected:
        say "\nprobe: broken: unexpected vector "
        mov (%esp), %eax
        call put_dec
        say " at "
        mov 4(%esp), %eax
        call put_hex
        say "\n"
        exit_with PROBES_BROKEN

/* #DB: count it, note where and why, disarm DR7 (an instruction breakpoint
 * would fire again), end the guest's single-step. */
db_handler:
        push %eax
        incl db_count
        mov 4(%esp), %eax
        mov %eax, db_rip
        mov %dr6, %eax
        mov %eax, db_dr6
        xor %eax, %eax
        mov %eax, %dr6
        mov $DR7_RESET, %eax
        mov %eax, %dr7
        andl $~FLAGS_TF, 12(%esp)
        pop %eax
        iret

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
/* [esp] = vector, 4 = error code, 8 = EIP, 12 = CS, 16 = EFLAGS: note the
 * fault and resume where the check said (fault_resume). */
fault:
        push %eax
        incl fault_count
        mov 4(%esp), %eax
        mov %eax, fault_vector
        mov 8(%esp), %eax
        mov %eax, fault_error
        mov 12(%esp), %eax
        mov %eax, fault_rip
        mov 20(%esp), %eax
        mov %eax, fault_flags
        mov %cr2, %eax
        mov %eax, fault_cr2
        mov fault_resume, %eax
        test %eax, %eax
        jz 1f
        mov %eax, 12(%esp)
        movl $0, fault_resume
        pop %eax
        add $8, %esp
        iret
1:      pop %eax
        add $8, %esp
        push fault_vector               /* as a stub would */
        jmp unexpected

        .if TIMER
timer_handler:
        push %eax
        push %edi
        incl irq_count
        mov 8(%esp), %eax
        mov %eax, irq_rip
        mov 16(%esp), %eax
        mov %eax, irq_flags
        timer_eoi
        pop %edi
        pop %eax
        iret
        .endif

/* -- the probe window: copied to PROBE_PAGE - WINDOW_LEAD ---------------------- */

.macro protected_probes
        .if TIMER
        probe_timer_bodies
/* A timer handler in the probed page. */
at inpage_timer_handler
        push %eax
        push %edi
        incl irq_count
        mov 8(%esp), %eax
        mov %eax, irq_rip
        mov 16(%esp), %eax
        mov %eax, irq_flags
        timer_eoi
        pop %edi
        pop %eax
        iret
        .elseif SOFTINT
        probe_softint_bodies
        .else
        probe_common_bodies
at probe_pop_ss
        push %ss
        pop %ss
        pushfl
        pop %eax
        ret

at probe_mov_ss
        mov %ss, %ax
        mov %ax, %ss
        pushfl
        pop %eax
        ret

        .if PAGING
        probe_page_fault_body
        .endif

/* A #UD handler in the probed page: note the fault, resume after the ud2. */
at inpage_ud_handler
        push %eax
        incl fault_count
        movl $UD_VECTOR, fault_vector
        mov 4(%esp), %eax
        mov %eax, fault_rip
        mov 12(%esp), %eax
        mov %eax, fault_flags
        movl $inpage_ud_resume_run, 4(%esp)
        pop %eax
        iret
        .endif
.endm

        .if TIMER | SOFTINT
        probe_window_begin cross=0
        protected_probes
        probe_window_end cross=0
        .else
        probe_window_begin
        protected_probes
        probe_window_end
        .endif

        .data
        .balign 8
gdt:
        .quad 0
        .quad 0x00CF9A000000FFFF        /* 0x08: 32-bit flat code */
        .quad 0x00CF92000000FFFF        /* 0x10: flat data */
gdt_end:
        .balign 4
        .word 0
gdt_pointer:
        .word gdt_end - gdt - 1
        .long gdt
        .word 0
idt_pointer:
        .word 256 * 8 - 1
        .long IDT
        probe_library_data
