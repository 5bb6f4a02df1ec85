//! Shared memory between the processes of a pool (memfd / MAP_SHARED). Coming with the shared-memory issue.
