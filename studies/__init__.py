"""Studies: experiments that measure the method and the hardware."""
