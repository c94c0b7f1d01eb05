"""Built-in detectors (see `builtin`) and path sets (see `pathsets`); each is registered in entry
point group `brokerguard.detectors`."""
