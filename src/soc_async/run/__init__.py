"""One run of the pipeline: its orchestration (app), the stages wired together (pipeline),
the model gateway the stages call, the run's counters and live view (progress), and the
one-GPU smoke run."""
