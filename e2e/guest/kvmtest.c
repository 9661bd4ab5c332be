/*
 * kvmtest: a tiny static KVM client run inside the emulated machine.
 *
 *   kvmtest smoke          real-mode guest: port I/O + HLT
 *   kvmtest trap patched   64-bit guest with paging; a page is marked with
 *                          KVM_SET_EXEC_TRAP; executing it must give exactly
 *                          one KVM_EXIT_EMULATE with the right flags, gpa,
 *                          size, gva and rip, data reads and writes of it
 *                          must not exit
 *   kvmtest trap stock     same guest; the capability must be absent, the
 *                          ioctl refused, and no EMULATE exit may arrive
 *   kvmtest steps          for information: the exits seen while single-
 *                          stepping over port I/O (one E2E-NOTE line)
 *   kvmtest bochs-off      power Bochs off through its port 0x8900 (fallback
 *                          when the ACPI power-off of `poweroff -f` fails)
 *
 * Every result is one line "E2E <test> key=value ..." on stdout, ending with
 * "verdict=PASS" or "verdict=FAIL"; the host parses the serial log.
 * Exit status 0 only on PASS.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* ABI of the exec-trap patch (patches/, include/uapi/linux/kvm.h there) */
struct kvm_exec_trap {
	__u64 address;
	__u64 size;
	__u64 attributes;
	__u64 flags;
};
#define KVM_EXEC_TRAP_ATTR_NX		(1ull << 2)
#define KVM_SET_EXEC_TRAP		_IOW(KVMIO, 0xe8, struct kvm_exec_trap)
#define KVM_CAP_EXEC_TRAP		4096
#define KVM_EXEC_TRAP_FEATURE_NX	(1 << 1)
#define KVM_EXIT_EMULATE		4096
struct kvm_exit_emulate {
	__u64 flags;
	__u64 gpa;		/* the marked page [gpa, gpa + size) */
	__u64 size;
	__u64 gva;
};
#define KVM_EMULATE_EXIT_FLAG_EXECUTE	(1ull << 2)
#define KVM_EMULATE_EXIT_FLAG_GVA_VALID	(1ull << 32)

#define MEM_SIZE	0x200000ul

static int kvm_fd, vm_fd, vcpu_fd;
static struct kvm_run *run;
static uint8_t *mem;
static char line[1024];
static int failed;

static void out(const char *fmt, ...)
{
	size_t n = strlen(line);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
}

static void fail(const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stdout, "E2E-ERROR %s\n", buf);
	failed = 1;
}

static void die(const char *what)
{
	fprintf(stdout, "E2E-ERROR %s: %s\n", what, strerror(errno));
	out(" verdict=FAIL");
	puts(line);
	exit(1);
}

