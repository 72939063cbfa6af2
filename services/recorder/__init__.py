"""recorder: writes md, exec and TCA events to TimescaleDB in batches through binary COPY."""
