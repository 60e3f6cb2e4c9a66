"""Cell-model tools: lab traces, cell profiles, the equivalent-circuit re-simulator, profile
fitting (`characterize`) and running the firmware's estimator over a trace (`replay`)."""