static void setup(void)
{
	struct kvm_userspace_memory_region region;
	int api, run_size;

	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		die("open /dev/kvm");
	api = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
	out(" api=%d", api);
	vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		die("KVM_CREATE_VM");
	if (ioctl(vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0)
		die("KVM_SET_TSS_ADDR");
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	memset(&region, 0, sizeof(region));
	region.guest_phys_addr = 0;
	region.memory_size = MEM_SIZE;
	region.userspace_addr = (uintptr_t)mem;
	if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
	if (vcpu_fd < 0)
		die("KVM_CREATE_VCPU");
	run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
}

/* ---------------------------------------------------------------- smoke */

static int smoke(void)
{
	static const uint8_t code[] = {
		0xb0, 0x42,		/* mov al, 0x42 */
		0xe6, 0x10,		/* out 0x10, al */
		0x66, 0xb8, 0x78, 0x56, 0x34, 0x12, /* mov eax, 0x12345678 */
		0x66, 0xe7, 0x11,	/* out 0x11, eax */
		0x01, 0xd8,		/* add ax, bx  (bx = 2) */
		0xe7, 0x12,		/* out 0x12, ax */
		0xf4,			/* hlt */
	};
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	uint32_t got[3] = { 0 };
	int nio = 0, exits = 0;

	strcpy(line, "E2E smoke");
	setup();
	memcpy(mem + 0x1000, code, sizeof(code));
	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0x1000;
	regs.rbx = 2;
	regs.rflags = 2;
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");
	for (;;) {
		if (ioctl(vcpu_fd, KVM_RUN, 0) < 0)
			die("KVM_RUN");
		exits++;
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
			uint32_t v = 0;

			memcpy(&v, (uint8_t *)run + run->io.data_offset, run->io.size);
			if (nio < 3)
				got[nio] = v;
			nio++;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		fail("unexpected exit reason %u", run->exit_reason);
		break;
	}
	out(" exits=%d io=%d out10=%#x out11=%#x out12=%#x", exits, nio, got[0], got[1], got[2]);
	if (nio != 3 || got[0] != 0x42 || got[1] != 0x12345678 || got[2] != 0x567a)
		fail("wrong port output");
	out(" verdict=%s", failed ? "FAIL" : "PASS");
	puts(line);
	return failed;
}

/* ----------------------------------------------------------------- trap */

/*
 * Guest-physical layout (one 2 MiB slot):
 *   0x1000 PML4, 0x2000 PDPT, 0x3000 PD, 0x4000 PT (4 KiB pages, first 2 MiB)
 *   0x8000 code page (identity mapped)
 *   TRAP_GPA  trapped page, mapped at gva TRAP_GVA (and identity)
 */
#define TRAP_GPA	0x30000ul
#define TRAP_GVA	0x10000ul
#define TRAP_OFF	0x10ul		/* jump target inside the page */

static void setup_long_mode(void)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_cpuid2 *cpuid;
	uint64_t *pml4 = (uint64_t *)(mem + 0x1000);
	uint64_t *pdpt = (uint64_t *)(mem + 0x2000);
	uint64_t *pd = (uint64_t *)(mem + 0x3000);
	uint64_t *pt = (uint64_t *)(mem + 0x4000);
	int i, n = 128;

	cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(struct kvm_cpuid_entry2));
	cpuid->nent = n;
	if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
		die("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid) < 0)
		die("KVM_SET_CPUID2");
	free(cpuid);

	pml4[0] = 0x2000 | 3;
	pdpt[0] = 0x3000 | 3;
	pd[0] = 0x4000 | 3;
	for (i = 0; i < 512; i++)
		pt[i] = ((uint64_t)i << 12) | 3;	/* identity, P|RW */
	pt[TRAP_GVA >> 12] = TRAP_GPA | 3;		/* alias of the trapped page */

	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	sregs.cr3 = 0x1000;
	sregs.cr4 = 1u << 5;				/* PAE */
	sregs.cr0 = 0x80000001u | (1u << 16) | (1u << 4) | (1u << 5); /* PG PE WP ET NE */
	sregs.efer = (1u << 8) | (1u << 10);		/* LME LMA */
	struct kvm_segment seg = {
		.base = 0, .limit = 0xffffffff, .selector = 8, .present = 1,
		.type = 11, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
	};
	sregs.cs = seg;
	seg.type = 3;
	seg.selector = 16;
	seg.l = 0;
	seg.db = 1;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg;
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS (long mode)");
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0x8000;
	regs.rsp = 0x7000;
	regs.rflags = 2;
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");
}

static int exec_trap(struct kvm_exec_trap *t, uint64_t gpa, uint64_t size, uint64_t attributes)
{
	memset(t, 0, sizeof(*t));
	t->address = gpa;
	t->size = size;
	t->attributes = attributes;
	return ioctl(vm_fd, KVM_SET_EXEC_TRAP, t);
}

