"""One module per console view; each is a widget that redraws from the Fleet."""
