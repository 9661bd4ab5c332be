/* A small kernel with user mode and three address spaces, for --unpack-user
 * (tests/test_unpack_user.py). Run it with --unpack 0x200000+0x10000: the pages
 * below hold the user programs and the code they write.
 *
 * The kernel (CPL 0, identity-mapped 0-4 MiB with supervisor 2 MiB pages in
 * every address space) copies the user programs into their pages before any
 * address space runs, and runs a routine of its own from KERNEL_PAGE. Then:
 *   A runs WRITER (USER_TEXT -> PROGRAM_A): writes a payload into its buffer
 *     (USER_BUFFER -> BUFFER_A) and calls it;
 *   B runs RECYCLER (USER_TEXT -> PROGRAM_B): writes a payload into
 *     USER_BUFFER, which maps KERNEL_PAGE (a page the kernel ran, handed to a
 *     process), and calls it; then writes one through USER_ALIAS (writable,
 *     not executable) and calls it through USER_EXEC: both map DUAL_PAGE, so
 *     the mapping it runs from was never written through (its PTE stays clean);
 *   C runs WRITER again from PROGRAM_A (the text A ran: C starts unseen) with
 *     its own buffer (BUFFER_C).
 * Each payload makes a report system call with 0x1000 + the address space's
 * number; the kernel prints each report and ends the run through the test-exit
 * device (status 0x2b). User code enters the kernel with ud2, whose #UD handler
 * is the system call: this host's KVM delivers exceptions from user mode to the
 * guest kernel, but neither syscall nor int n. */
        .include "serial.inc"

        .set PROGRAM_A, 0x200000
        .set BUFFER_A, 0x201000
        .set PROGRAM_B, 0x202000
        .set KERNEL_PAGE, 0x203000
        .set DUAL_PAGE, 0x204000
        .set BUFFER_C, 0x205000
        .set TABLES, 0x180000            /* 0x8000 per address space (see build_space) */
        .set USER_STACKS, 0x1a0000       /* one page per address space */
        .set KERNEL_STACK, 0x90000

        .set USER_TEXT, 0x40000000       /* PDPT entry 1: the user half */
        .set USER_BUFFER, 0x40001000
        .set USER_ALIAS, 0x40002000
        .set USER_EXEC, 0x40003000
        .set USER_STACK_PAGE, 0x40010000

        .set PTE_USER_RWX, 0x7           /* present, writable, user */
        .set PTE_USER_RX, 0x5            /* present, user */
        .set PTE_NX_HIGH, 0x80000000     /* bit 63, in the entry's upper half */
        .set PDE_KERNEL_2M, 0x83         /* present, writable, supervisor, 2 MiB */

        .set SYS_REPORT, 1
        .set SYS_EXIT, 2
        .set SYSCALL_VECTOR, 6            /* #UD: ud2 is the system call */
        .set SEL_USER_CODE, 0x2b
        .set SEL_USER_DATA, 0x23
        .set SEL_TSS, 0x30
        .set MSR_EFER, 0xc0000080
        .set EFER_NXE, 0x800

        .code64
        .globl _start
