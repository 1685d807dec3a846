"""The convert step: options.py (one options class per framework), torch.py and
sklearn.py (export or convert, then check against the source through checks/), step.py
(one StepDef per framework). Loading and running each framework: backends/<framework>/."""
