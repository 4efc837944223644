"""Studies over the generator: POST vs POT vs integer MAC arrays, their tables and plots."""
