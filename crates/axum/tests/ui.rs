//! What must not compile: `Auto` in a router whose state gives no `Offload` (a forgotten
//! piece is the compiler's error, not a 500 at run time). The expected errors are in
//! `tests/ui/*.stderr`; after a compiler's wording changes, refresh them with
//! `TRYBUILD=overwrite cargo test -p offload-axum --test ui` and read the diff.

#[test]
fn auto_needs_an_offload_in_the_state() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
