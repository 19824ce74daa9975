"""Photo intake, used at submit and by workers: formats, privacy scrubbing, colour, capture."""
