//! The MCP server (agent operating surface) maps MCP tools onto engine calls. Nothing is
//! exposed yet: the tools, transports and their tests arrive with the MCP issue, so this
//! crate holds only its place in the dependency graph (it may depend on the engine only).
