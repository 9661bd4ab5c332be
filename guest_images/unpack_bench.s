/* The unpacking benchmark (README's figures, timed with and without --unpack): write 1 MiB of code at 0x400000 (256 pages of
 * NOPs, each ending in a jump to the next page; the last returns), then run all of it, and
 * exit through the test-exit device (status 1). */
        .set PAGES, 256
        .set CODE, 0x400000
        .code64
        .globl _start
_start:
        mov $CODE, %edi
        mov $PAGES, %edx
1:      mov $(4096 - 8) / 8, %ecx
        mov $0x9090909090909090, %rax
        rep stosq
        mov $0x90909000000003e9, %rax      /* jmp +3 (to the next page), then NOPs */
        stosq
        dec %edx
        jnz 1b
        movb $0xc3, -8(%rdi)               /* the last page returns */
        mov $CODE, %eax
        call *%rax
        xor %eax, %eax
        out %al, $0xf4
        hlt
