/* Anti-analysis probe: two vCPUs meet at a spin barrier inside the probed page
 * (32-bit protected mode, `--machine pc --smp 2`; the scheme: include/probe.inc).
 *
 * The bootstrap CPU copies the probe window into place, checks through fw_cfg
 * that there are two CPUs, starts the other with INIT/SIPI/SIPI and waits for
 * it to come up; then both run the barrier at once: each counts itself in and
 * spins until the other has too, bounded in cycles and in iterations so that
 * a CPU left alone gives up. The bootstrap CPU prints how each fared and exits
 * through the test-exit device with status 33, as smp.s does.
 */
        .include "probe.inc"
        .include "fw_cfg.inc"

        .set PROBE_PAGE, 0x200000
        .set MOV_IMM32_LENGTH, 5
        .set SEL_CODE, 0x08
        .set SEL_DATA, 0x10
        .set LAPIC_SVR, 0xfee000f0
        .set LAPIC_ICR_LOW, 0xfee00300
        .set LAPIC_ICR_HIGH, 0xfee00310
        .set ICR_INIT_OTHERS, 0x000c4500   /* all excluding self, assert, INIT */
        .set ICR_SIPI_OTHERS, 0x000c4600   /* all excluding self, start-up; | vector */
        .set ICR_BUSY, 1 << 12
        .set TRAMPOLINE, 0x10000           /* start-up vector 0x10 */
        .set AP_STACK, 0x70000
        .set START_BOUND, 2000000          /* iterations waiting for the other CPU to start or finish */
        .set BARRIER_CYCLES, 500000000     /* a CPU left alone at the barrier gives up after this */
        .set BARRIER_SPINS, 100000         /* ... or this many turns */

.macro call_ebx
        call *%ebx
.endm
.macro eax_to_dr n
        mov %eax, %dr\n
.endm

        .code32
        .text
        .globl _start
_start:
        jmp main
        probe_header "--mode protected --machine pc --smp 2"

main:
        lgdt gdt_pointer
        ljmp $SEL_CODE, $1f
1:      mov $SEL_DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        copy_probe_window
        call read_selection
        check "smp-barrier", check_smp_barrier
        exit_with PROBES_DONE

/* 12. "cpu0 passed, cpu1 passed": how each CPU fared at the barrier. */
check_smp_barrier:
        fw_cfg_read FW_CFG_NB_CPUS, 2
        cmp $2, %eax
        je 1f
        call put_dec
        say " cpus, needs 2"
        ret
1:      call start_other_cpu
        mov $START_BOUND, %ecx
2:      cmpl $0, other_ready
        jne 3f
        pause
        dec %ecx
        jnz 2b
        say "the other cpu did not start"
        ret
3:      movl $1, go
        call probe_barrier_run
        mov %eax, passed
        mov $START_BOUND, %ecx
4:      cmpl $0, other_done
        jne 5f
        pause
        dec %ecx
        jnz 4b
        say "the other cpu did not finish"
        ret
5:      say "cpu0 "
        mov passed, %eax
        call put_passed
        say ", cpu1 "
        mov passed + 4, %eax
/* "passed" when EAX is 1, else "timed out". */
put_passed:
        test %eax, %eax
        jz 1f
        say "passed"
        ret
1:      say "timed out"
        ret

/* Copy the real-mode start-up code below 1 MiB, then INIT, SIPI, SIPI. */
start_other_cpu:
        mov $ap_start, %esi
        mov $TRAMPOLINE, %edi
        mov $ap_end - ap_start, %ecx
        rep movsb
        orl $0x100, LAPIC_SVR              /* software-enable the local APIC */
        movl $0, LAPIC_ICR_HIGH
        movl $ICR_INIT_OTHERS, LAPIC_ICR_LOW
        call wait_icr
        movl $ICR_SIPI_OTHERS | (TRAMPOLINE >> 12), LAPIC_ICR_LOW
        call wait_icr
        movl $ICR_SIPI_OTHERS | (TRAMPOLINE >> 12), LAPIC_ICR_LOW
wait_icr:
        testl $ICR_BUSY, LAPIC_ICR_LOW
        jnz wait_icr
        ret

        probe_library

/* The other CPU: starts here in real mode at TRAMPOLINE (CS = 0x1000). */
        .code16
ap_start:
        cli
        mov %cs, %ax
        mov %ax, %ds
        lgdtl ap_gdt_pointer - ap_start
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $SEL_CODE, $ap_protected
        .balign 4
ap_gdt_pointer:
        .word gdt_end - gdt - 1
        .long gdt
ap_end:

        .code32
ap_protected:
        mov $SEL_DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $AP_STACK, %esp
        movl $1, other_ready
1:      cmpl $0, go
        jne 2f
        pause
        jmp 1b
2:      call probe_barrier_run
        mov %eax, passed + 4
        movl $1, other_done
3:      cli
        hlt
        jmp 3b

/* -- the probe window: copied to PROBE_PAGE - WINDOW_LEAD ---------------------- */

        probe_window_begin cross=0
/* Count this CPU in, then spin until both are: EAX = 1, or 0 when the bound
 * ran out first. */
at probe_barrier
        lock incl arrived
        rdtsc
        mov %eax, %esi
        mov %edx, %edi
        mov $BARRIER_SPINS, %ebx
at barrier_spin
        cmpl $2, arrived
        je barrier_passed
        pause
        dec %ebx
        jz barrier_timed_out
        rdtsc
        sub %esi, %eax
        sbb %edi, %edx
        jnz barrier_timed_out
        cmp $BARRIER_CYCLES, %eax
        jb barrier_spin
at barrier_timed_out
        xor %eax, %eax
        ret
at barrier_passed
        mov $1, %eax
        ret
        probe_window_end cross=0

        .data
        .balign 8
gdt:
        .quad 0
        .quad 0x00CF9A000000FFFF           /* 0x08: 32-bit flat code */
        .quad 0x00CF92000000FFFF           /* 0x10: flat data */
gdt_end:
        .balign 4
        .word 0
gdt_pointer:
        .word gdt_end - gdt - 1
        .long gdt
other_ready: .long 0
go:          .long 0
arrived:     .long 0
other_done:  .long 0
passed:      .long 0, 0                    /* per CPU: 1 passed, 0 timed out */
        probe_library_data
