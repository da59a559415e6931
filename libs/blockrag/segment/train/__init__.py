"""Training-side additions of the segmenter (data builders for prose, word-unit scoring); the
runtime stays in blockrag.segment. The older training modules (data, sources, training) move
here later."""
