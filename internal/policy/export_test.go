package policy

// Capabilities exposes the sandbox's capability set to the external tests.
var Capabilities = capabilities
