/* V2E transparency, 64-bit long mode on --machine pc: the in-kernel LAPIC timer interrupts
 * code in the probed page at 0x102000 (the one a test watches).
 *   1 a periodic timer while the probed code spins until the handler has run (bounded):
 *     interrupts taken, the TF bit of the RFLAGS image the CPU pushed, spins left (> 0)
 *   2 sti; hlt in the probed page: the next timer interrupt wakes it: interrupts taken
 * Each reported through the ucall port as (probe, value, value, value). */
        .include "ucall.inc"
        .set CODE_SEL, 0x08
        .set TF, 0x100
        .set LAPIC, 0xFEE00000
        .set LAPIC_EOI, 0xB0                      /* register offsets; RBX holds LAPIC */
        .set LAPIC_SVR, 0xF0
        .set LAPIC_LVT_TIMER, 0x320
        .set LAPIC_TIMER_INITIAL, 0x380
        .set LAPIC_TIMER_DIVIDE, 0x3E0
        .set TIMER_VECTOR, 0x40
        .set PERIODIC, 1 << 17
        .set SPINS, 50000000
        .code64
        .globl _start
_start:
        mov $timer_handler, %rax
        mov $(idt + 16 * TIMER_VECTOR), %rdi
        mov %ax, (%rdi)
        movw $CODE_SEL, 2(%rdi)
        movw $0x8e00, 4(%rdi)
        shr $16, %rax
        mov %ax, 6(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        lidt idt_pointer
        mov $LAPIC, %ebx
        movl $0x1ff, LAPIC_SVR(%rbx)              /* software-enable the LAPIC */
        movl $0xB, LAPIC_TIMER_DIVIDE(%rbx)       /* divide by 1 */
        movl $(PERIODIC | TIMER_VECTOR), LAPIC_LVT_TIMER(%rbx)
        movl $200000, LAPIC_TIMER_INITIAL(%rbx)
        call spin_probe
        mov %r12, %r13
        ucall UCALL_REPORT, $1, ticks, pushed_tf, %r13
        movq $0, ticks
        call hlt_probe
        ucall UCALL_REPORT, $2, ticks
        mov $LAPIC, %ebx
        movl $0, LAPIC_TIMER_INITIAL(%rbx)        /* stop the timer */
        ucall UCALL_DONE
        hlt

timer_handler:
        /* The first instruction moves RSP up, as a handler dropping an error code does: on a host
         * that reports the step one instruction into the handler, the frame is below RSP. */
        lea 8(%rsp), %rsp
        lea -8(%rsp), %rsp
        push %rax
        incq ticks
        mov 24(%rsp), %rax
        and $TF, %eax
        or %rax, pushed_tf
        mov $LAPIC, %eax
        movl $0, LAPIC_EOI(%rax)
        pop %rax
        iretq

        .balign 8
idt_pointer:
        .word 16 * 256 - 1
        .quad idt
ticks:      .quad 0
pushed_tf:  .quad 0
        ucall_block_storage
        .balign 16
idt:    .fill 256 * 16, 1, 0

/* The probed page. */
        .balign 4096
spin_probe:
        mov $SPINS, %r12
        sti
1:      cmpq $0, ticks
        jne 2f
        dec %r12
        jnz 1b
2:      cli
        ret

hlt_probe:
        sti
        hlt
        cli
        ret
        .balign 4096
