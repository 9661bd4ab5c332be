/* Long mode: MMIO at the top of the guest-physical address space. The guest
 * reads MAXPHYADDR from CPUID 0x80000008, maps the last 2 MiB below
 * 1 << MAXPHYADDR at linear 5 GiB - 2 MiB (PDPT entry 4 -> a new page
 * directory at 0x300000), then does an 8-byte write and an 8-byte read of its
 * last 8 bytes. Exit value 0x10 when the read sees all-ones, else 0x11. */
        .code64
        .set DEBUG_EXIT, 0xf4
        .set BOOT_PDPT, 0x3000
        .set NEW_PD, 0x300000
        .set PTE_P_RW, 0x3
        .set PTE_P_RW_PS, 0x83
        .set TOP_LINEAR, 0x140000000
        .globl _start
_start:
        mov $0x80000008, %eax
        cpuid
        movzbl %al, %ecx
        mov $1, %rbx
        shl %cl, %rbx                   /* 1 << MAXPHYADDR */
        sub $0x200000, %rbx             /* the last 2 MiB page */
        or $PTE_P_RW_PS, %rbx
        mov %rbx, NEW_PD + 511 * 8
        movq $NEW_PD + PTE_P_RW, BOOT_PDPT + 4 * 8
        mov %cr3, %rax
        mov %rax, %cr3
        mov $TOP_LINEAR - 8, %rsi
        movabs $0x1122334455667788, %rax
        mov %rax, (%rsi)
        mov (%rsi), %rax
        cmp $-1, %rax
        mov $0x11, %al
        jne 1f
        mov $0x10, %al
1:
        out %al, $DEBUG_EXIT
        hlt
