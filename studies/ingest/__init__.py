"""Reading source files into typed, de-identifiable units. Nothing in this package touches the database."""
