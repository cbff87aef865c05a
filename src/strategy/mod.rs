//! The strategies: one file each, one enum over them.
