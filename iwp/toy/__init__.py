"""The embedded toy model: a small LLaVA trained on generated scenes (scenes, build, train, load)."""
