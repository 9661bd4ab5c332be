/* A 64-bit ELF guest in freestanding C: entered in long mode at its ELF entry
 * point. Prints through the 16550 with LSR polling, checks that its .bss was
 * zero-filled, computes two known values, and exits through isa-debug-exit. */
#include <stdint.h>

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20
#define EXIT_PORT 0xf4
#define EXIT_VALUE 0x2a   /* process exit status (0x2a << 1) | 1 = 85 */

static inline void outb(uint16_t port, uint8_t value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t value) { __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t value; __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port)); return value; }

static void putc(char c) {
    while (!(inb(COM1_LSR) & LSR_THRE))
        ;
    outb(COM1, (uint8_t)c);
}

static void puts(const char *s) {
    while (*s)
        putc(*s++);
}

static void putnum(uint64_t value, unsigned base) {
    char digits[20];
    int count = 0;
    do {
        digits[count++] = "0123456789abcdef"[value % base];
        value /= base;
    } while (value);
    while (count)
        putc(digits[--count]);
}

static uint32_t crc32(const char *data) {
    uint32_t crc = 0xffffffffu;
    while (*data) {
        crc ^= (uint8_t)*data++;
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
    }
    return ~crc;
}

static uint64_t fibonacci(unsigned n) {
    uint64_t a = 0, b = 1;
    while (n--) {
        uint64_t next = a + b;
        a = b;
        b = next;
    }
    return a;
}

static uint8_t zeroed[8192];          /* .bss: the loader must zero memsz - filesz */
uint8_t stack[16384] __attribute__((aligned(16)));   /* used by _start below */

void main64(void);
void main64(void) {
    puts("Hello from freestanding C (ELF64)!\n");
    int dirty = 0;
    for (unsigned i = 0; i < sizeof zeroed; i++)
        dirty |= zeroed[i];
    puts(dirty ? "bss: not zeroed\n" : "bss: zeroed\n");
    puts("fib(90) = ");
    putnum(fibonacci(90), 10);
    puts("\ncrc32(\"123456789\") = 0x");
    putnum(crc32("123456789"), 16);
    puts("\n");
    outl(EXIT_PORT, EXIT_VALUE);
    for (;;)
        __asm__ volatile("hlt");
}

/* The entry point: a stack of our own, then C. */
__asm__(".globl _start\n"
        "_start:\n"
        "    lea stack+16384(%rip), %rsp\n"
        "    call main64\n"
        "1:  hlt\n"
        "    jmp 1b\n");
