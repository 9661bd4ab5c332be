"""A userspace VMM for KVM with V2E-style watched-page analysis."""
