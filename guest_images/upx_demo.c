/* The flagship demo's program (make demo-linux, tests/nested_linux.py): a static
 * Linux program, packed with UPX, that runs inside a Linux guest under
 * `vmm run --unpack --unpack-user`. Its output must not change, and the code UPX
 * unpacks must be dumped exactly as `upx -d` restores it.
 * Built with gcc -static; prints a few deterministic lines. */
#include <stdio.h>
#include <stdint.h>
#include <string.h>

static uint32_t crc32(const unsigned char *data, size_t size)
{
	uint32_t crc = 0xffffffffu;
	for (size_t i = 0; i < size; i++) {
		crc ^= data[i];
		for (int bit = 0; bit < 8; bit++)
			crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
	}
	return ~crc;
}

static int primes_below(int limit)
{
	static unsigned char composite[100000];
	int count = 0;
	for (int n = 2; n < limit && n < (int)sizeof(composite); n++) {
		if (composite[n])
			continue;
		count++;
		for (long multiple = (long)n * n; multiple < limit; multiple += n)
			composite[multiple] = 1;
	}
	return count;
}

int main(int argc, char **argv)
{
	const char *message = "unpacked by UPX, seen by the VMM";
	printf("upx_demo: %s\n", message);
	printf("upx_demo: crc32 of the message = %08x\n", crc32((const unsigned char *)message, strlen(message)));
	printf("upx_demo: %d primes below 100000\n", primes_below(100000));
	printf("upx_demo: %d argument(s), done\n", argc - 1);
	(void)argv;
	return 0;
}
