/* smp.s where one CPU writes a payload and another runs it (see smp.s). */
        .set UNPACK, 1
        .include "smp.s"
