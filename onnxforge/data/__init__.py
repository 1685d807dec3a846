"""Model inputs: the tensor-spec grammar (specs.py), inputs generated where no data is
given (generate.py), and samples loaded from files (samples.py)."""
