"""Models: the embedded tiny VLM, offline checkpoint resolution, encoding, training, evaluation."""
