"""xenspec: the Xen paravirtual x86-32 interface as an executable, machine-checked specification."""

__version__ = "0.1.0"
