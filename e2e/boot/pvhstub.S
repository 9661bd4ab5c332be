/*
 * Multiboot (v1) stub that starts an uncompressed Linux vmlinux through its
 * PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY).
 *
 * tools/mkimage.py places this 4 KiB page directly below the kernel's first
 * PT_LOAD segment and appends the kernel's segments as one flat image, so a
 * multiboot loader (ISOLINUX mboot.c32) using the a.out kludge puts every
 * segment at its physical address. The stub then translates the multiboot
 * information (command line, first module = initramfs, BIOS memory map) into a
 * struct hvm_start_info (version 1, with memory map) and jumps to the PVH
 * entry with %ebx pointing at it, in 32-bit protected mode, paging off.
 *
 * The header fields marked "patched" are filled in by mkimage.py.
 */
	.code32
	.section .text
	.globl _start
_start:
	jmp	entry

	.balign 4
mb_header:
	.long	0x1BADB002		/* magic */
	.long	0x00010003		/* flags: page-align modules, mem info, a.out kludge */
	.long	-(0x1BADB002 + 0x00010003)
	.long	mb_header		/* header_addr */
	.long	_start			/* load_addr */
	.long	0			/* load_end_addr: patched (end of file data) */
	.long	0			/* bss_end_addr: patched (end of kernel memsz) */
	.long	entry			/* entry_addr */
	.ascii	"PVHENTRY"		/* marker for mkimage.py */
pvh_entry:
	.long	0			/* patched: kernel PVH entry (physical) */

entry:
	cli
	cld
	movl	$stack_top, %esp
	cmpl	$0x2BADB002, %eax
	jne	fail
	movl	%ebx, %ebp		/* %ebp = multiboot info */

	/* --- command line: skip the first word (the image file name) --- */
	testl	$4, (%ebp)
	jz	1f
	movl	16(%ebp), %esi
2:	movb	(%esi), %al
	testb	%al, %al
	jz	3f
	cmpb	$' ', %al
	je	3f
	incl	%esi
	jmp	2b
3:	cmpb	$' ', (%esi)
	jne	4f
	incl	%esi
	jmp	3b
4:	movl	%esi, si_cmdline
1:
	/* --- first module = initramfs --- */
	testl	$8, (%ebp)
	jz	1f
	cmpl	$0, 20(%ebp)		/* mods_count */
	je	1f
	movl	24(%ebp), %esi		/* mods_addr */
	movl	0(%esi), %eax		/* mod_start */
	movl	4(%esi), %ecx		/* mod_end */
	subl	%eax, %ecx
	movl	%eax, mod0_paddr
	movl	%ecx, mod0_size
	movl	$1, si_nr_modules
1:
	/* --- memory map: multiboot mmap -> hvm_memmap_table_entry[] --- */
	testl	$0x40, (%ebp)
	jz	fail
	movl	48(%ebp), %esi		/* mmap_addr */
	movl	44(%ebp), %edx		/* mmap_length */
	addl	%esi, %edx		/* end */
	movl	$memmap, %edi
	xorl	%ebx, %ebx		/* count */
5:	cmpl	%edx, %esi
	jae	6f
	cmpl	$MAXMAP, %ebx
	jae	6f
	movl	4(%esi), %eax		/* base lo */
	movl	%eax, 0(%edi)
	movl	8(%esi), %eax		/* base hi */
	movl	%eax, 4(%edi)
	movl	12(%esi), %eax		/* len lo */
	movl	%eax, 8(%edi)
	movl	16(%esi), %eax		/* len hi */
	movl	%eax, 12(%edi)
	movl	20(%esi), %eax		/* type (same values as e820) */
	movl	%eax, 16(%edi)
	movl	$0, 20(%edi)
	addl	$24, %edi
	incl	%ebx
	addl	(%esi), %esi		/* size field excludes itself */
	addl	$4, %esi
	jmp	5b
6:	movl	%ebx, si_memmap_entries

	/* --- go --- */
	movl	pvh_entry, %eax
	testl	%eax, %eax
	jz	fail
	movl	$start_info, %ebx
	jmp	*%eax

fail:
	movw	$0x8900, %dx		/* Bochs: power off */
	movl	$shutdown_str, %esi
7:	movb	(%esi), %al
	testb	%al, %al
	jz	8f
	outb	%al, %dx
	incl	%esi
	jmp	7b
8:	hlt
	jmp	8b

shutdown_str:
	.asciz	"Shutdown"

	.set	MAXMAP, 64
	.balign 8
start_info:				/* struct hvm_start_info */
	.long	0x336ec578		/* magic */
	.long	1			/* version */
	.long	0			/* flags */
si_nr_modules:
	.long	0
	.long	modlist, 0		/* modlist_paddr */
si_cmdline:
	.quad	0			/* cmdline_paddr */
	.quad	0			/* rsdp_paddr: 0 = kernel scans the BIOS area */
	.long	memmap, 0		/* memmap_paddr */
si_memmap_entries:
	.long	0
	.long	0
	.balign 8
modlist:				/* struct hvm_modlist_entry */
mod0_paddr:
	.quad	0
mod0_size:
	.quad	0
	.quad	0			/* cmdline_paddr */
	.quad	0
memmap:
	.fill	MAXMAP * 24, 1, 0
	.balign 16
	.fill	256, 1, 0
stack_top:
	.balign	4096, 0
