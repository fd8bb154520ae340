"""adapters of the engine agent."""
