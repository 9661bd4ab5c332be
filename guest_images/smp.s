/* An SMP multiboot kernel (32-bit protected mode). The bootstrap CPU reads the
 * CPU count from fw_cfg, starts the others with INIT/SIPI/SIPI through its
 * local APIC, and every CPU prints its APIC id in turn (APIC id order, so the
 * output is exact). Once all have reported, every CPU calls `shared_code`, alone
 * in the page at 0x101000, CALLS times at once with the others; when all are
 * done the bootstrap CPU prints the count of calls and exits through
 * isa-debug-exit with a 32-bit write.
 * With BARRIER defined (smp_barrier.s), shared_code is a spin barrier instead,
 * called once per CPU: each CPU waits there until every CPU has arrived (or gives
 * up after BARRIER_SPINS turns, and the run ends with status 3).
 * With UNPACK defined (unpack_smp.s), the bootstrap CPU writes a payload into the page
 * at UNPACKED and the CPU with APIC id 1 runs it: one CPU writes, another executes. */
        .include "serial.inc"
        .include "fw_cfg.inc"

        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000000
        .set MB_BOOT_MAGIC, 0x2BADB002
        .set EXIT_PORT, 0xf4
        .set EXIT_VALUE, 0x10              /* process exit status (0x10 << 1) | 1 = 33 */
        .set LAPIC_ID, 0xFEE00020
        .set LAPIC_SVR, 0xFEE000F0
        .set LAPIC_ICR_LOW, 0xFEE00300
        .set LAPIC_ICR_HIGH, 0xFEE00310
        .set ICR_INIT_OTHERS, 0x000C4500   /* all excluding self, assert, INIT */
        .set ICR_SIPI_OTHERS, 0x000C4600   /* all excluding self, start-up; | vector */
        .set ICR_BUSY, 1 << 12
        .set TRAMPOLINE, 0x10000           /* start-up vector 0x10 */
        .set STACK_SIZE, 4096
        .set MAX_CPUS, 16
        .ifdef UNPACK
        .set CALLS, 0
        .set UNPACKED, 0x300000
        .else
        .ifdef BARRIER
        .set CALLS, 1
        .set BARRIER_SPINS, 100000
        .else
        .set CALLS, 25                     /* calls of shared_code per CPU */
        .endif
        .endif

        /* The multiboot header leads .text: it must lie in the image's first 8 KiB,
         * and .text, with shared_code's page in it, is larger. */
        .text
        .balign 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
        .code32
        .globl _start
_start:
        mov $stacks + STACK_SIZE, %esp
        cmp $MB_BOOT_MAGIC, %eax
        jne fail
        lgdt gdt_pointer
        ljmp $0x08, $1f
1:      mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss

        fw_cfg_read FW_CFG_SIGNATURE, 4
        cmp $0x554D4551, %eax              /* "QEMU" */
        jne fail
        fw_cfg_read FW_CFG_NB_CPUS, 2
        cmp $MAX_CPUS, %eax
        ja fail
        mov %eax, cpu_count
        mov $cpus_label, %esi
        serial_puts
        mov cpu_count, %eax
        call putdec
        mov $newline, %esi
        serial_puts

        call report                        /* APIC id 0: turn 0 */

        /* Copy the real-mode start-up code below 1 MiB, then INIT, SIPI, SIPI. */
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
        call wait_icr

        mov cpu_count, %ecx
2:      pause
        cmp turn, %ecx
        jne 2b
        mov $done_label, %esi
        serial_puts
        mov cpu_count, %eax
        call putdec
        mov $done_tail, %esi
        serial_puts

        .ifdef UNPACK
        mov $payload, %esi                 /* write the payload where CPU 1 will run it */
        mov $UNPACKED, %edi
        mov $(payload_end - payload), %ecx
        rep movsb
        .endif
        movl $1, go                        /* every CPU calls shared_code at once */
        call call_shared_code
        mov cpu_count, %ecx
3:      pause
        cmp finished, %ecx
        jne 3b
        mov $calls_label, %esi
        serial_puts
        mov calls, %eax
        call putdec
        mov $newline, %esi
        serial_puts
        .ifdef BARRIER
        cmpl $0, barrier_timeouts
        jne barrier_failed
        .endif
        mov $EXIT_PORT, %dx
        mov $EXIT_VALUE, %eax
        out %eax, %dx
        cli
        hlt

        .ifdef BARRIER
