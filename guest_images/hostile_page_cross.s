/* 32-bit protected mode: string I/O whose buffers straddle page boundaries.
 * 1. rep insb 32 bytes from COM1 into a buffer across the 0x201000 boundary,
 *    then rep outsb them back to COM1;
 * 2. rep outsw 0x801 words from the odd address 0x300fff (three pages) to an
 *    unclaimed port;
 * 3. rep insl 0x401 dwords from an unclaimed port into 0x400ffe (two boundaries). */
        .code32
        .set COM1, 0x3f8
        .set ECHO_BUFFER, 0x200ff0
        .set ECHO_LEN, 32
        .set WORDS_PORT, 0x2002
        .set WORDS_FROM, 0x300fff
        .set WORDS, 0x801
        .set DWORDS_PORT, 0x2004
        .set DWORDS_TO, 0x400ffe
        .set DWORDS, 0x401
        .globl _start
_start:
        cld
        mov $COM1, %dx
        mov $ECHO_BUFFER, %edi
        mov $ECHO_LEN, %ecx
        rep insb
        mov $ECHO_BUFFER, %esi
        mov $ECHO_LEN, %ecx
        rep outsb
        mov $WORDS_PORT, %dx
        mov $WORDS_FROM, %esi
        mov $WORDS, %ecx
        rep outsw
        mov $DWORDS_PORT, %dx
        mov $DWORDS_TO, %edi
        mov $DWORDS, %ecx
        rep insl
        hlt
