/* 32-bit protected mode: string I/O on COM1 with count > 1.
 * rep outsb a sentence; rep insb 16 bytes from the receiver; rep outsb them back. */
        .code32
        .set COM1, 0x3f8
        .set ECHO_LEN, 16
        .globl _start
_start:
        cld
        mov $COM1, %dx
        mov $sentence, %esi
        mov $sentence_end - sentence, %ecx
        rep outsb
        mov $echo_prefix, %esi
        mov $echo_prefix_end - echo_prefix, %ecx
        rep outsb
        mov $buffer, %edi
        mov $ECHO_LEN, %ecx
        rep insb
        mov $buffer, %esi
        mov $ECHO_LEN + 1, %ecx
        rep outsb
        hlt
sentence:
        .ascii "The quick brown fox jumps over the lazy dog; string I/O delivers every byte.\n"
sentence_end:
echo_prefix:
        .ascii "echo: "
echo_prefix_end:
buffer:
        .fill ECHO_LEN, 1, 0
        .byte '\n'
