//! The gateway router.
