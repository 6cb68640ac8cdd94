//! directions file (in progress).
