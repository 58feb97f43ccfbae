"""Files: Arrow schemas, atomic writes, traces (read, validate, write), the event log, importers."""
