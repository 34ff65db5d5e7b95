"""Volume I/O. Arrays are (z, y, x); spacing is (z, y, x) in nm."""
