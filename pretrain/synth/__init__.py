"""Procedural talking-head corpus: articulation, speech, face model, renderer, clips (issue 3)."""
