"""handlers of the engine agent."""
