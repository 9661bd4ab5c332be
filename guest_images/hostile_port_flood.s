/* Long mode: an endless flood of single-byte `out`s to COM1 (one exit each,
 * on every host), a 64-byte line of 'x' and a newline again and again; only a
 * timeout or a signal ends it. */
        .code64
        .set COM1, 0x3f8
        .globl _start
_start:
        cld
        mov $COM1, %dx
1:
        mov $line, %esi
        mov $line_end - line, %ecx
2:
        lodsb
        out %al, %dx
        loop 2b
        jmp 1b
line:
        .fill 63, 1, 'x'
        .byte '\n'
line_end:
