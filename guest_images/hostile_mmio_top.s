/* 32-bit protected mode, no paging: MMIO at the very top of the 4 GiB
 * physical space. Reads of 1, 2 and 4 bytes ending at 0xffffffff must see
 * all-ones and writes there are dropped; the guest then exits through the
 * test-exit device with 0x10 on success, or with 0x11, 0x12, 0x13 naming the
 * read that saw something else. */
        .code32
        .set DEBUG_EXIT, 0xf4
        .globl _start
_start:
        movl $0x12345678, 0xfffffffc
        movw $0x1234, 0xfffffffe
        movb $0x12, 0xffffffff
        movzbl 0xffffffff, %eax
        cmp $0xff, %eax
        mov $0x11, %al
        jne 1f
        movzwl 0xfffffffe, %eax
        cmp $0xffff, %eax
        mov $0x12, %al
        jne 1f
        movl 0xfffffffc, %eax
        cmp $0xffffffff, %eax
        mov $0x13, %al
        jne 1f
        mov $0x10, %al
1:
        out %al, $DEBUG_EXIT
        hlt
