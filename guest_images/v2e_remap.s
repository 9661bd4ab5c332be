/* V2E precision: watched code calls linear 0x400000 twice with CR3 unchanged.
 * Before the first call that 2 MiB page maps gpa 0x400000 (mov $0x22222222, %eax;
 * ret); between the calls the watched code points its page-directory entry at gpa
 * 0x600000 (mov $0x11111111, %eax; ret) and flushes the page with INVLPG. The
 * results of both calls go to the test through the ucall port.
 * Watch 0x101000 (the caller) and 0x400000 (the first callee): the second call
 * runs code from an unwatched page. */
        .include "ucall.inc"
        .set BOOT_PD, 0x4000               /* the VMM's first page directory */
        .set CALLEE, 0x400000
        .set OTHER_CALLEE, 0x600000
        .code64
        .globl _start
_start:
        mov $first_callee, %esi
        mov $CALLEE, %edi
        mov $(callee_end - first_callee), %ecx
        rep movsb
        mov $second_callee, %esi
        mov $OTHER_CALLEE, %edi
        mov $(callee_end - first_callee), %ecx
        rep movsb
        jmp watched

        .balign 4096
watched:
        mov $CALLEE, %ebx
        call *%rbx
        mov %rax, %r12
        movq $(OTHER_CALLEE | 0x83), BOOT_PD + 8 * (CALLEE >> 21)   /* present, writable, 2 MiB */
        invlpg CALLEE
        call *%rbx
        mov %rax, %r13
        jmp report

        .balign 4096
report:
        ucall UCALL_REPORT, %r12, %r13
        ucall UCALL_DONE
        hlt

first_callee:
        mov $0x22222222, %eax
        ret
second_callee:
        mov $0x11111111, %eax
        ret
callee_end:
        ucall_block_storage
