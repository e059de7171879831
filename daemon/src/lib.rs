//! sited: one mio event loop that reads inputs, drives outputs through device plugins and
//! serves the control socket (DESIGN.md §3 is the flow this crate implements).

pub mod hw;
