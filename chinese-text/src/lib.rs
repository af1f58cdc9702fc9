//! The one Chinese text normalisation every SafeGrid crate uses: folding of traditional,
//! variant, full-width and compatibility forms; surnames (compound ones included); pinyin
//! readings; the standard address tree; word segmentation.

pub mod address;
pub mod fold;
pub mod hanzi;
pub mod names;
pub mod segment;
