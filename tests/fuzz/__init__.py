"""Random byte strings as guests: every run must end in a classified outcome."""
