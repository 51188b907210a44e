"""Re-export of the calibration profile loader (the bench runner imports it from here)."""

from llmplan.runtime.calibration import CalibrationProfile, load_calibration, load_profile

__all__ = ["CalibrationProfile", "load_calibration", "load_profile"]
