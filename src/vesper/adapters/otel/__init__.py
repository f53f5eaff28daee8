"""OpenTelemetry: the process's metrics (`metrics`) and its tracer provider
(`tracing`), configured here; the rest of vesper records through the OpenTelemetry
API and the ports."""
