"""digitlab: recognize handwritten digits, and train and compare the models that do it."""

__version__ = "0.1.0"