barrier_failed:
        mov $barrier_message, %esi
        serial_puts
        jmp exit_failure
        .endif

fail:
        mov $fail_message, %esi
        serial_puts
exit_failure:
        mov $EXIT_PORT, %dx
        mov $1, %eax
        out %eax, %dx
        cli
        hlt

wait_icr:
        testl $ICR_BUSY, LAPIC_ICR_LOW
        jnz wait_icr
        ret

/* Wait until it is this CPU's turn (turn == its APIC id), print, pass the turn on. */
report:
        mov LAPIC_ID, %ebp
        shr $24, %ebp
1:      pause
        cmp turn, %ebp
        jne 1b
        mov $apic_label, %esi
        serial_puts
        mov %ebp, %eax
        call putdec
        mov $online_label, %esi
        serial_puts
        lea 1(%ebp), %eax
        mov %eax, turn
        ret

/* Wait for the go, call shared_code CALLS times, count this CPU as finished. */
call_shared_code:
1:      pause
        cmpl $0, go
        je 1b
        .ifdef UNPACK
        mov LAPIC_ID, %eax
        shr $24, %eax
        cmp $1, %eax
        jne 3f
        mov $UNPACKED, %eax
        call *%eax
3:      lock incl finished
        ret
        .endif
        mov $CALLS, %ebx
2:      call shared_code
        dec %ebx
        jnz 2b
        lock incl finished
        ret

/* Print EAX in decimal (each CPU has its own buffer on its stack). */
putdec:
        push %ebx
        sub $12, %esp
        lea 11(%esp), %esi
        movb $0, (%esi)
        mov $10, %ecx
1:      xor %edx, %edx
        div %ecx
        add $'0', %dl
        dec %esi
        mov %dl, (%esi)
        test %eax, %eax
        jnz 1b
        serial_puts
        add $12, %esp
        pop %ebx
        ret

/* Application processors: start here in real mode at TRAMPOLINE (CS = 0x1000). */
        .code16
ap_start:
        cli
        mov %cs, %ax
        mov %ax, %ds
        lgdtl ap_gdt_pointer - ap_start
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x08, $ap_protected
        .balign 4
ap_gdt_pointer:
        .word gdt_end - gdt - 1
        .long gdt
ap_end:

        .code32
ap_protected:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov LAPIC_ID, %eax
        shr $24, %eax
        inc %eax
        imul $STACK_SIZE, %eax
        lea stacks(%eax), %esp             /* the top of this CPU's own stack */
        call report
        call call_shared_code
1:      cli
        hlt
        jmp 1b

/* Alone in its page (0x101000 with the Makefile's -Ttext): the code to watch. */
        .org 0x1000
shared_code:
        .ifdef BARRIER
        lock incl arrived
        mov $BARRIER_SPINS, %ecx
1:      mov arrived, %eax
        cmp cpu_count, %eax
        jae 2f
        pause
        dec %ecx
        jnz 1b
        lock incl barrier_timeouts
2:
        .else
        mov $3, %ecx
1:      dec %ecx
        jnz 1b
        .endif
        lock incl calls
        ret
        .org 0x2000

        .data
        .balign 8
gdt:
        .quad 0
        .quad 0x00CF9A000000FFFF           /* 0x08: 32-bit flat code */
        .quad 0x00CF92000000FFFF           /* 0x10: flat data */
gdt_end:
gdt_pointer:
        .word gdt_end - gdt - 1
        .long gdt

cpu_count:    .long 0
turn:         .long 0
go:           .long 0
finished:     .long 0
calls:        .long 0
arrived:      .long 0
barrier_timeouts: .long 0
barrier_message: .asciz "smp: the barrier timed out\n"
        .ifdef UNPACK
/* Copied to UNPACKED by the bootstrap CPU, run by CPU 1 (absolute addresses only). */
payload:
        mov $payload_message, %esi
        serial_puts
        lock incl calls
        ret
payload_end:
payload_message: .asciz "smp: cpu 1 runs the payload cpu 0 wrote\n"
        .endif
cpus_label:   .asciz "smp: fw_cfg reports "
apic_label:   .asciz "cpu with apic id "
online_label: .asciz " online\n"
done_label:   .asciz "smp: all "
done_tail:    .asciz " cpus reported\n"
calls_label:  .asciz "smp: calls of the shared code: "
newline:      .asciz "\n"
fail_message: .asciz "smp: bad boot state\n"

        .bss
        .balign 4096
stacks: .space STACK_SIZE * MAX_CPUS