_start:
        lgdt gdt_pointer
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $KERNEL_STACK, %rsp
        mov $MSR_EFER, %ecx
        rdmsr
        or $EFER_NXE, %eax
        wrmsr
        /* The TSS (its RSP0 is the kernel stack) and the system-call gate. */
        mov $tss, %eax
        mov %ax, gdt_tss + 2
        shr $16, %eax
        mov %al, gdt_tss + 4
        mov %ah, gdt_tss + 7
        mov $SEL_TSS, %ax
        ltr %ax
        mov $syscall_entry, %eax
        mov %ax, idt + 8 * 2 * SYSCALL_VECTOR
        shr $16, %eax
        mov %ax, idt + 8 * 2 * SYSCALL_VECTOR + 6
        lidt idt_pointer

        /* The address spaces: A = 0, B = 1, C = 2. */
        xor %edi, %edi
        call build_space
        mov $PROGRAM_A, %eax
        mov $BUFFER_A, %edx
        call map_text_and_buffer
        mov $1, %edi
        call build_space
        mov $PROGRAM_B, %eax
        mov $KERNEL_PAGE, %edx
        call map_text_and_buffer
        mov $(TABLES + 1 * 0x8000 + 0x4000 + 8 * 2), %ebx
        movq $(DUAL_PAGE | PTE_USER_RWX), (%rbx)
        movl $PTE_NX_HIGH, 4(%rbx)
        movq $(DUAL_PAGE | PTE_USER_RX), 8(%rbx)
        mov $2, %edi
        call build_space
        mov $PROGRAM_A, %eax
        mov $BUFFER_C, %edx
        call map_text_and_buffer

        /* The kernel loads the programs (through its own mapping) before they run. */
        mov $writer, %esi
        mov $PROGRAM_A, %edi
        mov $(writer_end - writer), %ecx
        rep movsb
        mov $recycler, %esi
        mov $PROGRAM_B, %edi
        mov $(recycler_end - recycler), %ecx
        rep movsb
        /* ... and runs code of its own from KERNEL_PAGE. */
        mov $kernel_routine, %esi
        mov $KERNEL_PAGE, %edi
        mov $(kernel_routine_end - kernel_routine), %ecx
        rep movsb
        mov $KERNEL_PAGE, %eax
        call *%rax
        cmp $0x77, %eax
        jne fail
        mov $kernel_ran, %esi
        serial_puts

        movl $0, current
        jmp enter_user

/* Page tables of address space EDI (TABLES + EDI * 0x8000: PML4, PDPT, the
 * kernel's PD, the user half's PD, its PT): the kernel's 0-4 MiB, and the user
 * half with the space's stack page. Clobbers RAX, RBX, RCX. */
build_space:
        mov %edi, %ebx
        shl $15, %ebx
        add $TABLES, %ebx                /* RBX: the PML4 */
        push %rdi
        mov %ebx, %edi
        xor %eax, %eax
        mov $(5 * 4096 / 8), %ecx
        rep stosq
        pop %rdi
        lea 0x1007(%rbx), %eax
        mov %rax, (%rbx)                 /* PML4[0] -> PDPT */
        lea 0x2007(%rbx), %eax
        mov %rax, 0x1000(%rbx)           /* PDPT[0] -> the kernel's PD */
        movq $(0 | PDE_KERNEL_2M), 0x2000(%rbx)
        movq $(0x200000 | PDE_KERNEL_2M), 0x2008(%rbx)
        lea 0x3007(%rbx), %eax
        mov %rax, 0x1008(%rbx)           /* PDPT[1] -> the user half's PD */
        lea 0x4007(%rbx), %eax
        mov %rax, 0x3000(%rbx)           /* its PD[0] -> the PT */
        mov %edi, %eax
        shl $12, %eax
        add $(USER_STACKS | PTE_USER_RWX), %eax
        mov %rax, 0x4000 + 8 * 16(%rbx)  /* USER_STACK_PAGE */
        ret

/* Map USER_TEXT -> EAX and USER_BUFFER -> EDX (writable, executable) in the
 * address space whose tables start at RBX. */
map_text_and_buffer:
        or $PTE_USER_RWX, %eax
        mov %rax, 0x4000(%rbx)
        or $PTE_USER_RWX, %edx
        mov %rdx, 0x4008(%rbx)
        ret

/* Run address space `current` from USER_TEXT. */
enter_user:
        mov current, %eax
        cmp $3, %eax
        je all_done
        mov %eax, %edi
        shl $15, %eax
        add $TABLES, %eax
        mov %rax, %cr3
        inc %edi                         /* RDI: the space's number, 1-3 */
        mov $KERNEL_STACK, %esp
        pushq $SEL_USER_DATA
        pushq $(USER_STACK_PAGE + 4096)
        pushq $0x2
        pushq $SEL_USER_CODE
        pushq $USER_TEXT
        iretq

/* ud2 from user mode (the TSS's RSP0 is the kernel stack): the system call
 * returns after the ud2. */
syscall_entry:
        addq $2, (%rsp)
        cmp $SYS_EXIT, %eax
        je sys_exit
        cmp $SYS_REPORT, %eax
        jne fail
        mov %edi, %r12d
        mov $report_text, %esi
        serial_puts
        mov %r12d, %edi
        call print_hex32
        mov $newline, %esi
        serial_puts
        iretq

sys_exit:
        incl current
        jmp enter_user

