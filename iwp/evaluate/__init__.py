"""Accuracy evaluation (python -m iwp.evaluate): the toy benchmark, data-parallel runs, 1 -> N GPU scaling.
Tools built on the library, never imported by it."""
