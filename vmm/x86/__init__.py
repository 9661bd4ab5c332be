"""x86 architecture facts, each in one place: registers and their bits, CPU modes, page tables,
the VMM's boot-mode set-up, the CPUID policy and the instruction decoder."""
