"""Objects from semantic models: the instance training target, decoding, scores and measurements."""
