"""In-memory fakes of outside dependencies, for unit tests that need no AWS."""
