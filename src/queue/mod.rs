//! The job queue layer: one trait, SQLite and Redis backends (issue 4).
