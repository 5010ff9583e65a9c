//! Text sizes in SVG pixels, and the width the layout reserves for a label.

use plotters::style::{FontDesc, FontFamily, IntoFont};

/// plotters' SVG backend writes `font-size` as the requested size / 1.24; this undoes it, so
/// that the sizes here are the sizes in the file.
const PLOTTERS_SVG_SCALE: f64 = 1.24;

/// A sans-serif font of `px` pixels in the SVG.
pub fn font(px: f64) -> FontDesc<'static> {
    (FontFamily::SansSerif, px * PLOTTERS_SVG_SCALE).into_font()
}

/// Width reserved for `text` at `px` pixels: 0.65 em a character, a little more than the
/// widest digits of common sans-serif fonts (DejaVu Sans: 0.64 em), so that estimates err
/// towards room.
pub fn width(text: &str, px: f64) -> f64 {
    text.chars().count() as f64 * 0.65 * px
}
