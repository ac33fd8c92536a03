package service

// ApplyMemoryLimit exposes applyMemoryLimit to the package's external tests.
var ApplyMemoryLimit = applyMemoryLimit
