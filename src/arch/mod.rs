//! arch (in progress).
