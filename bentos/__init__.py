"""bentos: the Scorer and Router BentoML services, prediction log and label feedback."""
