"""Energy-aware serving: GPU power/clock model, measurement, and the GreenServe policies."""
