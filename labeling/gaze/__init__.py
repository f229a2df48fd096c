"""Gaze label generation: heatmaps of eye-gaze recordings (issue 4)."""

from labeling.gaze.heatmaps import heatmap

__all__ = ["heatmap"]
