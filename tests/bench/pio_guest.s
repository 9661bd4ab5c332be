/* The PIO benchmark guest (32-bit protected mode, flat segments, no paging):
 * `out %al, %dx` to COM1 ITERATIONS times, then hlt. The count is the
 * immediate at byte offset 1, which the benchmark patches. */
        .code32
        .globl _start
_start:
        mov $1000000, %ecx
        mov $0x3f8, %dx
        mov $'.', %al
1:
        out %al, %dx
        dec %ecx
        jnz 1b
        hlt
