/* Unpacking samples, 64-bit long mode, one per CASE (see the Makefile):
 *   1 multipage: a payload of three pages at 0x400000, entered at its start, running through
 *     all three: one layer of three pages
 *   2 midentry: a one-page payload at 0x200000 entered in its middle (0x200800): one layer
 *   3 decoy: two pages of data written at 0x500000 and read back, never run: no layer
 *   4 selfmod: a loop at 0x200000 that rewrites its own immediate on each of its 100 turns:
 *     101 layers (the copy, then one per rewrite), unless --max-layers ends it sooner
 * Payloads are assembled on their own (PAYLOAD_ONLY, linked where they run), XORed with
 * KEY_BYTE, and embedded in the loader, which decrypts them in place before it jumps. Mutable
 * data lives in its own page, so only the pages named above run freshly written code. */
        .include "serial.inc"
        .include "unpack.inc"
        .set BITS, 64
        .code64
        .globl _start

        .ifdef PAYLOAD_ONLY
        .if CASE == 1
_start:                                   /* 0x400000 */
        mov $first, %esi
        serial_puts
        jmp second_page
first:  .asciz "multipage: first page\n"
        .org 0x1000
second_page:                              /* 0x401000: sum the table in the third page */
        xor %eax, %eax
        mov $table, %esi
        mov $(table_end - table), %ecx
1:      movzbl (%rsi), %edx
        add %edx, %eax
        inc %rsi
        loop 1b
        mov %eax, %ebp
        jmp third_page
        .org 0x2000
third_page:                               /* 0x402000 */
        mov $third, %esi
        serial_puts
        mov %ebp, %eax
        and $0x7f, %eax
        out %al, $0xf4
        hlt
third:  .asciz "multipage: third page, exit with the table's sum\n"
table:  .byte 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3
table_end:
        .elseif CASE == 2
_start:                                   /* 0x200000: never run */
        test_exit 1
        .org 0x800
middle:                                   /* 0x200800 */
        mov $message, %esi
        serial_puts
        test_exit 0x11
message: .asciz "midentry: entered in the middle of its page\n"
        .elseif CASE == 4
_start:                                   /* 0x200000 */
        mov $100, %ecx
        xor %ebx, %ebx
1:      mov $0, %eax                      /* its immediate goes up by one each turn */
        add %eax, %ebx
        incl 1b + 1
        loop 1b
        mov %ebx, %eax                    /* 0 + 1 + ... + 99 = 4950 */
        and $0x7f, %eax
        out %al, $0xf4
        hlt
        .endif

        .else
_start:
        .if CASE == 3
        mov $message, %esi
        serial_puts
        mov $DATA, %edi
        mov $(2 * 4096 / 8), %ecx
        mov $0x0123456789abcdef, %rax
1:      stosq
        ror $4, %rax
        loop 1b
        xor %ebx, %ebx                    /* read it back */
        mov $DATA, %esi
        mov $(2 * 4096 / 8), %ecx
2:      lodsq
        add %rax, %rbx
        loop 2b
        mov $done, %esi
        serial_puts
        mov %ebx, %eax
        and $0x7f, %eax
        out %al, $0xf4
        hlt
message: .asciz "decoy: writing data it never runs\n"
done:    .asciz "decoy: done\n"
        .else
        mov $message, %esi
        serial_puts
        mov $payload, %esi
        mov $PAYLOAD, %edi
        mov $(payload_end - payload), %ecx
        xor_copy
        mov $ENTRY, %eax
        jmp *%rax
message: .asciz "loader: decrypting the payload\n"
payload:
        .incbin "payload.enc"
payload_end:
        .endif
        .endif
