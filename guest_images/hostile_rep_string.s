/* 32-bit protected mode: string I/O with counts far above a page. Run with
 * 4 MiB of RAM. The test picks the variant by writing the quadword at
 * `variant` (0x100008) after loading the image.
 *   0: rep insb of 1 MiB from an unclaimed port into 0x200000, then rep outsb
 *      of the 4 KiB at 0x100000 to COM1, then hlt;
 *   1: rep outsb with ECX = 0xffffffff from 16 bytes below the end of RAM:
 *      the string runs off RAM, so only a timeout can end it;
 *   2: rep insb with ECX = 0xffffffff from an unclaimed port to 16 bytes
 *      below the end of RAM: likewise. */
        .code32
        .set COM1, 0x3f8
        .set UNCLAIMED_PORT, 0x2000
        .set RAM_END, 0x400000
        .globl _start
_start:
        jmp main
        .balign 8
variant:
        .quad 0
main:
        cld
        mov variant, %eax
        cmp $1, %eax
        je runaway_out
        cmp $2, %eax
        je runaway_in
        mov $UNCLAIMED_PORT, %dx
        mov $0x200000, %edi
        mov $0x100000, %ecx
        rep insb
        mov $COM1, %dx
        mov $0x100000, %esi
        mov $0x1000, %ecx
        rep outsb
        hlt
runaway_out:
        mov $COM1, %dx
        mov $RAM_END - 16, %esi
        mov $0xffffffff, %ecx
        rep outsb
        hlt
runaway_in:
        mov $UNCLAIMED_PORT, %dx
        mov $RAM_END - 16, %edi
        mov $0xffffffff, %ecx
        rep insb
        hlt
