//! The project's single integration test binary: one module per part.

mod load;
