/* 32-bit flat protected mode: print a line on COM1 and halt. Loaded at 1 MiB. */
        .include "serial.inc"
        .code32
        .globl _start
_start:
        mov $message, %esi
        serial_puts
        hlt
message:
        .asciz "Hello from protected mode!\n"
