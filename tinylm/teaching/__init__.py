"""Helpers for the lessons: the ``Lesson`` runner (options, steps, plots, checks)
and the toy sequence tasks of the encoder-decoder lessons."""
