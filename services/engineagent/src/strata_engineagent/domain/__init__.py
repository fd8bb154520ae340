"""domain of the engine agent."""
