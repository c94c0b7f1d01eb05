"""Built-in audit sinks, registered under the entry point group brokerguard.sinks."""
