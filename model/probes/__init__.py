"""Looking inside: distributions, losses, activations and the logit lens; in-context copying probes; switching parts off and patching."""
