"""mmunlearn: reproducible benchmarking of unlearning in vision-language models."""

__version__ = "0.1.0"
