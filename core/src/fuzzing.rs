//! What every fuzz target (proptest, on stable Rust) shares: `HAKIRI_FUZZ_CASES` cases
//! (default 256, so a CI run of a target is seconds; `scripts/fuzz` runs 100000), no
//! regression files (a crash found becomes a named regression test instead). The seed is
//! proptest's: random, or `PROPTEST_RNG_SEED` (scripts/test fixes it).

use proptest::test_runner::Config;

pub fn config() -> Config {
    let cases = std::env::var("HAKIRI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    Config {
        cases: cases.unwrap_or(256),
        failure_persistence: None,
        ..Config::default()
    }
}
