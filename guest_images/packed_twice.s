/* The packed sample (packed_long.s) with the payload entered twice: two
 * events, each tracing the same 264 instructions. */
        .set ENTRIES, 2
        .include "packed_long.s"