all_done:
        mov $done_text, %esi
        serial_puts
        mov $0xf4, %dx
        mov $0x15, %al
        out %al, %dx
        hlt

fail:
        mov $fail_text, %esi
        serial_puts
        mov $0xf4, %dx
        mov $0x7f, %al
        out %al, %dx
        hlt

/* Print EDI as 0x followed by 8 hex digits. Clobbers RAX, RBX, RCX, RDX, RSI, R13. */
print_hex32:
        mov $hex_prefix, %esi
        serial_puts
        mov $8, %ecx
        mov %edi, %r13d
1:      rol $4, %r13d
        mov %r13d, %eax
        and $0xf, %eax
        movzbl hex_digits(%rax), %eax
        mov %al, %bl
        mov $COM1_LSR, %dx
2:      in %dx, %al
        test $LSR_THRE, %al
        jz 2b
        mov $COM1, %dx
        mov %bl, %al
        out %al, %dx
        loop 1b
        ret

kernel_routine:
        mov $0x77, %eax
        ret
kernel_routine_end:

/* User programs: position independent, run at USER_TEXT with RDI = the space's
 * number. The payload: mov $imm32, %edi; mov $SYS_REPORT, %eax; ud2; ret */
        .set PAYLOAD_SIZE, payload_end - payload
writer:
        mov %edi, %r15d
        lea payload(%rip), %rsi
        mov $USER_BUFFER, %edi
        mov $PAYLOAD_SIZE, %ecx
        rep movsb
        lea 0x1000(%r15), %eax
        mov %eax, USER_BUFFER + 1
        mov $USER_BUFFER, %eax
        call *%rax
        mov $SYS_EXIT, %eax
        ud2
payload:
        mov $0, %edi
        mov $SYS_REPORT, %eax
        ud2
        ret
payload_end:
writer_end:

recycler:
        mov %edi, %r15d
        lea recycler_payload(%rip), %rsi
        mov $USER_BUFFER, %edi
        mov $PAYLOAD_SIZE, %ecx
        rep movsb
        lea 0x1000(%r15), %eax
        mov %eax, USER_BUFFER + 1
        mov $USER_BUFFER, %eax
        call *%rax
        lea recycler_payload(%rip), %rsi
        mov $USER_ALIAS, %edi
        mov $PAYLOAD_SIZE, %ecx
        rep movsb
        lea 0x2000(%r15), %eax
        mov %eax, USER_ALIAS + 1
        mov $USER_EXEC, %eax
        call *%rax
        mov $SYS_EXIT, %eax
        ud2
recycler_payload:
        mov $0, %edi
        mov $SYS_REPORT, %eax
        ud2
        ret
recycler_end:

        .balign 8
gdt:
        .quad 0
        .quad 0x00af9a000000ffff         /* 0x08: kernel code, 64-bit */
        .quad 0x00cf92000000ffff         /* 0x10: kernel data */
        .quad 0x00cffa000000ffff         /* 0x18: user code, 32-bit */
        .quad 0x00cff2000000ffff         /* 0x20: user data */
        .quad 0x00affa000000ffff         /* 0x28: user code, 64-bit */
gdt_tss:                                 /* 0x30: the 64-bit TSS (base filled in) */
        .word tss_end - tss - 1, 0
        .byte 0, 0x89, 0, 0
        .quad 0
gdt_end:
gdt_pointer:
        .word gdt_end - gdt - 1
        .quad gdt
        .balign 16
idt:                                     /* the system-call gate: interrupt gate */
        .fill 2 * SYSCALL_VECTOR, 8, 0
        .word 0, 0x08
        .byte 0, 0x8e
        .word 0
        .quad 0
idt_end:
idt_pointer:
        .word idt_end - idt - 1
        .quad idt
        .balign 8
tss:
        .long 0
        .quad KERNEL_STACK               /* RSP0 */
        .fill 23, 4, 0
tss_end:
current:
        .long 0
hex_digits:
        .ascii "0123456789abcdef"
hex_prefix:
        .asciz "0x"
kernel_ran:
        .asciz "kernel: ran its own routine\n"
report_text:
        .asciz "user: report "
newline:
        .asciz "\n"
done_text:
        .asciz "kernel: all address spaces exited\n"
fail_text:
        .asciz "kernel: unexpected system call\n"
