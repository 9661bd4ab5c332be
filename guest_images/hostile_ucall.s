/* Long mode: malformed use of the ucall port. The test picks the variant by
 * writing the quadword at `variant` (0x100008) and its argument at
 * `argument` (0x100010) after loading the image.
 *   0: write `argument` itself as the address of the struct ucall;
 *   1: UCALL_ASSERT whose message address is `argument`;
 *   2: a 16-bit write of a valid struct address to the ucall port;
 *   3: a flood of REPORT_FLOOD UCALL_REPORTs (rep outsl), then UCALL_DONE. */
        .include "ucall.inc"
        .code64
        .set REPORT_FLOOD, 70000
        .set FLOOD_ADDRESSES, 0x400000
        .set REPORTING_LINE, 1
        .globl _start
_start:
        jmp main
        .balign 8
variant:
        .quad 0
argument:
        .quad 0
main:
        cld
        mov variant, %rax
        cmp $1, %rax
        je assert_message
        cmp $2, %rax
        je narrow_write
        cmp $3, %rax
        je report_flood
        mov argument, %rax
        mov $UCALL_PORT, %dx
        out %eax, %dx
        hlt
assert_message:
        mov argument, %rax
        mov %rax, ucall_block+8
        movl $UCALL_ASSERT, ucall_block
        movl $REPORTING_LINE, ucall_block+4
        mov $UCALL_PORT, %dx
        mov $ucall_block, %eax
        out %eax, %dx
        hlt
narrow_write:
        movl $UCALL_DONE, ucall_block
        mov $UCALL_PORT, %dx
        mov $ucall_block, %eax
        out %ax, %dx
        hlt
report_flood:
        movl $UCALL_REPORT, ucall_block
        movl $REPORTING_LINE, ucall_block+4
        mov $FLOOD_ADDRESSES, %rdi
        mov $REPORT_FLOOD, %rcx
        mov $ucall_block, %eax
        rep stosl
        mov $FLOOD_ADDRESSES, %rsi
        mov $REPORT_FLOOD, %rcx
        mov $UCALL_PORT, %dx
        rep outsl
        ucall UCALL_DONE
        hlt
        ucall_block_storage
