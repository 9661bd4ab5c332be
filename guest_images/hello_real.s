/* Real mode (16-bit): print a line on COM1 and halt. Loaded at 0x7c00. */
        .include "serial.inc"
        .code16
        .globl _start
_start:
        mov $message, %si
        serial_puts
        hlt
message:
        .asciz "Hello from real mode!\n"
