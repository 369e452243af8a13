"""The rules language at load time: the spec models, the loader, the JSON Schema."""
