"""One router per resource of the TuneScout API."""
