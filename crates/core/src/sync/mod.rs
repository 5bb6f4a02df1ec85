//! Cross-process synchronisation primitives. Coming with the shared-memory issue.
