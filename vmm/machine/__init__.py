"""The machine: guest memory, the run loop, the PC chipset, exit statistics and reports, and
the Machine that wires them to the devices and runs each vCPU on its own thread."""
from .machine import DEFAULT_MEM, MAX_MEM, Machine, Terminated
from .outcome import Outcome

__all__ = ["DEFAULT_MEM", "MAX_MEM", "Machine", "Outcome", "Terminated"]
