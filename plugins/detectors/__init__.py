"""Built-in detectors (see `builtin`); each is registered in entry point group `brokerguard.detectors`."""
