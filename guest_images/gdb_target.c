/* A 64-bit ELF guest to debug with gdb, built with debug information and without
 * optimisation, so its locals live on the stack: `checksum` has locals and arguments,
 * `counter` is a global it updates (a watchpoint's target), `main64` prints the first byte of
 * `checksum`'s code as the guest reads it (a software breakpoint must not show there), and
 * the guest's own debug registers as it reads them back (a debugger's must not show there).
 * Exits through isa-debug-exit with a status derived from what it computed. */
#include <stdint.h>

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20
#define EXIT_PORT 0xf4
#define ROUNDS 3

static inline void outb(uint16_t port, uint8_t value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t value) { __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t value; __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port)); return value; }

volatile uint64_t counter;                    /* characters checksummed so far */
static const char message[] = "debug me";
uint8_t stack[16384] __attribute__((aligned(16)));

static void putc(char c) {
    while (!(inb(COM1_LSR) & LSR_THRE))
        ;
    outb(COM1, (uint8_t)c);
}

static void puts(const char *s) {
    while (*s)
        putc(*s++);
}

static void puthex(uint64_t value) {
    char digits[16];
    int count = 0;
    do {
        digits[count++] = "0123456789abcdef"[value & 15];
        value >>= 4;
    } while (value);
    puts("0x");
    while (count)
        putc(digits[--count]);
}

uint64_t checksum(const char *text, uint64_t seed) {
    uint64_t sum = seed;
    int length = 0;
    while (text[length]) {
        sum = sum * 31 + (uint8_t)text[length];
        length++;
    }
    counter += length;
    return sum;
}

/* DR0 and DR7 as the guest sets and reads them back: L0 with R/W=write on an address it never touches. */
static uint64_t own_debug_registers(void) {
    uint64_t dr0 = 0x7ff000, dr7 = 0x10401, read0, read7;
    __asm__ volatile("mov %0, %%dr0\n\tmov %1, %%dr7" : : "r"(dr0), "r"(dr7));
    __asm__ volatile("mov %%dr0, %0\n\tmov %%dr7, %1" : "=r"(read0), "=r"(read7));
    __asm__ volatile("mov %0, %%dr7" : : "r"(0ul));
    return (read0 == dr0 && read7 == dr7) ? 1 : 0;
}

void main64(void);
void main64(void) {
    uint64_t total = 0;
    puts("gdb target: first code byte of checksum ");
    puthex(*(volatile uint8_t *)checksum);
    puts("\n");
    for (int round = 0; round < ROUNDS; round++) {
        total += checksum(message, round);
        puts("round ");
        puthex(round);
        puts(": counter ");
        puthex(counter);
        puts("\n");
    }
    puts("total ");
    puthex(total);
    puts(own_debug_registers() ? "\nown debug registers: intact\n" : "\nown debug registers: changed\n");
    outl(EXIT_PORT, (uint32_t)(counter & 0x7f));   /* status (counter << 1) | 1 */
    for (;;)
        __asm__ volatile("hlt");
}

__asm__(".globl _start\n"
        "_start:\n"
        "    lea stack+16384(%rip), %rsp\n"
        "    call main64\n"
        "1:  hlt\n"
        "    jmp 1b\n");
