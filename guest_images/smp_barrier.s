/* smp.s with a spin barrier as the shared code (see smp.s). */
        .set BARRIER, 1
        .include "smp.s"
