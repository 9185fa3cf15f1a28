"""The lab: train, evaluate, compare and export models (PyTorch and scikit-learn).

Everything that imports torch or scikit-learn lives here; the reader never imports this package.
"""
