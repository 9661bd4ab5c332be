/* V2E memory operands: the watched page at 0x101000 accesses memory through each
 * addressing form a trace records (tests/test_v2e_precise.py): base + index * scale +
 * displacement, RIP-relative, an FS segment base, the stack (push, pop, call, ret), a
 * string instruction, an operand straddling two pages, and lea, which accesses nothing. */
        .include "ucall.inc"
        .set MSR_FS_BASE, 0xC0000100
        .set DATA, 0x300000
        .code64
        .globl _start
_start:
        mov $MSR_FS_BASE, %ecx
        mov $(DATA + 0x100), %eax
        xor %edx, %edx
        wrmsr
        jmp watched

        .balign 4096
watched:
        mov $DATA, %ebx
        mov $3, %ecx
        movl $0x11223344, 0x10(%rbx,%rcx,4)     /* DATA + 0x1c, 4 bytes */
        mov datum(%rip), %rax                   /* datum, 8 bytes */
        movl $0x55667788, %fs:8                 /* DATA + 0x108, 4 bytes */
        push %rax                               /* the stack, 8 bytes */
        pop %rsi
        lea 0x40(%rbx), %rdi                    /* no access */
        call leaf                               /* the stack, 8 bytes, then ret reads them */
        mov $(DATA + 0x200), %edi
        stosw                                   /* ES:RDI, 2 bytes */
        mov $(DATA + 0xffe), %edi
        movl $0xaabbccdd, (%rdi)                /* DATA + 0xffe..0x1002 */
        jmp report
leaf:
        ret
datum:
        .quad 0x0123456789abcdef

        .balign 4096
report:
        ucall UCALL_DONE
        hlt
        ucall_block_storage
