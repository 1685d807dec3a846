"""What judges a model: compare (pure, over arrays), parity (two runners on the same
inputs), localize (the first node where they part), benchmark (interleaved timing)
and gates (the release's pass/fail/inconclusive on those figures)."""
