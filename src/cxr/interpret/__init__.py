"""Interpretation: Grad-CAM heatmaps (``gradcam``), their scores against the lesion boxes
(``localization``: pointing game, IoU) and the overlay drawings (``overlays``)."""
