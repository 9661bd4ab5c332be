/* V2E precision: watched code copies 16 bytes to MMIO with rep movsb (KVM emulates
 * every iteration, finishing each at the next KVM_RUN), copies them back (reads of
 * unclaimed MMIO give all-ones), then goes on with register instructions the trace
 * must hold: once, after such an emulated string, KVM's single-step was lost and the
 * rest ran untraced. Watch 0x101000; the report is the sum of what came back and
 * the marker the last watched instructions compute. */
        .include "ucall.inc"
        .set MMIO, 0x10000000              /* above the test's RAM: unclaimed MMIO */
        .set BUFFER, 0x103000
        .code64
        .globl _start
_start:
        jmp watched

        .balign 4096
watched:
        cld
        lea message(%rip), %rsi
        mov $MMIO, %edi
        mov $16, %ecx
        rep movsb
        mov $MMIO, %esi
        mov $BUFFER, %edi
        mov $16, %ecx
        rep movsb
        mov BUFFER, %r12
        mov $0x1234, %r13d
        add $0x1111, %r13d
        mov $report, %ebx
        jmp *%rbx
message:
        .ascii "sixteen bytes..."

        .balign 4096
report:
        ucall UCALL_REPORT, %r12, %r13
        ucall UCALL_DONE
        hlt
        ucall_block_storage
