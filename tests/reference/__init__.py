"""Independent NumPy float64 reference implementations used as test oracles."""
