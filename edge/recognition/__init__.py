"""The recognition path, frame by frame: capture -> detect -> track -> embed -> match -> decide, with
liveness and template refresh. Knows nothing of meals, the store or delivery."""