static int trap(int expect_patched)
{
	static const uint8_t code[] = {
		/* data read through the alias: no exit expected */
		0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x01, 0x00,	/* mov rax, [0x10000] */
		0xe7, 0x10,						/* out 0x10, eax */
		/* data write + read back */
		0xc7, 0x04, 0x25, 0x00, 0x08, 0x01, 0x00,
		0x78, 0x56, 0x34, 0x12,					/* mov dword [0x10800], 0x12345678 */
		0x8b, 0x04, 0x25, 0x00, 0x08, 0x01, 0x00,		/* mov eax, [0x10800] */
		0xe7, 0x11,						/* out 0x11, eax */
		/* execute inside the trapped page */
		0x48, 0xc7, 0xc0, 0x10, 0x00, 0x01, 0x00,		/* mov rax, 0x10010 */
		0xff, 0xe0,						/* jmp rax */
	};
	static const uint8_t target[] = {
		0xb0, 0x77,		/* mov al, 0x77 */
		0xe6, 0x12,		/* out 0x12, al */
		0xf4,			/* hlt */
	};
	static const uint8_t head[8] = { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 };
	struct kvm_exec_trap t;
	int cap, rc, err, exits = 0, emulates = 0, nio = 0, halted = 0;
	uint32_t got[3] = { 0 };
	struct kvm_exit_emulate e0 = { 0 };
	uint64_t rip0 = 0;
	struct kvm_regs regs;

	strcpy(line, expect_patched ? "E2E trap-patched" : "E2E trap-stock");
	setup();
	setup_long_mode();
	memcpy(mem + 0x8000, code, sizeof(code));
	memcpy(mem + TRAP_GPA, head, sizeof(head));
	memcpy(mem + TRAP_GPA + TRAP_OFF, target, sizeof(target));

	cap = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_EXEC_TRAP);
	out(" cap=%d", cap);
	rc = exec_trap(&t, TRAP_GPA, 0x1000, KVM_EXEC_TRAP_ATTR_NX);
	err = rc < 0 ? errno : 0;
	out(" set=%d", rc < 0 ? -err : rc);
	if (expect_patched) {
		if (cap <= 0 || !(cap & KVM_EXEC_TRAP_FEATURE_NX))
			fail("KVM_CAP_EXEC_TRAP is %d, without KVM_EXEC_TRAP_FEATURE_NX", cap);
		if (rc < 0)
			fail("KVM_SET_EXEC_TRAP failed: %s", strerror(err));
	} else {
		if (cap > 0)
			fail("stock module reports KVM_CAP_EXEC_TRAP");
		if (rc == 0)
			fail("stock module accepted KVM_SET_EXEC_TRAP");
	}

	for (;;) {
		if (exits > 100) {
			fail("too many exits");
			break;
		}
		if (ioctl(vcpu_fd, KVM_RUN, 0) < 0)
			die("KVM_RUN");
		exits++;
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
			uint32_t v = 0;

			memcpy(&v, (uint8_t *)run + run->io.data_offset, run->io.size);
			if (nio < 3)
				got[nio] = v;
			nio++;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_EMULATE) {
			struct kvm_exit_emulate *e = (void *)&run->mmio;

			if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0)
				die("KVM_GET_REGS");
			if (!emulates) {
				e0 = *e;
				rip0 = regs.rip;
			}
			emulates++;
			printf("E2E-EVENT EMULATE flags=%#llx gpa=%#llx size=%#llx gva=%#llx rip=%#llx\n",
			       (unsigned long long)e->flags, (unsigned long long)e->gpa,
			       (unsigned long long)e->size, (unsigned long long)e->gva,
			       (unsigned long long)regs.rip);
			/* a real engine would emulate here; unmark and let it run */
			if (exec_trap(&t, TRAP_GPA, 0x1000, 0) < 0)
				die("KVM_SET_EXEC_TRAP clear");
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT) {
			halted = 1;
			break;
		}
		fail("unexpected exit reason %u", run->exit_reason);
		break;
	}
	out(" exits=%d emulate=%d", exits, emulates);
	if (emulates)
		out(" gpa=%#llx size=%#llx gva=%#llx rip=%#llx eflags=%#llx",
		    (unsigned long long)e0.gpa, (unsigned long long)e0.size,
		    (unsigned long long)e0.gva, (unsigned long long)rip0,
		    (unsigned long long)e0.flags);
	out(" out10=%#x out11=%#x out12=%#x halted=%d", got[0], got[1], got[2], halted);
	if (nio != 3 || got[0] != 0x44332211 || got[1] != 0x12345678 || got[2] != 0x77 || !halted)
		fail("guest did not run to completion with the right output");
	if (expect_patched) {
		if (emulates != 1)
			fail("expected exactly one EMULATE exit, got %d", emulates);
		else {
			if (e0.gpa != TRAP_GPA || e0.size != 0x1000)
				fail("EMULATE gpa %#llx size %#llx, wanted the page %#lx", (unsigned long long)e0.gpa,
				     (unsigned long long)e0.size, TRAP_GPA);
			if (!(e0.flags & KVM_EMULATE_EXIT_FLAG_EXECUTE))
				fail("EMULATE flags %#llx without EXECUTE", (unsigned long long)e0.flags);
			if (rip0 != TRAP_GVA + TRAP_OFF)
				fail("EMULATE rip %#llx != %#lx", (unsigned long long)rip0, TRAP_GVA + TRAP_OFF);
			if ((e0.flags & KVM_EMULATE_EXIT_FLAG_GVA_VALID) && e0.gva != TRAP_GVA + TRAP_OFF)
				fail("EMULATE gva %#llx != %#lx", (unsigned long long)e0.gva, TRAP_GVA + TRAP_OFF);
		}
	} else if (emulates) {
		fail("EMULATE exit under the stock module");
	}
	out(" verdict=%s", failed ? "FAIL" : "PASS");
	puts(line);
	return failed;
}

