#!/bin/sh
# run-bochs.sh ISO SERIAL_LOG CPU_MODEL TIMEOUT_S MEGS
# Boots ISO headless under Bochs; the guest console (COM1) goes to SERIAL_LOG.
# Runs with a clean environment (some inherited variables make Debian's bochs
# abort with "buffer overflow detected" while parsing its config).
# Bounded by timeout(1); the exit status of Bochs itself is not meaningful
# (a guest power-off ends it with status 1): the host checks the serial log.
set -u
iso=$1 log=$2 model=$3 tmo=$4 megs=${5:-512} ips=${BOCHS_IPS:-50000000}
dir=$(dirname "$log")
base=$(basename "$log" .log)
rc=$dir/$base.bochsrc
dbg=$dir/$base.dbgrc
cat > "$rc" <<EOR
megs: $megs
cpu: model=$model, count=1, ips=$ips, reset_on_triple_fault=0
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0-master: type=cdrom, path=$iso, status=inserted
boot: cdrom
clock: sync=none, time0=local
display_library: rfb, options="timeout=0"
com1: enabled=1, mode=file, dev=$log
log: $dir/$base.bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
EOR
printf 'continue\nquit\n' > "$dbg"
rm -f "$log"
env -i PATH=/usr/bin:/bin HOME=/tmp timeout -k 5 "$tmo" bochs -q -f "$rc" -rc "$dbg" </dev/null >"$dir/$base.bochs.out" 2>&1 &
pid=$!
# A kernel panic reboots the machine (panic=-1), and Bochs would boot the ISO
# again: stop it as soon as the console shows the panic.
while kill -0 $pid 2>/dev/null; do
	sleep 1
	if grep -q 'end Kernel panic' "$log" 2>/dev/null; then
		sleep 1
		kill $pid 2>/dev/null
		echo "run-bochs: stopped after a kernel panic" >> "$log"
		break
	fi
done
wait $pid
st=$?
[ "$st" = 124 ] && echo "run-bochs: TIMEOUT after ${tmo}s" >> "$log"
exit 0
