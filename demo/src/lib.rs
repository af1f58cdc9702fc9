//! The synthetic street: six departments' records about one made-up street (`generate`), and
//! corrupted department copies of its residents with their truth, to measure linkage
//! (`synthetic`). Used by `safegrid demo`, the benchmarks and the tests; never by product
//! code.

pub mod generate;
pub mod synthetic;