/* --------------------------------------------------------------- steps */

/*
 * For information: the exits KVM reports while single-stepping (the way the
 * harness traces) over port I/O, in 64-bit mode. Printed as an E2E-NOTE.
 */
static int steps(void)
{
	static const uint8_t code[] = {
		0x66, 0xba, 0xfd, 0x03,	/* 8000 mov dx, 0x3fd */
		0xec,			/* 8004 in al, dx */
		0x90,			/* 8005 nop */
		0xb0, 0x41,		/* 8006 mov al, 0x41 */
		0xe6, 0x10,		/* 8008 out 0x10, al */
		0x90,			/* 800a nop */
		0xf4,			/* 800b hlt */
	};
	struct kvm_guest_debug dbg;
	struct kvm_regs regs;
	char seq[512] = "";
	int i;

	strcpy(line, "E2E-NOTE single-step exits (mov dx; in @8004; nop; mov al; out @8008; nop; hlt @800b):");
	setup();
	setup_long_mode();
	memcpy(mem + 0x8000, code, sizeof(code));
	memset(&dbg, 0, sizeof(dbg));
	dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
	if (ioctl(vcpu_fd, KVM_SET_GUEST_DEBUG, &dbg) < 0)
		die("KVM_SET_GUEST_DEBUG");
	for (i = 0; i < 16; i++) {
		const char *what;

		if (ioctl(vcpu_fd, KVM_RUN, 0) < 0)
			die("KVM_RUN");
		if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0)
			die("KVM_GET_REGS");
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			what = run->io.direction == KVM_EXIT_IO_IN ? "IN" : "OUT";
			if (run->io.direction == KVM_EXIT_IO_IN)
				*((uint8_t *)run + run->io.data_offset) = 0x20;
			break;
		case KVM_EXIT_DEBUG: what = "DBG"; break;
		case KVM_EXIT_HLT: what = "HLT"; break;
		default: what = "OTHER"; break;
		}
		snprintf(seq + strlen(seq), sizeof(seq) - strlen(seq), " %s@%llx", what,
			 (unsigned long long)regs.rip);
		if (run->exit_reason == KVM_EXIT_HLT ||
		    (run->exit_reason == KVM_EXIT_DEBUG && regs.rip > 0x800b) ||
		    (run->exit_reason != KVM_EXIT_IO && run->exit_reason != KVM_EXIT_DEBUG))
			break;
	}
	out("%s", seq);
	puts(line);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "bochs-off")) {
		const char *p = "Shutdown";

		if (ioperm(0x8900, 1, 1) < 0)
			die("ioperm");
		while (*p)
			outb(*p++, 0x8900);
		return 1;
	}
	if (argc >= 2 && !strcmp(argv[1], "smoke"))
		return smoke();
	if (argc >= 2 && !strcmp(argv[1], "steps"))
		return steps();
	if (argc >= 3 && !strcmp(argv[1], "trap"))
		return trap(!strcmp(argv[2], "patched"));
	fprintf(stderr, "usage: kvmtest smoke | kvmtest trap patched|stock\n");
	return 2;
}
