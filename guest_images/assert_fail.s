/* Long mode: a guest assertion that fails, to show how the host reports it. */
        .include "ucall.inc"
        .code64
        .globl _start
_start:
        mov $6, %rbx
        imul $7, %rbx
        guest_assert_eq $43, %rbx, message, line=12
        ucall UCALL_DONE
        hlt
message:
        .asciz "six times seven"
        ucall_block_storage
