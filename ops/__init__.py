"""Operations around the pipeline: the server stack it runs on, and the events that start its sweeps."""
