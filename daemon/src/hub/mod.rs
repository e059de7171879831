//! The hub (DESIGN.md §8): a TCP server that site modules and IoT devices connect to
//! ([`server`]), its line protocol ([`protocol`]), the staff counter it keeps ([`staff`]), and
//! the client side that site modules use to reach a hub, this one or another node's ([`link`]),
//! and the sensor streams: their parsing and cycle bookkeeping ([`stream`]) and the UDP
//! listener that serves them ([`udp`]); and seed 001's server record, `[hub] device-log`
//! ([`device_log`]).

pub mod device_log;
pub mod link;
pub mod protocol;
pub mod sequence;
pub mod server;
pub mod staff;
pub mod stream;
pub mod udp;
