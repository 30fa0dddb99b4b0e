//! Text data sets of the language tasks, each read from the layout it ships in.

pub mod install_guide;
