"""Dataset: fictitious private profiles, rendered documents, multi-view QA, splits, validation."""
