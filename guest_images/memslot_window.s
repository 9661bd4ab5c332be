/* The VMM's memslot window (tests/test_memory.py): the guest loops over instructions
 * fetched from, and loads and stores to, the RAM slot the host splits and merges meanwhile
 * (the host toggles another page of the same RAM between MAPPED and READONLY, so KVM
 * deletes the slot holding this code and creates new ones), until the host writes a
 * nonzero quadword at STOP. Each load must read what the store before it wrote; it reports
 * the turns it made and the loads that read something else. */
        .include "ucall.inc"
        .code64
        .globl _start
_start:
        xor %r8, %r8                  /* loads that read something else */
        xor %ecx, %ecx                /* turns */
1:      inc %rcx
        mov %rcx, counter(%rip)
        mov counter(%rip), %rax
        cmp %rax, %rcx
        je 2f
        inc %r8
2:      cmpq $0, stop(%rip)
        je 1b
        ucall UCALL_REPORT, %rcx, %r8
        ucall UCALL_DONE
        hlt

        .balign 8
counter:
        .quad 0
        ucall_block_storage

        .org 0x800
stop:                                 /* image base + 0x800: the host's flag */
        .quad 0
