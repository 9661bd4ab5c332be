/* Packed sample, 16-bit real mode (see packed_long.s for the scheme); the
 * loop uses 32-bit registers through operand-size prefixes. Instructions per
 * payload entry: 1 + (12 * 16 + 3) + 2 + 4 * LOOP_COUNT + 2 = 264. */
        .include "serial.inc"
        .set RESULT, 0xa000
        .set LOOP_COUNT, 16
        .code16

        .ifdef PAYLOAD_ONLY
        .globl _start
_start:
        mov $message, %si
        serial_puts
        xor %eax, %eax
        mov $LOOP_COUNT, %ecx
1:      add %ecx, %eax
        rol $3, %eax
        dec %ecx
        jnz 1b
        mov %eax, RESULT
        ret
message:
        .asciz "payload running\n"
        .balign 4, 0

        .else
        .set KEY, KEY_BYTE * 0x01010101
        .globl _start
_start:
        mov $banner, %si
        serial_puts
        mov $payload, %si
        mov $PAYLOAD_PAGE, %di
        mov $((payload_end - payload) / 4), %cx
1:      mov (%si), %eax
        mov %eax, (%di)
        add $4, %si
        add $4, %di
        dec %cx
        jnz 1b
        mov $PAYLOAD_PAGE, %di
        mov $((payload_end - payload) / 4), %cx
        mov $KEY, %edx
2:      xor %edx, (%di)
        add $4, %di
        dec %cx
        jnz 2b
        mov $PAYLOAD_PAGE, %ax
        call *%ax
        mov RESULT, %ebp
        mov $(digits + 7), %di
        mov %ebp, %eax
        mov $8, %cx
4:      mov %ax, %bx
        and $0xf, %bx
        movb hex(%bx), %dl
        movb %dl, (%di)
        dec %di
        shr $4, %eax
        dec %cx
        jnz 4b
        mov $checksum, %si
        serial_puts
        mov %ebp, %eax
        and $0x7f, %ax
        out %al, $0xf4
        hlt
banner:
        .asciz "loader: unpacking\n"
checksum:
        .ascii "checksum "
digits:
        .asciz "00000000\n"
hex:
        .ascii "0123456789abcdef"
        .balign 4
payload:
        .incbin "payload.enc"
payload_end:
        .endif
