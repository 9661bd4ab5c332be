"""The CMOS real-time clock (MC146818) at ports 0x70 (index) and 0x71 (data), keeping the
host's time (UTC) plus whatever offset the guest sets, and 114 bytes of CMOS RAM.

Register A's update-in-progress bit is set during the last 244 us before each second
and the 1984 us after it, as the chip's update cycle does. Register C's flags are worked
out when the guest reads it: UF (a second passed), AF (the alarm matched) and PF (the
periodic rate elapsed) since the previous read. The alarm registers also say when a
sleeping machine wakes (next_alarm). The chip's interrupt output (IRQ 8) is not wired.
"""
import calendar
import threading
import time

RTC_INDEX_PORT = 0x70
PORT_COUNT = 2
CENTURY_REGISTER = 0x32
CMOS_SIZE = 128

SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = 0, 1, 2, 3, 4, 5
DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR = 6, 7, 8, 9
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
TIME_REGISTERS = (SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY_REGISTER)

A_UIP = 0x80
A_DEFAULT = 0x26                 # 32.768 kHz time base, 1024 Hz periodic rate
B_SET, B_PIE, B_AIE, B_UIE = 0x80, 0x40, 0x20, 0x10
B_DM_BINARY, B_24H = 0x04, 0x02
C_IRQF, C_PF, C_AF, C_UF = 0x80, 0x40, 0x20, 0x10
D_VRT = 0x80                     # valid RAM and time
ALARM_DONT_CARE = 0xC0           # an alarm byte with both top bits set matches any value
HOUR_PM = 0x80                   # 12-hour mode: the PM flag in the hours register
UIP_BEFORE, UIP_AFTER = 244e-6, 1984e-6
DAY = 86400


