"""Devices on the port and MMIO buses. Devices never touch ioctls."""
