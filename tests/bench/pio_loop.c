/* The physical limit for PIO exits on this host: KVM_RUN in a loop on a
 * guest that does nothing but `out`, checking each exit and nothing else.
 *
 *   pio_loop GUEST.bin ITERATIONS [single-step]
 *
 * GUEST.bin is the flat 32-bit image of tests/bench/pio_guest.s; its loop
 * count (the imm32 at byte 1) is patched to ITERATIONS. With `single-step`
 * the vCPU runs under KVM_GUESTDBG_SINGLESTEP and every instruction is one
 * KVM_EXIT_DEBUG. Prints one JSON object: exits (of every reason),
 * debug_exits, seconds, exits_per_second.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define LOAD_ADDR 0x100000
#define RAM_SIZE (4 << 20)
#define COM1 0x3f8
/* Under single-step KVM reports the final HLT as a DEBUG exit and goes on
 * past it, so the loop stops when a DEBUG exit's pc reaches it. */
#define HLT_ADDR (LOAD_ADDR + 15)

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void flat_segment(struct kvm_segment *seg, int selector, int code)
{
	memset(seg, 0, sizeof(*seg));
	seg->limit = 0xffffffff;
	seg->selector = selector;
	seg->type = code ? 0xb : 0x3;
	seg->present = 1;
	seg->db = 1;
	seg->s = 1;
	seg->g = 1;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s GUEST.bin ITERATIONS [single-step]\n", argv[0]);
		return 2;
	}
	uint32_t iterations = strtoul(argv[2], NULL, 0);
	int single_step = argc > 3 && strcmp(argv[3], "single-step") == 0;

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	uint8_t *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED)
		die("mmap");
	FILE *image = fopen(argv[1], "rb");
	if (!image)
		die(argv[1]);
	size_t length = fread(ram + LOAD_ADDR, 1, RAM_SIZE - LOAD_ADDR, image);
	fclose(image);
	if (length < 5)
		die("short image");
	memcpy(ram + LOAD_ADDR + 1, &iterations, 4);

	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE, .userspace_addr = (uintptr_t)ram,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");
	int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");

	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	flat_segment(&sregs.cs, 0x18, 1);
	flat_segment(&sregs.ds, 0x10, 0);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE | ET */
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = LOAD_ADDR, .rflags = 2, .rsp = 0x80000 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");
	if (single_step) {
		struct kvm_guest_debug debug = { .control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP };
		if (ioctl(vcpu, KVM_SET_GUEST_DEBUG, &debug) < 0)
			die("KVM_SET_GUEST_DEBUG");
	}

	struct timespec start, end;
	unsigned long exits = 0, debug_exits = 0;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			die("KVM_RUN");
		exits++;
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		if (run->exit_reason == KVM_EXIT_DEBUG) {
			debug_exits++;
			if (run->debug.arch.pc == HLT_ADDR)
				break;
			continue;
		}
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != COM1) {
			fprintf(stderr, "unexpected exit %u after %lu exits (suberror %u)\n", run->exit_reason, exits,
				run->exit_reason == KVM_EXIT_INTERNAL_ERROR ? run->internal.suberror : 0);
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
	printf("{\"exits\": %lu, \"debug_exits\": %lu, \"seconds\": %.6f, \"exits_per_second\": %.1f}\n",
	       exits, debug_exits, seconds, exits / seconds);
	return 0;
}
