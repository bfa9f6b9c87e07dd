"""Where compiled models run: today the local host; ARM boards (SSH, emulated arm64) come as device profiles."""
