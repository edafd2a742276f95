__version__ = "0.1.0"  # follows the daemon's (src/version.ts)
