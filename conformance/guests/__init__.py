"""Guest test kernels (C + asm) and their build script."""
