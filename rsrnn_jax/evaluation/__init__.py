"""Clean evaluation: accuracy (or mAP/F1 for multi-label data) at every glimpse step, fixation figures."""
