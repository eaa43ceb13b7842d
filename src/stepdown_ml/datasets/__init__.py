"""Build-time data: the synthetic generator and the anonymizer for real records."""
