"""x86 instruction-set facts shared by the VMM: decoding of guest instructions."""
