/* Long mode: announce, then spin forever without exits (only --timeout ends it). */
        .include "serial.inc"
        .code64
        .globl _start
_start:
        mov $message, %rsi
        serial_puts
spin:
        jmp spin
message:
        .asciz "spinning forever\n"
