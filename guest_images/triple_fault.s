/* Long mode: announce, load an empty IDT and raise #UD. The #UD cannot be
 * delivered (#GP), nor can the #GP (#DF), nor the #DF: a triple fault. */
        .include "serial.inc"
        .code64
        .globl _start
_start:
        mov $message, %rsi
        serial_puts
        lidt empty_idt
        ud2
        hlt
message:
        .asciz "about to triple fault\n"
        .balign 8
empty_idt:
        .word 0
        .quad 0
