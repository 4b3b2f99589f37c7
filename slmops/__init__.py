"""slmops: convert, quantize, register, measure and promote small language models."""

__version__ = "0.1.0"
