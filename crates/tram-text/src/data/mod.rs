//! Text data sets of the language tasks, each read from the layout it ships in.

pub mod brown;
pub mod install_guide;
pub mod m2d2;
pub mod nli;
