"""Runnable examples on synthetic data; shipped so that `flordb demo` can use them."""
