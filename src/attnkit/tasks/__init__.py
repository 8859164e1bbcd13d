"""Tasks: what the shared trainer trains (translation, image classification)."""
