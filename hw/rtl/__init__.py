"""Amaranth components of the accelerator (RTL)."""
