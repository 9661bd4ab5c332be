/* 32-bit protected mode: string I/O with counts far above a page.
 * 1. rep outsb of the first 1 MiB of guest RAM to COM1;
 * 2. rep insb of 1 MiB from an unclaimed port into 0x200000;
 * 3. rep outsb with ECX = 0xffffffff from 0x100000: the string runs off the
 *    end of RAM, so only a timeout (or an error) can end it. */
        .code32
        .set COM1, 0x3f8
        .set UNCLAIMED_PORT, 0x2000
        .set ONE_MIB, 0x100000
        .globl _start
_start:
        cld
        mov $COM1, %dx
        xor %esi, %esi
        mov $ONE_MIB, %ecx
        rep outsb
        mov $UNCLAIMED_PORT, %dx
        mov $0x200000, %edi
        mov $ONE_MIB, %ecx
        rep insb
        mov $COM1, %dx
        mov $ONE_MIB, %esi
        mov $0xffffffff, %ecx
        rep outsb
        hlt
