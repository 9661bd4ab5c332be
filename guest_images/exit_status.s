/* 32-bit protected mode: exit through the isa-debug-exit port (0xf4) with a
 * chosen value: the first byte waiting on COM1 if there is one, else 42.
 * The VMM (like QEMU) turns value V into process exit status (V << 1) | 1. */
        .include "serial.inc"
        .code32
        .set DEBUG_EXIT, 0xf4
        .set DEFAULT_VALUE, 42
        .globl _start
_start:
        mov $COM1_LSR, %dx
        in %dx, %al
        test $LSR_DR, %al
        mov $DEFAULT_VALUE, %al
        jz 1f
        mov $COM1, %dx
        in %dx, %al
1:
        out %al, $DEBUG_EXIT
        hlt
