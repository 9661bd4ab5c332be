/* 32-bit protected mode, on the pc machine: power off, reset, panic or suspend the
 * machine the way a kernel does, as the first byte waiting on COM1 asks:
 *   'o'  ACPI S5: find the RSDP in the BIOS area, the FADT through the RSDT, and write
 *        SLP_TYP(S5 = 0) | SLP_EN to its PM1a control block
 *   'r'  pulse the reset line through the i8042 (command 0xfe), as Linux's reboot does
 *   'p'  report a panic to the pvpanic device (port 0x505)
 *   's'  ACPI S3: put real-mode resume code at 0x9000, write it to the FACS waking
 *        vector, arm the RTC alarm (every second) as the wake-up event, and write
 *        SLP_TYP(S3 = 1) | SLP_EN; the resume code prints "resumed" and exits with 0x21
 * Anything else (or no input) exits through the test-exit device with 0x7f. Each request
 * that returns prints a line saying so and exits with 0x7e. */
        .include "serial.inc"
        .code32
        .set DEBUG_EXIT, 0xf4
        .set RESUME_AT, 0x9000
        .set SLP_EN, 0x2000
        .set SLP_TYP_S3, 1 << 10
        .set RTC_EN, 1 << 10
        .globl _start
_start:
        mov $COM1_LSR, %dx
        in %dx, %al
        test $LSR_DR, %al
        jz unknown
        mov $COM1, %dx
        in %dx, %al
        cmp $'o', %al
        je poweroff
        cmp $'r', %al
        je reset
        cmp $'p', %al
        je panic
        cmp $'s', %al
        je suspend
unknown:
        mov $0x7f, %al
        out %al, $DEBUG_EXIT
        hlt

/* EBX = the FADT, found from the RSDP (16-byte aligned in 0xe0000-0xfffff) and the RSDT. */
find_fadt:
        mov $0xe0000, %esi
1:      cmpl $0x20445352, (%esi)        # "RSD "
        jne 2f
        cmpl $0x20525450, 4(%esi)       # "PTR "
        je 3f
2:      add $16, %esi
        cmp $0x100000, %esi
        jb 1b
        jmp not_found
3:      mov 16(%esi), %esi              # RsdtAddress
        mov 4(%esi), %ecx               # Length
        lea 36(%esi), %edi              # the entries follow the header
        add %esi, %ecx
4:      cmp %ecx, %edi
        jae not_found
        mov (%edi), %ebx
        cmpl $0x50434146, (%ebx)        # "FACP"
        je 5f
        add $4, %edi
        jmp 4b
5:      ret
not_found:
        mov $msg_no_fadt, %esi
        serial_puts
        mov $0x7d, %al
        out %al, $DEBUG_EXIT
        hlt

poweroff:
        call find_fadt
        mov 64(%ebx), %edx              # PM1a_CNT_BLK
        mov $SLP_EN, %ax                # SLP_TYP for S5 is 0 (the DSDT's \_S5)
        out %ax, %dx
        jmp returned

reset:
        mov $0x64, %dx
1:      in %dx, %al                     # wait until the input buffer is empty
        test $0x02, %al
        jnz 1b
        mov $0xfe, %al
        out %al, %dx
        jmp returned

panic:
        mov $0x505, %dx
        mov $1, %al                     # PVPANIC_PANICKED
        out %al, %dx
        jmp returned

suspend:
        call find_fadt
        mov $resume_start, %esi
        mov $RESUME_AT, %edi
        mov $(resume_end - resume_start), %ecx
        rep movsb
        mov 36(%ebx), %edi              # FIRMWARE_CTRL: the FACS
        movl $RESUME_AT, 12(%edi)       # its firmware waking vector
        mov 56(%ebx), %edx              # PM1a_EVT_BLK: the enable register follows status
        add $2, %edx
        mov $RTC_EN, %ax
        out %ax, %dx
        mov $0xc0, %ah                  # alarm "don't care" in seconds, minutes, hours
        mov $1, %al
        call rtc_write
        mov $3, %al
        call rtc_write
        mov $5, %al
        call rtc_write
        mov $0x0b, %al                  # register B |= AIE
        out %al, $0x70
        in $0x71, %al
        or $0x20, %al
        mov %al, %ah
        mov $0x0b, %al
        call rtc_write
        mov 64(%ebx), %edx              # PM1a_CNT_BLK
        mov $(SLP_EN | SLP_TYP_S3), %ax
        out %ax, %dx
        jmp returned

/* CMOS register AL = AH */
rtc_write:
        out %al, $0x70
        mov %ah, %al
        out %al, $0x71
        ret

returned:
        mov $msg_returned, %esi
        serial_puts
        mov $0x7e, %al
        out %al, $DEBUG_EXIT
        hlt

/* Real-mode resume code, copied to RESUME_AT; it runs with CS = RESUME_AT >> 4. */
        .code16
resume_start:
        mov $COM1, %dx
        .irp char, 'r', 'e', 's', 'u', 'm', 'e', 'd', '\n'
        mov $\char, %al
        out %al, %dx
        .endr
        mov $0x21, %al
        out %al, $DEBUG_EXIT
        hlt
resume_end:
        .code32

msg_no_fadt:
        .asciz "pc_power: no FADT found\n"
msg_returned:
        .asciz "pc_power: the request returned\n"
