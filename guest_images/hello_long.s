/* 64-bit long mode (VMM-built page tables): print a line on COM1 and halt. */
        .include "serial.inc"
        .code64
        .globl _start
_start:
        mov $message, %rsi
        serial_puts
        hlt
message:
        .asciz "Hello from long mode!\n"
