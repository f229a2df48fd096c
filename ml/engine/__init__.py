"""The only package that imports torch and MONAI; imported by GPU/CPU ML workers, never by the web tier."""
