/* Long mode self-test reporting through the ucall port: CPUID vendor, control
 * registers, EFER, and what unclaimed port and MMIO reads return. */
        .include "ucall.inc"
        .code64
        .set UNCLAIMED_PORT, 0x2f0
        .set UNCLAIMED_MMIO, 0xd0000000
        .set EFER_MSR, 0xc0000080
        .globl _start
_start:
        xor %eax, %eax
        cpuid
        ucall UCALL_REPORT, %rbx, %rdx, %rcx
        mov %cr0, %rbx
        mov %cr3, %rsi
        mov $EFER_MSR, %ecx
        rdmsr
        mov %eax, %edi
        mov %cr4, %rcx
        ucall UCALL_REPORT, %rbx, %rcx, %rsi, %rdi
        mov $UNCLAIMED_PORT, %dx
        in %dx, %al
        movzbq %al, %rbx
        guest_assert_eq $0xff, %rbx, unclaimed_port_message
        mov $UNCLAIMED_MMIO, %rsi
        movl (%rsi), %ebx
        guest_assert_eq $0xffffffff, %rbx, unclaimed_mmio_message
        movl $0x12345678, (%rsi)
        ucall UCALL_REPORT, %rbx
        ucall UCALL_DONE
        hlt
unclaimed_port_message:
        .asciz "an unclaimed port reads all-ones"
unclaimed_mmio_message:
        .asciz "unclaimed MMIO reads all-ones"
        ucall_block_storage
