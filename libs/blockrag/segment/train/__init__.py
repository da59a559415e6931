"""The training side of the segmenter: corpus sources, data building (structure, prose, dialogue),
training the boundary head, baselines, metrics and evaluation. The runtime (candidates, backbone,
boundary model, learned and paragraph segmenters, spans, similarity features) stays in
blockrag.segment and never imports from here."""
