"""What is measured and watched: trial meters, GPU telemetry, drift monitors."""
