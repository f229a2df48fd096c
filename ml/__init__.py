"""Model pre-annotation: model registry, generators that need no weights, inference and training jobs on
the ``gpu`` queue, active learning. Only ``ml.engine`` imports torch or MONAI."""
