#!/bin/sh
# run-qemu.sh KERNEL INITRD CMDLINE SERIAL_LOG CPU TIMEOUT_S MEGS
# Boots KERNEL (a bzImage) + INITRD under QEMU TCG (pure emulation: this
# is how an AMD CPU with SVM+NPT is emulated); console to SERIAL_LOG.
set -u
kernel=$1 initrd=$2 cmdline=$3 log=$4 cpu=$5 tmo=$6 megs=${7:-512}
rm -f "$log"
timeout -k 5 "$tmo" qemu-system-x86_64 -accel tcg -cpu "$cpu" -m "$megs" \
	-nodefaults -no-user-config -display none -monitor none -no-reboot \
	-serial "file:$log" -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
	>"${log%.log}.qemu.out" 2>&1
st=$?
[ "$st" = 124 ] && echo "run-qemu: TIMEOUT after ${tmo}s" >> "$log"
exit 0
