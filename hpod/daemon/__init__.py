"""The long-running service and everything that schedules and runs trials."""
