"""A GDB remote stub: stock gdb debugs the guest, threads being vCPUs, V2E events stop reasons.

    vmm run guest.elf --gdb tcp::1234 --gdb-wait        # then: gdb guest.elf -ex 'target remote :1234'

protocol (framing), tdesc (target descriptions per CPU mode), registers (a vCPU's registers as
gdb numbers them), memory (linear addresses through the guest's page tables), breakpoints
(debug registers, int3, stepped watchpoints), probe (what this host's KVM delivers), control
(stopping and resuming vCPUs), connection (the commands of one client), monitor (qRcmd),
watching (the V2E engine), server (the socket and its thread), cli (the `vmm run` options).
"""
