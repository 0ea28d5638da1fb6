"""The methods, one folder each. `registry.get(name)` maps a method name to its class."""