def _bcd(value):
    return (value // 10) << 4 | value % 10


def _from_bcd(value):
    return (value >> 4) * 10 + (value & 0x0F)


class CmosRtc:
    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._offset = 0.0                  # guest time - host time, in seconds
        self.cmos = bytearray(CMOS_SIZE)
        self.cmos[REG_A] = A_DEFAULT
        self.cmos[REG_B] = B_24H
        self.cmos[REG_D] = D_VRT
        self.index = 0
        self._frozen = None                 # the guest time while register B's SET bit holds updates
        self._flags_since = self.now()      # when register C was last read

    def now(self):
        """The guest's time, in seconds since the epoch."""
        return self._frozen if self._frozen is not None else self._clock() + self._offset

    # -- encoding ----------------------------------------------------------------

    def _encode(self, value):
        return value if self.cmos[REG_B] & B_DM_BINARY else _bcd(value)

    def _decode(self, value):
        return value if self.cmos[REG_B] & B_DM_BINARY else _from_bcd(value)

    def _encode_hour(self, hour):
        if self.cmos[REG_B] & B_24H:
            return self._encode(hour)
        return self._encode(hour % 12 or 12) | (HOUR_PM if hour >= 12 else 0)

    def _decode_hour(self, value):
        if self.cmos[REG_B] & B_24H:
            return self._decode(value)
        return self._decode(value & ~HOUR_PM) % 12 + (12 if value & HOUR_PM else 0)

    def _time_register(self, register, moment):
        fields = time.gmtime(int(moment))
        year = fields.tm_year
        return {
            SECONDS: lambda: self._encode(fields.tm_sec),
            MINUTES: lambda: self._encode(fields.tm_min),
            HOURS: lambda: self._encode_hour(fields.tm_hour),
            DAY_OF_WEEK: lambda: self._encode((fields.tm_wday + 1) % 7 + 1),   # Sunday = 1
            DAY_OF_MONTH: lambda: self._encode(fields.tm_mday),
            MONTH: lambda: self._encode(fields.tm_mon),
            YEAR: lambda: self._encode(year % 100),
            CENTURY_REGISTER: lambda: self._encode(year // 100),
        }[register]()

    def _set_time_register(self, register, value):
        """The guest sets one field of the date or time: the others keep their current value."""
        moment = self.now()
        fields = time.gmtime(int(moment))
        parts = [fields.tm_year, fields.tm_mon, fields.tm_mday, fields.tm_hour, fields.tm_min, fields.tm_sec]
        decoded = self._decode_hour(value) if register == HOURS else self._decode(value)
        if register == SECONDS:
            parts[5] = decoded
        elif register == MINUTES:
            parts[4] = decoded
        elif register == HOURS:
            parts[3] = decoded
        elif register == DAY_OF_MONTH:
            parts[2] = decoded
        elif register == MONTH:
            parts[1] = decoded
        elif register == YEAR:
            parts[0] = parts[0] // 100 * 100 + decoded % 100
        elif register == CENTURY_REGISTER:
            parts[0] = decoded * 100 + parts[0] % 100
        else:
            return   # the day of the week follows from the date
        try:
            new = calendar.timegm(tuple(parts)) + (moment - int(moment))
        except (OverflowError, ValueError):
            return
        if self._frozen is not None:
            self._frozen = new
        else:
            self._offset = new - self._clock()

    # -- update cycle, alarm, flags --------------------------------------------

    def _update_in_progress(self):
        if self._frozen is not None:
            return False
        fraction = self.now() % 1.0
        return fraction >= 1.0 - UIP_BEFORE or fraction < UIP_AFTER

    def _alarm_matches(self, moment):
        fields = time.gmtime(int(moment))
        for register, actual in ((SECONDS_ALARM, fields.tm_sec), (MINUTES_ALARM, fields.tm_min),
                                 (HOURS_ALARM, fields.tm_hour)):
            alarm = self.cmos[register]
            if alarm & ALARM_DONT_CARE == ALARM_DONT_CARE:
                continue
            wanted = self._decode_hour(alarm) if register == HOURS_ALARM else self._decode(alarm)
            if wanted != actual:
                return False
        return True

    def _first_alarm(self, start, end):
        """The first whole second in (start, end] at which the alarm matches, or None."""
        second = int(start) + 1
        last = min(int(end), int(start) + DAY)   # the alarm repeats at least daily
        while second <= last:
            if self._alarm_matches(second):
                return second
            second += 1
        return None

    def next_alarm(self):
        """The host time at which the alarm next matches, when the alarm interrupt is enabled;
        else None."""
        with self._lock:
            if not self.cmos[REG_B] & B_AIE:
                return None
            start = self.now()
            moment = self._first_alarm(start, start + DAY)
            return None if moment is None else moment - self._offset

    def _periodic_rate(self):
        rate = self.cmos[REG_A] & 0x0F
        if rate == 0:
            return None
        if rate < 3:
            rate += 7
        return 32768 >> (rate - 1)

    def _flags(self):
        """Register C as of now; reading it clears it."""
        start, end = self._flags_since, self.now()
        self._flags_since = end
        flags = 0
        if int(end) > int(start) and not self.cmos[REG_B] & B_SET:
            flags |= C_UF
            if self._first_alarm(start, end) is not None:
                flags |= C_AF
        hertz = self._periodic_rate()
        if hertz and int(end * hertz) > int(start * hertz):
            flags |= C_PF
        if flags & self.cmos[REG_B] & (B_PIE | B_AIE | B_UIE):
            flags |= C_IRQF
        return flags

    # -- guest side --------------------------------------------------------------

    def read(self, offset, size):
        if offset == 0:
            return 0xFF     # the index register is write-only
        with self._lock:
            register = self.index
            if register in TIME_REGISTERS:
                return self._time_register(register, self.now())
            if register == REG_A:
                return self.cmos[REG_A] | (A_UIP if self._update_in_progress() else 0)
            if register == REG_C:
                return self._flags()
            return self.cmos[register]

    def write(self, offset, size, value):
        value &= 0xFF
        with self._lock:
            if offset == 0:
                self.index = value & 0x7F   # bit 7 masks NMIs on a PC
                return
            register = self.index
            if register in TIME_REGISTERS:
                self._set_time_register(register, value)
            elif register == REG_A:
                self.cmos[REG_A] = value & 0x7F
            elif register == REG_B:
                if value & B_SET and self._frozen is None:
                    self._frozen = self.now()
                elif not value & B_SET and self._frozen is not None:
                    self._offset = self._frozen - self._clock()
                    self._frozen = None
                self.cmos[REG_B] = value
            elif register not in (REG_C, REG_D):
                self.cmos[register] = value
