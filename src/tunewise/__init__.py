"""tunewise: should we fine-tune a language model for this task, or not? Measured on your data."""

__version__ = "0.3.0"
