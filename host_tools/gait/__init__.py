"""Gait from traces: trace files (tracefile), the detector engines (engine), PhysioNet
readers (physionet), accuracy evaluation (evaluate, crossval, faultbench, accuracy_doc)
and the walk report (report)."""
