/* A multiboot kernel in an ELF32 container that switches itself to long mode.
 * It prints the command line, memory and modules the boot loader passed, reads
 * the CPU count from fw_cfg, and exits through isa-debug-exit with a 32-bit
 * write. Boots the same under `vmm run` and `qemu-system-x86_64 -kernel`. */
        .include "serial.inc"
        .include "fw_cfg.inc"

        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000003          /* page-align modules, want memory info */
        .set MB_BOOT_MAGIC, 0x2BADB002
        .set EXIT_PORT, 0xf4
        .set EXIT_VALUE, 0x21              /* process exit status (0x21 << 1) | 1 = 67 */
        .set MSR_EFER, 0xC0000080

        .section .multiboot, "a"
        .balign 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .text
        .code32
        .globl _start
_start:
        mov $stack_top, %esp
        cmp $MB_BOOT_MAGIC, %eax
        jne bad_magic
        mov %ebx, boot_info

        /* Identity-map the first 1 GiB with 2 MiB pages. */
        mov $pdpt, %eax
        or $3, %eax
        mov %eax, pml4
        mov $pd, %eax
        or $3, %eax
        mov %eax, pdpt
        xor %ecx, %ecx
1:      mov %ecx, %eax
        shl $21, %eax
        or $0x83, %eax                     /* present, writable, 2 MiB page */
        mov %eax, pd(,%ecx,8)
        inc %ecx
        cmp $512, %ecx
        jne 1b

        mov %cr4, %eax
        or $0x20, %eax                     /* PAE */
        mov %eax, %cr4
        mov $pml4, %eax
        mov %eax, %cr3
        mov $MSR_EFER, %ecx
        rdmsr
        or $0x100, %eax                    /* LME */
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax               /* PG | PE */
        mov %eax, %cr0
        lgdt gdt_pointer
        ljmp $0x08, $long_mode

bad_magic:
        mov $bad_magic_message, %esi
        serial_puts
        mov $EXIT_PORT, %dx
        mov $1, %eax
        out %eax, %dx
        hlt

        .code64
long_mode:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $banner, %rsi
        call puts

        mov boot_info, %ebx
        mov $cmdline_label, %rsi
        call puts
        mov 16(%rbx), %esi                 /* cmdline */
        call puts
        call newline

        mov $mem_lower_label, %rsi
        call puts
        mov 4(%rbx), %eax
        call putdec
        mov $kib, %rsi
        call puts

        mov $modules_label, %rsi
        call puts
        mov 20(%rbx), %eax                 /* mods_count */
        mov %eax, %r12d
        call putdec
        call newline
        mov 24(%rbx), %r13d                /* mods_addr */
        xor %r14d, %r14d
print_module:
        cmp %r12d, %r14d
        je modules_done
        mov $module_label, %rsi
        call puts
        mov %r14d, %eax
        call putdec
        mov $colon, %rsi
        call puts
        mov 8(%r13), %esi                  /* module string */
        call puts
        mov $open_paren, %rsi
        call puts
        mov 4(%r13), %eax
        sub 0(%r13), %eax                  /* mod_end - mod_start */
        call putdec
        mov $bytes_label, %rsi
        call puts
        add $16, %r13
        inc %r14d
        jmp print_module
modules_done:

        fw_cfg_read FW_CFG_SIGNATURE, 4
        cmp $0x554D4551, %eax              /* "QEMU" */
        jne no_fw_cfg
        fw_cfg_read FW_CFG_NB_CPUS, 2
        mov %eax, %r12d
        mov $cpus_label, %rsi
        call puts
        mov %r12d, %eax
        call putdec
        call newline

        mov $EXIT_PORT, %dx
        mov $EXIT_VALUE, %eax
        out %eax, %dx
        hlt

no_fw_cfg:
        mov $no_fw_cfg_message, %rsi
        call puts
        mov $EXIT_PORT, %dx
        mov $2, %eax
        out %eax, %dx
        hlt

/* Print the NUL-terminated string at RSI. */
puts:
        push %rbx
        serial_puts
        pop %rbx
        ret

newline:
        mov $newline_text, %rsi
        jmp puts

/* Print EAX in decimal. */
putdec:
        mov $decimal_end, %rsi
        mov $10, %ecx
1:      xor %edx, %edx
        div %ecx
        add $'0', %dl
        dec %rsi
        mov %dl, (%rsi)
        test %eax, %eax
        jnz 1b
        jmp puts

        .data
        .balign 8
gdt:
        .quad 0
        .quad 0x00AF9A000000FFFF           /* 0x08: 64-bit code */
        .quad 0x00CF92000000FFFF           /* 0x10: flat data */
gdt_pointer:
        .word gdt_pointer - gdt - 1
        .long gdt

banner:            .asciz "multiboot: in long mode\n"
cmdline_label:     .asciz "cmdline: "
mem_lower_label:   .asciz "mem_lower: "
kib:               .asciz " KiB\n"
modules_label:     .asciz "modules: "
module_label:      .asciz "module "
colon:             .asciz ": "
open_paren:        .asciz " ("
bytes_label:       .asciz " bytes)\n"
cpus_label:        .asciz "fw_cfg cpus: "
newline_text:      .asciz "\n"
bad_magic_message: .asciz "multiboot: bad boot magic in EAX\n"
no_fw_cfg_message: .asciz "multiboot: no fw_cfg signature\n"
decimal:           .space 11
decimal_end:       .byte 0

        .bss
        .balign 4096
pml4:   .space 4096
pdpt:   .space 4096
pd:     .space 4096
stack:  .space 4096
stack_top:
boot_info: .long 0
