/* V2E precision: an instruction that starts two bytes before the watched page at
 * 0x200000 and runs into it (b8 11 22 33 44: mov $0x44332211, %eax), then code in
 * the watched page, then back out. Linked at 0x1ff000 (vmm run --load-addr 0x1ff000
 * --entry 0x1ff000); watch 0x200000. */
        .include "ucall.inc"
        .code64
        .globl _start
_start:
        jmp straddler
        .org 0xffe
straddler:
        mov $0x44332211, %eax              /* bytes 0x1ffffe-0x200002 */
        add $1, %eax                       /* in the watched page */
        mov %rax, %r12
        mov $out, %ebx
        jmp *%rbx
        .org 0x2000
out:
        ucall UCALL_REPORT, %r12
        ucall UCALL_DONE
        hlt
        ucall_block_storage
