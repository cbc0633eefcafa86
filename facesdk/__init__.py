"""facesdk: one face-recognition pipeline on many inference engines."""
__version__ = "0.1.0"
