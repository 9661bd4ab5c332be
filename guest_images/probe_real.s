/* Anti-analysis probes in 16-bit real mode (the scheme: include/probe.inc).
 *
 * The guest points its interrupt vector table's entries at its handlers,
 * copies its probe window into place (the probed page at 0xe000, below 64 KiB
 * like everything else here) and runs the checks; there is no paging, so no
 * page-fault check. Ends through the test-exit device with status 33.
 *
 * Assembled in variants (see the Makefile): with TIMER the guest runs the timer
 * checks alone, with the PIT through the PIC, on `--machine pc`; with SOFTINT
 * the software interrupt checks alone.
 */
        .include "probe.inc"

        .set PROBE_PAGE, 0xe000
        .set MOV_IMM32_LENGTH, 6        /* with its operand-size prefix */

.macro call_ebx
        call *%bx
.endm
.macro flags_to_eax
        pushf
        pop %ax
        movzwl %ax, %eax
.endm
.macro set_tf_popf
        pushf
        mov %sp, %bp
        orw $FLAGS_TF, (%bp)
        popf
.endm
.macro eax_to_dr n
        mov %eax, %dr\n
.endm
.macro dr_to_eax n
        mov %dr\n, %eax
.endm

        .if TIMER
        pit_timer
        .endif

        .code16
        .text
        .globl _start
_start:
        jmp main
        .if TIMER
        probe_header "--mode real --machine pc"
        .else
        probe_header "--mode real"
        .endif

main:
        call build_ivt
        copy_probe_window
        call read_selection

        .if TIMER
        check "pit-timer", check_timer
        check "pit-timer-inpage", check_timer_inpage
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
        check "invalid-opcode-inpage", check_invalid_opcode_inpage
        check "smc", check_smc
        check "page-cross", check_page_cross
        check "hypervisor", check_hypervisor
        .endif
        exit_with PROBES_DONE

        probe_library
        .if TIMER
        pit_timer_routines
        timer_checks
        .elseif SOFTINT
        softint_checks
        .else
        common_checks

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

/* Every vector to a stub that reports it, then the handlers the checks use. */
build_ivt:
        xor %edx, %edx
1:      mov %edx, %eax
        cmp $32, %eax
        jb 2f
        mov $32, %eax                   /* vectors 32-255 share one stub */
2:      shl $3, %eax
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
        .if TIMER
        mov $TIMER_VECTOR, %edx
        mov $timer_handler, %eax
        call set_gate
        .elseif SOFTINT
        softint_gates
        .endif
        ret

/* The vector table at 0: offset, then segment 0. */
set_gate:
        mov %ax, (,%edx,4)
        movw $0, 2(,%edx,4)
        ret

/* -- handlers ------------------------------------------------------------------- */

/* Stubs for the vectors no check expects, 8 bytes each; the last one serves 32-255. */
        .balign 8
exception_stubs:
        .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32
        .balign 8
        push $\vector
        jmp unexpected
        .endr

/* [sp] = the vector, then the CPU's frame: IP, CS, FLAGS. */
unexpected:
        mov %sp, %bp
        say "\nprobe: broken: unexpected vector "
        movzwl (%bp), %eax
        call put_dec
        say " at "
        movzwl 2(%bp), %eax
        call put_hex
        say "\n"
        exit_with PROBES_BROKEN

/* #DB: count it, note where and why, disarm DR7 (an instruction breakpoint
 * would fire again), end the guest's single-step. */
db_handler:
        push %bp
        mov %sp, %bp                    /* 2 = IP, 4 = CS, 6 = FLAGS */
        push %eax
        incl db_count
        movzwl 2(%bp), %eax
        mov %eax, db_rip
        mov %dr6, %eax
        mov %eax, db_dr6
        xor %eax, %eax
        mov %eax, %dr6
        mov $DR7_RESET, %eax
        mov %eax, %dr7
        andw $~FLAGS_TF, 6(%bp)
        pop %eax
        pop %bp
        iret

de_handler:
        push $0
        jmp fault
ud_handler:
        push $UD_VECTOR
        jmp fault
bp_handler:
        push $BP_VECTOR
        jmp fault
int2d_handler:
        push $INT2D_VECTOR
/* [sp] = vector, 2 = IP, 4 = CS, 6 = FLAGS (no error codes in real mode): note
 * the fault and resume where the check said (fault_resume). */
fault:
        push %bp
        mov %sp, %bp
        push %eax
        incl fault_count
        movzwl 2(%bp), %eax
        mov %eax, fault_vector
        movzwl 4(%bp), %eax
        mov %eax, fault_rip
        movzwl 8(%bp), %eax
        mov %eax, fault_flags
        mov fault_resume, %eax
        test %eax, %eax
        jz 1f
        mov %ax, 4(%bp)
        movl $0, fault_resume
        pop %eax
        pop %bp
        add $2, %sp
        iret
1:      pop %eax
        pop %bp
        jmp unexpected

        .if TIMER
timer_handler:
        push %bp
        mov %sp, %bp                    /* 2 = IP, 4 = CS, 6 = FLAGS */
        push %eax
        incl irq_count
        movzwl 2(%bp), %eax
        mov %eax, irq_rip
        movzwl 6(%bp), %eax
        mov %eax, irq_flags
        timer_eoi
        pop %eax
        pop %bp
        iret
        .endif

/* -- the probe window: copied to PROBE_PAGE - WINDOW_LEAD ---------------------- */

.macro real_probes
        .if TIMER
        probe_timer_bodies
/* A timer handler in the probed page. */
at inpage_timer_handler
        push %bp
        mov %sp, %bp                    /* 2 = IP, 4 = CS, 6 = FLAGS */
        push %eax
        incl irq_count
        movzwl 2(%bp), %eax
        mov %eax, irq_rip
        movzwl 6(%bp), %eax
        mov %eax, irq_flags
        timer_eoi
        pop %eax
        pop %bp
        iret
        .elseif SOFTINT
        probe_softint_bodies
        .else
        probe_common_bodies
at probe_pop_ss
        push %ss
        pop %ss
        pushf
        pop %ax
        movzwl %ax, %eax
        ret

at probe_mov_ss
        mov %ss, %ax
        mov %ax, %ss
        pushf
        pop %ax
        movzwl %ax, %eax
        ret

/* A #UD handler in the probed page: note the fault, resume after the ud2. */
at inpage_ud_handler
        push %bp
        mov %sp, %bp                    /* 2 = IP, 4 = CS, 6 = FLAGS */
        push %eax
        incl fault_count
        movl $UD_VECTOR, fault_vector
        movzwl 2(%bp), %eax
        mov %eax, fault_rip
        movzwl 6(%bp), %eax
        mov %eax, fault_flags
        movw $inpage_ud_resume_run, 2(%bp)
        pop %eax
        pop %bp
        iret
        .endif
.endm

        .if TIMER | SOFTINT
        probe_window_begin cross=0
        real_probes
        probe_window_end cross=0
        .else
        probe_window_begin
        real_probes
        probe_window_end
        .endif

        .data
        probe_library_data
