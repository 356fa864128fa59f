"""The reference hypervisor: an executable model of Xen 3.0 x86_32 (non-PAE)."""
