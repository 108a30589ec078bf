"""Plotting only: the figures of training (:mod:`.training`) and of evaluation (:mod:`.evaluation`)."""
