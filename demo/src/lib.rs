//! The synthetic street: six departments' records about one made-up street (`generate`), and
//! corrupted department copies of its residents with their truth, to measure linkage
//! (`synthetic`). Used by `safegrid demo`, the benchmarks and the tests; never by product
//! code.

pub mod generate;
pub mod synthetic;

/// The demo street's user dictionary for word segmentation (its street and community
/// names), written beside the demo's data and named by its configuration.
pub const USER_DICTIONARY: &str = include_str!("../user-dictionary.txt");
