"""Where compiled models run: device profiles (profiles.py), the transports that reach a device (transport.py: this
host, SSH; qemu.py: emulated arm64), the runner a device runs (runner.py), and validate/bench on a device (remote.py)."""
