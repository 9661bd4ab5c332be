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
# Bochs 2.7's RFB display binds ports 5900-5949 one by one, but a bind that
# races with another Bochs starting at the same moment can end in "RFB could
# not bind any port": start one Bochs at a time (lock held until its display
# is up) and retry that failure.
lock=${TMPDIR:-/tmp}/v2e-e2e-bochs-start.lock
for attempt in 1 2 3; do
	rm -f "$log"
	exec 8>"$lock"
	flock 8
	listeners=$(ss -ltn 2>/dev/null | grep -cE ':59[0-4][0-9] ')
	env -i PATH=/usr/bin:/bin HOME=/tmp timeout -k 5 "$tmo" bochs -q -f "$rc" -rc "$dbg" </dev/null >"$dir/$base.bochs.out" 2>&1 8>&- &
	pid=$!
	n=0
	while kill -0 $pid 2>/dev/null && [ $n -lt 20 ] &&
		[ "$(ss -ltn 2>/dev/null | grep -cE ':59[0-4][0-9] ')" -le "$listeners" ]; do
		sleep 0.5; n=$((n + 1))
	done
	flock -u 8
	exec 8>&-
	# A kernel panic reboots the machine (panic=-1), and Bochs would boot the
	# ISO again: stop it as soon as the console shows the panic.
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
	grep -q 'RFB could not bind' "$dir/$base.bochs.out" 2>/dev/null || break
	echo "run-bochs: RFB display could not bind a port (attempt $attempt), retrying" >&2
	sleep 2
done
[ "$st" = 124 ] && echo "run-bochs: TIMEOUT after ${tmo}s" >> "$log"
exit 0
