/* V2E transparency, 64-bit long mode: probes in the page at 0x101000 (the one a test watches)
 * that read what single-stepping could change, each reported through the ucall port as
 * (probe, value, value, value). Handlers and the IDT live in the first page.
 *   1 pushf: the TF bit pushf stores
 *   2 the guest's own TF: #DB count, the return address of the #DB, DR6.BS
 *   3 mov ss then pushf: the TF bit pushf stores in the MOV SS shadow
 *   4 rdtsc around 100 turns of a loop: the TSC delta
 *   5 DR0 as written, DR7, DR6
 *   6 a DR0 execution breakpoint on the guest's own code: #DB count, return address, DR6.B0
 *   7-9 #DE, #UD, #PF inside the probed page: handler count, return address, and the TF
 *       bit of the RFLAGS image the CPU pushed
 *  10 the same for a #GP whose handler drops the error code first (many kernels' do): a host
 *       that reports the step one instruction into the handler finds the frame below RSP */
        .include "ucall.inc"
        .set CODE_SEL, 0x08
        .set TF, 0x100
        .set RF, 0x10000
        .set UNMAPPED, 0x100000000          /* the VMM's page tables map the first 4 GiB only */
        .set NON_CANONICAL, 0x8000000000000000
        .code64
        .globl _start

.macro gate vector, handler
        mov $\handler, %rax
        mov $(idt + 16 * \vector), %rdi
        mov %ax, (%rdi)
        movw $CODE_SEL, 2(%rdi)
        movw $0x8e00, 4(%rdi)
        shr $16, %rax
        mov %ax, 6(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        movl $0, 12(%rdi)
.endm

.macro probe number, function
        call \function
        mov %rax, %r12
        ucall UCALL_REPORT, $\number, %r12, %r13, %r14
.endm

_start:
        gate 0, de_handler
        gate 1, db_handler
        gate 6, ud_handler
        gate 13, gp_handler
        gate 14, pf_handler
        lidt idt_pointer
        probe 1, pushf_probe
        call tf_probe
        ucall UCALL_REPORT, $2, db_count, db_return, db_dr6
        probe 3, ss_probe
        probe 4, rdtsc_probe
        call dr_probe
        ucall UCALL_REPORT, $5, %r12, %r13, %r14
        movq $0, db_count
        call breakpoint_probe
        ucall UCALL_REPORT, $6, db_count, db_return, db_dr6
        call de_probe
        ucall UCALL_REPORT, $7, de_count, fault_return, fault_tf
        call ud_probe
        ucall UCALL_REPORT, $8, ud_count, fault_return, fault_tf
        call pf_probe
        ucall UCALL_REPORT, $9, pf_count, fault_return, fault_tf
        call gp_probe
        ucall UCALL_REPORT, $10, gp_count, fault_return, fault_tf
        ucall UCALL_DONE
        hlt

/* #DB: count, keep the return address and DR6, stop the guest's own stepping (clear TF in
 * the frame), let an instruction breakpoint's instruction run (RF), clear DR6. */
db_handler:
        push %rax
        incq db_count
        mov 8(%rsp), %rax
        mov %rax, db_return
        mov %dr6, %rax
        mov %rax, db_dr6
        andq $~TF, 24(%rsp)
        orq $RF, 24(%rsp)
        xor %eax, %eax
        mov %rax, %dr6
        pop %rax
        iretq

.macro fault_handler counter, skip, error_code=0
        push %rax
        incq \counter
        mov (8 + 8 * \error_code)(%rsp), %rax
        mov %rax, fault_return
        mov (24 + 8 * \error_code)(%rsp), %rax
        and $TF, %eax
        mov %rax, fault_tf
        addq $\skip, (8 + 8 * \error_code)(%rsp)
        pop %rax
        .if \error_code
        add $8, %rsp
        .endif
        iretq
.endm
de_handler: fault_handler de_count, 2          /* div %ecx */
ud_handler: fault_handler ud_count, 2          /* ud2 */
pf_handler: fault_handler pf_count, 2, 1       /* mov (%rbx), %eax */
gp_handler:
        add $8, %rsp                            /* the error code */
        fault_handler gp_count, 2               /* mov (%rbx), %eax */

        .balign 8
idt_pointer:
        .word 16 * 32 - 1
        .quad idt
db_count:     .quad 0
db_return:    .quad 0
db_dr6:       .quad 0
de_count:     .quad 0
ud_count:     .quad 0
pf_count:     .quad 0
gp_count:     .quad 0
fault_return: .quad 0
fault_tf:     .quad 0
        ucall_block_storage
        .balign 16
idt:    .fill 32 * 16, 1, 0

/* The probed page. */
        .balign 4096
pushf_probe:
        pushf
        pop %rax
        and $TF, %eax
        ret

tf_probe:
        pushf
        orq $TF, (%rsp)
        popf
        nop                                 /* the #DB comes after this one */
after_first_nop:
        nop
        ret

ss_probe:
        mov %ss, %eax
        mov %eax, %ss
        pushf
        pop %rax
        and $TF, %eax
        ret

rdtsc_probe:
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        mov %rax, %r8
        mov $100, %ecx
1:      dec %ecx
        jnz 1b
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        sub %r8, %rax
        ret

dr_probe:
        mov $0x1234000, %rax
        mov %rax, %dr0
        mov %dr0, %r12
        mov %dr7, %r13
        mov %dr6, %r14
        xor %eax, %eax
        mov %rax, %dr0
        ret

breakpoint_probe:
        mov $breakpoint_target, %rax
        mov %rax, %dr0
        mov $1, %eax                        /* L0: DR0, execution, one byte */
        mov %rax, %dr7
        nop
breakpoint_target:
        nop
        xor %eax, %eax
        mov %rax, %dr7
        mov %rax, %dr0
        ret

de_probe:
        xor %ecx, %ecx
        mov $1, %eax
        xor %edx, %edx
        div %ecx
        ret

ud_probe:
        ud2
        ret

pf_probe:
        mov $UNMAPPED, %rbx
        mov (%rbx), %eax
        ret

gp_probe:
        mov $NON_CANONICAL, %rbx
        mov (%rbx), %eax
        ret
        .balign 4096
