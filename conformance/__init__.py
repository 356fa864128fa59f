"""The conformance suite: guest test kernels and the machinery that builds and boots them."""
