/* Packed sample, 32-bit flat protected mode without paging (see
 * packed_long.s for the scheme). Instructions per payload entry:
 * 1 + (12 * 16 + 3) + 2 + 4 * LOOP_COUNT + 2 = 264. */
        .include "serial.inc"
        .set RESULT, 0x180000
        .set LOOP_COUNT, 16
        .code32

        .ifdef PAYLOAD_ONLY
        .globl _start
_start:
        mov $message, %esi
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
        mov $banner, %esi
        serial_puts
        mov $payload, %esi
        mov $PAYLOAD_PAGE, %edi
        mov $((payload_end - payload) / 4), %ecx
1:      mov (%esi), %eax
        mov %eax, (%edi)
        add $4, %esi
        add $4, %edi
        dec %ecx
        jnz 1b
        mov $PAYLOAD_PAGE, %edi
        mov $((payload_end - payload) / 4), %ecx
        mov $KEY, %edx
2:      xor %edx, (%edi)
        add $4, %edi
        dec %ecx
        jnz 2b
        mov $PAYLOAD_PAGE, %eax
        call *%eax
        mov RESULT, %ebp
        mov $(digits + 7), %edi
        mov %ebp, %eax
        mov $8, %ecx
4:      mov %eax, %edx
        and $0xf, %edx
        movb hex(%edx), %dl
        movb %dl, (%edi)
        dec %edi
        shr $4, %eax
        dec %ecx
        jnz 4b
        mov $checksum, %esi
        serial_puts
        mov %ebp, %eax
        and $0x7f, %eax
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
