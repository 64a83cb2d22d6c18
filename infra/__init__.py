"""Settings, storage, messaging and the bootstrap that wires them."""
