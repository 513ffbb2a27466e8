"""What pages show, computed once for every page that shows it: the stepper, the loss view, switching parts off, the patching grid, the sentences about copying, the figures, CSV files."""
