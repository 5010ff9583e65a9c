//! Series colours: the Okabe-Ito palette, told apart also by readers with colour-blindness,
//! in an order whose first colours differ most. Yellow comes last: it is faint on white.

use plotters::style::RGBColor;

/// One colour per series, never repeated within a figure.
pub const SERIES: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(240, 228, 66),  // yellow
];

/// Text and axes that are not data.
pub const INK: RGBColor = RGBColor(40, 40, 40);

/// Context drawn behind the data (other series, missing values).
pub const FAINT: RGBColor = RGBColor(190, 190, 190);
