//! Terminal rendering shared by the front ends: colours, the stats line, progress bars and
//! spinners, tables, and the `say!` macro for results on stdout. Front ends never import each
//! other; what two of them show alike lives here, once.

mod progress;
mod say;
mod stats;
mod style;
pub mod table;
pub mod text;

pub use progress::{load_bar, spinner};
pub(crate) use say::say;
pub use stats::stats_line;
pub use style::Style;
