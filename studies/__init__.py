"""Studies: experiments that measure the method (ASQ adaptation) and the hardware (POST vs POT vs
integer MAC arrays), and write their tables and plots into docs/."""
