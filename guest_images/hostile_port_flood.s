/* Long mode: millions of writes to COM1. First FLOOD_PAGES rep outsb of a
 * 4 KiB pattern (each 4095 'A' and a newline), then SINGLE_WRITES single
 * `out`s of 'x', one exit each; then halt. */
        .code64
        .set COM1, 0x3f8
        .set FLOOD_PAGES, 1024
        .set SINGLE_WRITES, 100000
        .globl _start
_start:
        cld
        mov $COM1, %dx
        mov $FLOOD_PAGES, %r8d
1:
        mov $pattern, %esi
        mov $4096, %ecx
        rep outsb
        dec %r8d
        jnz 1b
        mov $SINGLE_WRITES, %ecx
        mov $'x', %al
2:
        out %al, %dx
        dec %ecx
        jnz 2b
        hlt
        .balign 4096
pattern:
        .fill 4095, 1, 'A'
        .byte '\n'
