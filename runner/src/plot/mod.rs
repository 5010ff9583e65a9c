//! SVG figures meant to be read at a glance: grouped bar charts ([`bars`]) for comparisons
//! such as `pagewire tunnel demo --compare` and the simulator's combinations, with the
//! colours ([`palette`]), number formats ([`format`]) and text sizes ([`text`]) they share
//! with the simulator's line plots.

pub mod bars;
pub mod format;
pub mod palette;
pub mod text;

#[cfg(test)]
pub(crate) mod svg_check;

pub use bars::{BarChart, Group};
pub use format::Unit;
