//! sited: one mio event loop that reads inputs, drives outputs through device plugins and
//! serves the control socket. DESIGN.md §3 is the flow this crate implements: `hw` turns a
//! kernel edge into an `Edge`, `devices` hands it to the plugin instance that owns the pin
//! (`plugin_host`), the device's events go to the site logic (`runner`, over the pure `site`
//! modules), and its commands go back out; the `hub` returns what its clients send (reports
//! for the `ledger`, readings for the rules). `event_loop` is where those steps are wired
//! together, with one timer heap (`timers`); every connection is a `conn_io::LineConn`.

pub mod cli;
pub mod config;
pub mod conn_io;
pub mod control;
pub mod devices;
pub mod event_loop;
pub mod hub;
pub mod hw;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod logging;
pub mod notify;
pub mod plugin_host;
pub mod rate_limit;
pub mod runner;
pub mod site;
pub mod store;
pub mod timers;
pub mod tls;
