"""asq-hw: ASQ/POST quantization-aware training turned into verified hardware."""

__version__ = "0.1.0"
