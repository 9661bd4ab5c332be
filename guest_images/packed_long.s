/* Packed sample, 64-bit long mode. The loader prints a line, copies an
 * XOR-encrypted payload into the payload page, decrypts it in place (data
 * reads and writes of that page), calls it ENTRIES times, prints the
 * checksum the payload stored outside its page, and exits through the
 * test-exit device with the checksum's low 7 bits.
 *
 * The file is assembled twice (see the Makefile): with PAYLOAD_ONLY for the
 * payload alone, linked at PAYLOAD_PAGE and XORed with KEY_BYTE, then
 * without it for the loader, which embeds that encrypted payload.
 * Instructions per payload entry: 1 + (12 * 16 + 3) + 2 + 4 * LOOP_COUNT + 2
 * (the message has 16 characters; serial_puts costs 12 per character and 3 at
 * the end), i.e. 200 + 4 * LOOP_COUNT = 264.
 */
        .include "serial.inc"
        .ifndef ENTRIES
        .set ENTRIES, 1
        .endif
        .set RESULT, 0x180000
        .set LOOP_COUNT, 16
        .code64

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
        .balign 8, 0

        .else
        .set KEY, KEY_BYTE * 0x0101010101010101
        .globl _start
_start:
        mov $banner, %esi
        serial_puts
        /* Copy the encrypted payload into its page, 8 bytes at a time. */
        mov $payload, %esi
        mov $PAYLOAD_PAGE, %edi
        mov $((payload_end - payload) / 8), %ecx
1:      mov (%rsi), %rax
        mov %rax, (%rdi)
        add $8, %rsi
        add $8, %rdi
        dec %ecx
        jnz 1b
        /* Decrypt it in place. */
        mov $PAYLOAD_PAGE, %edi
        mov $((payload_end - payload) / 8), %ecx
        movabs $KEY, %rdx
2:      xor %rdx, (%rdi)
        add $8, %rdi
        dec %ecx
        jnz 2b
        /* Run it; sum what each entry stores at RESULT. */
        mov $ENTRIES, %r12d
        xor %r13d, %r13d
3:      mov $PAYLOAD_PAGE, %eax
        call *%rax
        add RESULT, %r13d
        dec %r12d
        jnz 3b
        /* Print the sum in hexadecimal. */
        mov $(digits + 7), %edi
        mov %r13d, %eax
        mov $8, %ecx
4:      mov %eax, %edx
        and $0xf, %edx
        movb hex(%rdx), %dl
        movb %dl, (%rdi)
        dec %rdi
        shr $4, %eax
        dec %ecx
        jnz 4b
        mov $checksum, %esi
        serial_puts
        mov %r13d, %eax
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
        .balign 8
payload:
        .incbin "payload.enc"
payload_end:
        .endif
