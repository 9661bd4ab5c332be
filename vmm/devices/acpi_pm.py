"""The ACPI fixed-hardware power-management block the FADT describes: the PM1a event
registers (status, enable), the PM1a control register and the PM timer.

Writing SLP_EN with a sleep type asks for a sleep state: S5 (soft off) or S3 (suspend to
RAM), with the SLP_TYP values the DSDT declares (QEMU's: S3 = 1, S5 = 0). The machine is
always in ACPI mode (SCI_EN reads as set; there is no SMI port to switch it). The PM timer
is a free-running 32-bit counter at 3.579545 MHz from the host's monotonic clock.
"""
import threading
import time

PM_BASE = 0x600
# The blocks' offsets from PM_BASE and lengths (QEMU's layout: the timer 32-bit aligned).
PM1_EVT_BLK, PM1_CNT_BLK, PM_TMR_BLK = 0, 4, 8
PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN = 4, 2, 4
PORT_COUNT = PM_TMR_BLK + PM_TMR_LEN
SCI_IRQ = 9

PM1_STS, PM1_EN, PM1_CNT, PM_TMR = 0, 2, PM1_CNT_BLK, PM_TMR_BLK   # register offsets
RTC_STS, WAK_STS = 1 << 10, 1 << 15
RTC_EN = 1 << 10
SCI_EN = 1 << 0
SLP_TYP_SHIFT, SLP_TYP_MASK = 10, 0x7
SLP_EN = 1 << 13
SLP_TYP_S3, SLP_TYP_S5 = 1, 0
PM_TIMER_HZ = 3_579_545


class AcpiPm:
    """on_sleep(state) is called with 3 or 5 when the guest enters S3 or S5."""

    def __init__(self, on_sleep):
        self._on_sleep = on_sleep
        self._lock = threading.Lock()
        self.status = 0
        self.enable = 0
        self.control = SCI_EN
        self._epoch = time.monotonic_ns()

    def timer(self):
        return (time.monotonic_ns() - self._epoch) * PM_TIMER_HZ // 1_000_000_000 & 0xFFFFFFFF

    def woke(self, cause=0):
        """After a wake-up: WAK_STS and the cause's status bit (e.g. RTC_STS) are set."""
        with self._lock:
            self.status |= WAK_STS | cause

    def read(self, offset, size):
        with self._lock:
            registers = self.status | self.enable << 16 | self.control << 32 | self.timer() << 64
        return registers >> (8 * offset) & ((1 << (8 * size)) - 1)

    def write(self, offset, size, value):
        """Byte-addressed writes of 1, 2 or 4 bytes; each register takes the bytes that fall in it."""
        sleep = None
        with self._lock:
            for index in range(size):
                at = offset + index
                byte = value >> (8 * index) & 0xFF
                shift = 8 * (at & 1)
                if at in (PM1_STS, PM1_STS + 1):      # write 1 to clear
                    self.status &= ~(byte << shift)
                elif at in (PM1_EN, PM1_EN + 1):
                    self.enable = self.enable & ~(0xFF << shift) | byte << shift
                elif at in (PM1_CNT, PM1_CNT + 1):
                    control = self.control & ~(0xFF << shift) | byte << shift
                    if control & SLP_EN:
                        sleep = control >> SLP_TYP_SHIFT & SLP_TYP_MASK
                    self.control = control & ~SLP_EN | SCI_EN
        if sleep == SLP_TYP_S5:
            self._on_sleep(5)
        elif sleep == SLP_TYP_S3:
            self._on_sleep(3)
