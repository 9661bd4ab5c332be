/* The VMM's C helper for its hot loops (compiled at install time through cffi's API mode;
 * vmm/fastpath.py loads it, and the VMM runs the same work in Python when it is absent).
 *
 * vmm_kvm_run: one KVM_RUN, called without the generic variadic-call machinery.
 * vmm_run_ports: KVM_RUN in a loop while every exit is a port access a plan (struct
 *   vmm_port_plan) says the VMM may serve here: 1-byte writes to a byte stream (a UART's
 *   transmit register), gathered in a buffer the caller hands to the device, and 1-byte reads
 *   of registers whose value is constant. Any other exit is left in kvm_run for the caller.
 * vmm_insn_line: an insn record of a trace as vmm/trace/writer.py writes it, when it has no
 *   gpa or mem field (the writer makes those lines itself).
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#define VMM_EXIT 0      /* an exit the caller handles is in kvm_run */
#define VMM_DRAIN 1     /* the stream's bytes are due at the device; no exit is pending */
#define VMM_MAX_CONSTANT_PORTS 8
#define VMM_MAX_REGISTERS 32

/* What vmm_run_ports may serve, as the devices allow it when the caller makes the plan. */
struct vmm_port_plan {
	int32_t stream_port;        /* 1-byte writes here go to stream[]; -1: none */
	int32_t stream_stop;        /* a byte the device must see at once (a newline); -1: none */
	uint32_t stream_room;       /* bytes stream[] may hold before the device must see them */
	uint32_t stream_length;     /* bytes in stream[] */
	uint8_t *stream;
	uint32_t constants;         /* entries of constant_ports[] in use */
	uint16_t constant_ports[VMM_MAX_CONSTANT_PORTS];
	uint8_t constant_values[VMM_MAX_CONSTANT_PORTS];
	uint64_t handled;           /* exits served here */
};

int vmm_kvm_run(int fd)
{
	return ioctl(fd, KVM_RUN, 0) < 0 ? -errno : 0;
}

static int constant_read(const struct vmm_port_plan *plan, uint16_t port, uint8_t *value)
{
	for (uint32_t i = 0; i < plan->constants && i < VMM_MAX_CONSTANT_PORTS; i++) {
		if (plan->constant_ports[i] == port) {
			*value = plan->constant_values[i];
			return 1;
		}
	}
	return 0;
}

int vmm_run_ports(int fd, void *mapping, uint64_t mapping_size, struct vmm_port_plan *plan)
{
	struct kvm_run *run = mapping;
	for (;;) {
		if (ioctl(fd, KVM_RUN, 0) < 0)
			return -errno;
		if (run->exit_reason != KVM_EXIT_IO || run->io.size != 1 || run->io.count == 0)
			return VMM_EXIT;
		uint64_t offset = run->io.data_offset;
		uint32_t count = run->io.count;
		/* Out of bounds: the caller's decoder reports it. */
		if (offset < sizeof(struct kvm_run) || offset > mapping_size || count > mapping_size - offset)
			return VMM_EXIT;
		uint8_t *data = (uint8_t *)mapping + offset;
		uint16_t port = run->io.port;
		if (run->io.direction == KVM_EXIT_IO_OUT) {
			if (plan->stream_port < 0 || port != (uint16_t)plan->stream_port
			    || count > plan->stream_room - plan->stream_length)
				return VMM_EXIT;
			/* A stop byte before the last makes the device see the bytes before it
			 * first: the caller serves that exit byte by byte. */
			if (plan->stream_stop >= 0 && count > 1
			    && memchr(data, plan->stream_stop, count - 1) != NULL)
				return VMM_EXIT;
			memcpy(plan->stream + plan->stream_length, data, count);
			plan->stream_length += count;
			plan->handled++;
			if ((plan->stream_stop >= 0 && data[count - 1] == (uint8_t)plan->stream_stop)
			    || plan->stream_length == plan->stream_room)
				return VMM_DRAIN;
			continue;
		}
		uint8_t value;
		if (count != 1 || !constant_read(plan, port, &value))
			return VMM_EXIT;
		data[0] = value;
		plan->handled++;
	}
}

static const char HEX[] = "0123456789abcdef";

static char *put_hex(char *out, uint64_t value)
{
	char digits[16];
	int n = 0;
	*out++ = '0';
	*out++ = 'x';
	do {
		digits[n++] = HEX[value & 0xf];
		value >>= 4;
	} while (value);
	while (n)
		*out++ = digits[--n];
	return out;
}

static char *put_decimal(char *out, uint64_t value)
{
	char digits[20];
	int n = 0;
	do {
		digits[n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (n)
		*out++ = digits[--n];
	return out;
}

static char *put_text(char *out, const char *text, size_t length)
{
	memcpy(out, text, length);
	return out + length;
}

/* The register names, in the order of the packed registers, and where rip is among them. */
static const char *insn_names[VMM_MAX_REGISTERS];
static size_t insn_name_lengths[VMM_MAX_REGISTERS];
static uint32_t insn_count, insn_rip;

int vmm_insn_setup(const char *const *names, uint32_t count, uint32_t rip_index)
{
	if (count > VMM_MAX_REGISTERS || rip_index >= count)
		return -1;
	for (uint32_t i = 0; i < count; i++) {
		insn_names[i] = names[i];
		insn_name_lengths[i] = strlen(names[i]);
	}
	insn_count = count;
	insn_rip = rip_index;
	return 0;
}

/* start: the line up to the step; before, after: the registers (u64 each) before and after
 * the instruction at rip. Returns the line's length, 0 when out needs more than room. */
size_t vmm_insn_line(char *out, size_t room, const char *start, size_t start_length, uint64_t step,
		     uint64_t rip, const char *code, size_t code_length, const char *before, const char *after)
{
	uint64_t old[VMM_MAX_REGISTERS], new[VMM_MAX_REGISTERS];
	size_t longest = start_length + 2 * code_length + 64;
	for (uint32_t i = 0; i < insn_count; i++)
		longest += insn_name_lengths[i] + 24;
	if (insn_count == 0 || longest > room)
		return 0;
	memcpy(old, before, insn_count * sizeof(uint64_t));
	memcpy(new, after, insn_count * sizeof(uint64_t));
	char *p = put_text(out, start, start_length);
	p = put_decimal(p, step);
	p = put_text(p, ",\"rip\":\"", 8);
	p = put_hex(p, rip);
	p = put_text(p, "\",\"bytes\":\"", 11);
	for (size_t i = 0; i < code_length; i++) {
		uint8_t byte = (uint8_t)code[i];
		*p++ = HEX[byte >> 4];
		*p++ = HEX[byte & 0xf];
	}
	*p++ = '"';
	int falls_through = new[insn_rip] == rip + code_length;
	int first = 1;
	for (uint32_t i = 0; i < insn_count; i++) {
		/* A fall-through's new rip is implied; a branch's is written, even to itself. */
		int written = i == insn_rip ? !falls_through : new[i] != old[i];
		if (!written)
			continue;
		p = first ? put_text(p, ",\"regs\":{\"", 10) : put_text(p, ",\"", 2);
		first = 0;
		p = put_text(p, insn_names[i], insn_name_lengths[i]);
		p = put_text(p, "\":\"", 3);
		p = put_hex(p, new[i]);
		*p++ = '"';
	}
	if (!first)
		*p++ = '}';
	*p++ = '}';
	*p++ = '\n';
	return (size_t)(p - out);
}
