/* A three-layer packer, assembled for 16-bit real, 32-bit protected or 64-bit long mode
 * (BITS 16, 32 or 64). The loader decrypts layer 2 into LAYER2 and calls it; layer 2
 * decrypts layer 3 into LAYER3 and calls it; layer 3 prints and exits (status 65). The
 * file is assembled three times (see the Makefile): with LAYER=3, linked at LAYER3 and
 * XORed with KEY_BYTE into layer3.enc; with LAYER=2, embedding layer3.enc, linked at
 * LAYER2, into layer2.enc; and as the loader, embedding layer2.enc. Only the layers' own
 * pages are written, so exactly two layers run freshly written code. */
        .include "serial.inc"
        .include "unpack.inc"
        .if BITS == 16
        .code16
        .elseif BITS == 32
        .code32
        .else
        .code64
        .endif
        .globl _start

        .ifdef LAYER
        .if LAYER == 3
_start:
        mov $message, %esi
        serial_puts
        test_exit 0x20
message:
        .asciz "layer 3: unpacked\n"

        .else
_start:
        mov $message, %esi
        serial_puts
        mov $layer3, %esi
        mov $LAYER3, %edi
        mov $(layer3_end - layer3), %ecx
        xor_copy
        call_at LAYER3
message:
        .asciz "layer 2: unpacking layer 3\n"
layer3:
        .incbin "layer3.enc"
layer3_end:
        .endif

        .else
_start:
        mov $message, %esi
        serial_puts
        mov $layer2, %esi
        mov $LAYER2, %edi
        mov $(layer2_end - layer2), %ecx
        xor_copy
        call_at LAYER2
message:
        .asciz "loader: unpacking layer 2\n"
layer2:
        .incbin "layer2.enc"
layer2_end:
        .endif
